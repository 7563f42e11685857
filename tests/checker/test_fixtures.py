"""Every fixture history (recorded by Jepsen against etcd) gets its known verdict."""

from __future__ import annotations

import csv

import pytest

from jepsen_like.checker.formats import parse_edn, parse_jepsen_log
from jepsen_like.checker.linearizability import Operation, Verdict, check
from jepsen_like.checker.models import CasRegister, KvInput, KvOutput, KvStore

from .conftest import FIXTURES

if not FIXTURES.is_dir():
    pytest.skip(f"fixtures absent: {FIXTURES}", allow_module_level=True)

ETCD = FIXTURES / "jepsen-etcd"
KV = FIXTURES / "kv"


def _expected() -> dict[str, bool]:
    with (ETCD / "expected.tsv").open(newline="") as f:
        return {
            row["file"]: row["linearizable"] == "true"
            for row in csv.DictReader(f, dialect="excel-tab")
        }


EXPECTED = _expected()


def test_every_log_has_a_verdict_and_every_verdict_a_log() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in ETCD.glob("*.log"))
    assert set(EXPECTED.values()) == {True, False}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_jepsen_etcd_log(name: str) -> None:
    path = ETCD / name
    with path.open() as f:
        ops = parse_jepsen_log(f)
    result = check(CasRegister(), ops)
    want = Verdict.LINEARIZABLE if EXPECTED[name] else Verdict.NOT_LINEARIZABLE
    assert result.verdict is want
    if result.anomaly is not None:
        # The pointer names a real invocation line of this file, outside the prefix.
        lines = path.read_text().splitlines()
        blocking = result.anomaly.blocking_op
        assert ":invoke" in lines[blocking - 1]
        assert blocking not in result.anomaly.longest_prefix


KV_FILES = sorted(p.name for p in KV.glob("*.txt"))


def test_kv_fixtures_present() -> None:
    assert {n.rsplit("-", 1)[1] for n in KV_FILES} == {"ok.txt", "bad.txt"}


@pytest.mark.parametrize("name", KV_FILES)
def test_kv_history(name: str) -> None:
    with (KV / name).open() as f:
        ops = parse_edn(f)
    assert all(isinstance(op.input, KvInput) for op in ops)
    kv_ops: list[Operation[KvInput, KvOutput]] = ops  # type: ignore[assignment]
    result = check(KvStore(), kv_ops)
    want = Verdict.LINEARIZABLE if name.endswith("-ok.txt") else Verdict.NOT_LINEARIZABLE
    assert result.verdict is want
    assert result.partitions > 1
