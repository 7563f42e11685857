"""Hand-made histories whose verdict is known by reasoning, not by running the checker."""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable
from dataclasses import dataclass

import pytest

from jepsen_like.checker.linearizability import (
    UNKNOWN,
    Operation,
    UnknownT,
    Verdict,
    check,
    report,
)
from jepsen_like.checker.models import CasRegister, KvFn, KvInput, KvOutput, KvStore

from .conftest import Hist

REG = CasRegister()


def verdict(h: Hist) -> Verdict:
    return check(REG, h.ops).verdict


def test_empty_history_is_linearizable() -> None:
    assert check(REG, []).verdict is Verdict.LINEARIZABLE


def test_sequential_write_then_read_of_it() -> None:
    h = Hist()
    h.read(None, 0, 1)
    h.write(1, 2, 3)
    h.read(1, 4, 5)
    assert verdict(h) is Verdict.LINEARIZABLE


def test_stale_read_after_acknowledged_write_is_caught_with_pointer() -> None:
    h = Hist()
    w1 = h.write(1, 0, 1)
    w2 = h.write(2, 2, 3)
    r = h.read(1, 4, 5)
    result = check(REG, h.ops)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.anomaly is not None
    assert result.anomaly.longest_prefix == (w1, w2)
    assert result.anomaly.blocking_op == r
    assert result.anomaly.state == "2"
    text = report(REG, h.ops, result)
    assert text.startswith("not linearizable")
    assert f"op {r} " in text and "read() -> 1" in text


def test_read_concurrent_with_write_may_see_old_or_new() -> None:
    for seen in (None, 7):
        h = Hist()
        h.write(7, 0, 10)
        h.read(seen, 1, 2)
        assert verdict(h) is Verdict.LINEARIZABLE, seen


def test_reads_must_agree_on_one_order_of_concurrent_writes() -> None:
    # Two concurrent writes; one reader sees 1 then 2, another (later) sees 2 then 1.
    h = Hist()
    h.write(1, 0, 100)
    h.write(2, 0, 100)
    h.read(1, 10, 11)
    h.read(2, 12, 13)
    h.read(1, 14, 15)
    assert verdict(h) is Verdict.NOT_LINEARIZABLE


def test_intervals_are_closed_touching_operations_are_concurrent() -> None:
    h = Hist()
    h.write(1, 0, 5)
    h.read(None, 5, 6)  # starts at the instant the write returns: may precede it
    assert verdict(h) is Verdict.LINEARIZABLE
    h2 = Hist()
    h2.write(1, 0, 5)
    h2.read(None, 6, 7)
    assert verdict(h2) is Verdict.NOT_LINEARIZABLE


def test_unknown_write_may_take_effect_late() -> None:
    h = Hist()
    h.write(1, 0, 1)
    h.write(2, 2)  # timed out: never returns
    h.read(1, 10, 11)
    h.read(2, 20, 21)
    h.read(2, 30, 31)
    assert verdict(h) is Verdict.LINEARIZABLE


def test_unknown_write_may_never_take_effect() -> None:
    h = Hist()
    h.write(1, 0, 1)
    h.write(2, 2)
    h.read(1, 10, 11)
    h.read(1, 20, 21)
    assert verdict(h) is Verdict.LINEARIZABLE


def test_unknown_write_cannot_take_effect_before_its_invocation() -> None:
    h = Hist()
    h.read(2, 0, 1)
    h.write(2, 5)
    assert verdict(h) is Verdict.NOT_LINEARIZABLE


def test_unknown_write_takes_effect_once_not_twice() -> None:
    h = Hist()
    h.write(2, 0)
    h.read(2, 10, 11)
    h.write(3, 12, 13)
    h.read(2, 14, 15)  # the timed-out write already happened; it cannot happen again
    assert verdict(h) is Verdict.NOT_LINEARIZABLE


def test_cas_success_and_definite_failure() -> None:
    ok = Hist()
    ok.write(1, 0, 1)
    ok.cas(1, 2, True, 2, 3)
    ok.cas(1, 3, False, 4, 5)
    ok.read(2, 6, 7)
    assert verdict(ok) is Verdict.LINEARIZABLE

    bad = Hist()
    bad.write(1, 0, 1)
    bad.cas(1, 2, False, 2, 3)  # the register held 1: a failing CAS is impossible
    assert verdict(bad) is Verdict.NOT_LINEARIZABLE


