"""What ``import raftkv`` offers: ``__all__``, ``raftkv.errors`` and ``raftkv.api`` at once, the
client names on first use, and no helper names.  Each check runs in a fresh interpreter, since
this test process has long since imported the client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import raftkv

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = {"Client", "SyncClient", "WatchFilter", "WatchResponse", "Watcher", "api", "errors"}
HELPERS = ("Any", "TYPE_CHECKING", "importlib", "annotations")


def fresh(code: str) -> object:
    """Run ``code`` in a new interpreter after ``import raftkv``; it prints one JSON value."""
    out = subprocess.run(
        [sys.executable, "-c", f"import json, sys\nimport raftkv\n{code}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)


def test_all_names_the_public_surface() -> None:
    assert set(raftkv.__all__) == PUBLIC
    assert len(raftkv.__all__) == len(PUBLIC)
    for name in raftkv.__all__:
        assert getattr(raftkv, name) is not None


def test_errors_and_api_are_attributes_right_after_import() -> None:
    got = fresh(
        "print(json.dumps([raftkv.errors.Timeout.__name__, raftkv.api.PutRequest.__name__,"
        " 'raftkv.client' in sys.modules]))"
    )
    assert got == ["Timeout", "PutRequest", False]


def test_client_names_load_on_first_use() -> None:
    got = fresh(
        "before = 'raftkv.client' in sys.modules\n"
        "name = raftkv.Client.__name__\n"
        "print(json.dumps([before, name, 'raftkv.client' in sys.modules]))"
    )
    assert got == [False, "Client", True]


def test_dir_shows_no_helpers() -> None:
    names = fresh("print(json.dumps(dir(raftkv)))")
    assert isinstance(names, list)
    assert set(names) == PUBLIC
    assert set(dir(raftkv)) >= PUBLIC
    for helper in HELPERS:
        assert helper not in dir(raftkv)
        assert not hasattr(raftkv, helper), helper
    assert not [n for n in dir(raftkv) if n.startswith("_")]


def test_dir_lists_subpackages_once_imported() -> None:
    names = fresh("import raftkv.raft\nprint(json.dumps(dir(raftkv)))")
    assert isinstance(names, list)
    assert set(names) == PUBLIC | {"raft"}


def test_star_import_gives_exactly_all() -> None:
    names = fresh(
        "ns: dict[str, object] = {}\n"
        "exec('from raftkv import *', ns)\n"
        "print(json.dumps(sorted(n for n in ns if n != '__builtins__')))"
    )
    assert names == sorted(PUBLIC)


def test_unknown_name_is_an_attribute_error() -> None:
    got = fresh("try:\n    raftkv.Nope\nexcept AttributeError as e:\n    print(json.dumps(str(e)))")
    assert got == "module 'raftkv' has no attribute 'Nope'"


def test_timeout_is_also_a_builtin_timeout_error() -> None:
    from raftkv.protocol import codec

    err = raftkv.errors.Timeout("deadline passed")
    assert isinstance(err, TimeoutError) and isinstance(err, raftkv.errors.TransientError)
    back = codec.decode_error(codec.encode_error(err))
    assert type(back) is raftkv.errors.Timeout and str(back) == "deadline passed"
    try:
        raise err
    except TimeoutError as caught:  # the asyncio idiom catches raftkv's timeouts too
        assert caught is err


def test_compare_accepts_str_like_the_op_helpers() -> None:
    from raftkv.api import Compare, CompareResult, CompareTarget
    from raftkv.protocol import codec

    c = Compare("k", CompareTarget.VALUE, CompareResult.EQUAL, "v", range_end="l")
    assert (c.key, c.value, c.range_end) == (b"k", b"v", b"l")
    assert c == Compare(b"k", CompareTarget.VALUE, CompareResult.EQUAL, b"v", b"l")
    assert Compare("k", CompareTarget.VERSION, CompareResult.GREATER, 3).value == 3
    assert codec.from_plain(Compare, codec.to_plain(c)) == c
    # from the wire, a str where bytes belong is still refused
    plain = codec.to_plain(c)
    plain[1] = "k"
    try:
        codec.from_plain(Compare, plain)
    except raftkv.errors.RemoteProtocolError:
        pass
    else:
        raise AssertionError("a str key from the wire was accepted")
