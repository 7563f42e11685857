"""The ``Error: ...`` line speaks of keys and addresses, not of Python types and reprs."""

from __future__ import annotations

from click.testing import CliRunner

from raftkv.errors import DuplicateKey, LockLost, Timeout
from raftkv_cli.errors import describe
from raftkv_cli.main import cli
from tests.cli.conftest import ThreadedFake


def test_keys_are_text_and_type_names_are_gone() -> None:
    assert describe(Timeout(f"lock {b'mylock/'!r} not acquired within 2s")) == (
        'lock "mylock/" not acquired within 2s'
    )
    assert describe(DuplicateKey(f"duplicate key given in txn request: {b'k'!r}")) == (
        'duplicate key given in txn request: "k"'
    )
    odd = b"a\x1bb\xff"
    assert describe(DuplicateKey(f"x {odd!r}")) == 'x "a\\x1bb\\xff"'
    nested = Timeout(
        "range did not complete within 1s (last error: ConnectionLost: cannot connect to "
        "127.0.0.1:1: Connect call failed ('127.0.0.1', 1))"
    )
    assert describe(nested) == (
        "range did not complete within 1s (last error: cannot connect to 127.0.0.1:1: "
        "Connect call failed 127.0.0.1:1)"
    )
    assert describe(LockLost()) == "lock lost"


def test_txn_duplicate_key_error_line(fake: ThreadedFake) -> None:
    r = CliRunner().invoke(
        cli, ["--endpoints", fake.endpoints, "txn"], input='\nput k "1"\nput k "2"\n\n'
    )
    assert r.exit_code == 1
    assert r.stderr == 'Error: duplicate key given in txn request: "k"\n'