def test_unknown_cas_applies_only_when_expected_matches() -> None:
    h = Hist()
    h.write(1, 0, 1)
    h.cas(5, 9, True, 2)  # unknown; 5 is never held, so 9 can never appear
    h.read(9, 10, 11)
    assert verdict(h) is Verdict.NOT_LINEARIZABLE
    h2 = Hist()
    h2.write(1, 0, 1)
    h2.cas(1, 9, True, 2)
    h2.read(9, 10, 11)
    assert verdict(h2) is Verdict.LINEARIZABLE


def test_kv_partitions_are_checked_independently_and_the_bad_key_is_named() -> None:
    def op(
        i: int, fn: KvFn, key: str, value: str, out: KvOutput, call: float, ret: float
    ) -> Operation[KvInput, KvOutput]:
        return Operation(i, i, KvInput(fn, key, value), out, call, ret)

    ops = [
        op(0, KvFn.PUT, "a", "x", None, 0, 1),
        op(1, KvFn.APPEND, "a", "y", None, 2, 3),
        op(2, KvFn.GET, "a", "", "xy", 4, 5),
        op(3, KvFn.APPEND, "b", "p", None, 6, 7),
        op(4, KvFn.GET, "b", "", "", 8, 9),  # the append to b already returned
        op(5, KvFn.GET, "c", "", "", 0, 9),
    ]
    result = check(KvStore(), ops)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.anomaly is not None
    assert result.anomaly.partition == "b"
    assert result.anomaly.blocking_op == 4
    assert result.partitions == 3
    good = [*ops[:4], op(4, KvFn.GET, "b", "", "p", 8, 9)]
    assert check(KvStore(), good).verdict is Verdict.LINEARIZABLE


def _hard_history(n: int) -> Hist:
    """n concurrent writes of distinct values, then a read of a value none wrote.

    The search must try every subset of the writes before giving up: 2**n cached states.
    """
    h = Hist()
    for v in range(n):
        h.write(v, 0, 10)
    h.read("never", 20, 21)
    return h


def test_hard_history_is_refuted_without_a_budget() -> None:
    result = check(REG, _hard_history(8).ops)
    assert result.verdict is Verdict.NOT_LINEARIZABLE


def test_time_budget_gives_unknown_instead_of_hanging() -> None:
    ticks = itertools.count()
    result = check(REG, _hard_history(18).ops, timeout=3, clock=lambda: float(next(ticks)))
    assert result.verdict is Verdict.UNKNOWN
    assert result.anomaly is None
    assert result.partitions_checked == 0
    assert report(REG, _hard_history(1).ops, result).startswith("unknown")


def test_operation_invariants() -> None:
    with pytest.raises(ValueError):
        Operation(0, 0, None, None, call=5, ret=4)
    with pytest.raises(ValueError):
        Operation(0, 0, None, UNKNOWN, call=5, ret=6)
    with pytest.raises(ValueError):
        Operation(0, 0, None, None, call=5, ret=math.inf)
    assert Operation(0, 0, None, UNKNOWN, call=5).unknown


@dataclass(frozen=True, slots=True)
class Rev:
    """An etcd-style register state: value plus the revision of its last write."""

    value: int | None
    revision: int


class RevisionRegister:
    """A model outside the package: writes return the new revision; reads the pair."""

    name = "rev-register"

    def init(self) -> Rev:
        return Rev(None, 0)

    def step(self, state: Rev, input: int | None, output: Hashable | UnknownT) -> tuple[bool, Rev]:
        if input is None:  # read
            return output is UNKNOWN or output == (state.value, state.revision), state
        new = Rev(input, state.revision + 1)
        return output is UNKNOWN or output == new.revision, new

    def partition_key(self, input: int | None) -> Hashable:
        return None

    def describe_operation(self, input: int | None, output: Hashable | UnknownT) -> str:
        return f"{'read' if input is None else f'write({input})'} -> {output}"

    def describe_state(self, state: Rev) -> str:
        return f"{state.value}@{state.revision}"


def test_a_model_defined_elsewhere_plugs_in() -> None:
    m = RevisionRegister()
    ops: list[Operation[int | None, Hashable]] = [
        Operation(0, 0, 5, 2, 0, 10),  # write(5) made revision 2: it came second
        Operation(1, 1, 6, 1, 0, 10),
        Operation(2, 2, None, (5, 2), 11, 12),
    ]
    assert check(m, ops).verdict is Verdict.LINEARIZABLE
    wrong: list[Operation[int | None, Hashable]] = [*ops[:2], Operation(2, 2, None, (6, 2), 11, 12)]
    result = check(m, wrong)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.anomaly is not None and result.anomaly.blocking_op == 2
