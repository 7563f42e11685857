"""Properties: histories produced by a real sequential execution are linearizable, whatever
concurrency windows are drawn around each operation; a corrupted read is always caught."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from jepsen_like.checker.linearizability import UNKNOWN, Operation, Verdict, check
from jepsen_like.checker.models import (
    CasRegister,
    KvFn,
    KvInput,
    KvOutput,
    KvStore,
    RegisterFn,
    RegisterInput,
    RegisterOutput,
)

KEYS = ("a", "b", "c")
VALUES = st.integers(0, 3)

register_inputs = st.one_of(
    st.just(RegisterInput(RegisterFn.READ)),
    st.builds(RegisterInput, st.just(RegisterFn.WRITE), VALUES),
    st.builds(RegisterInput, st.just(RegisterFn.CAS), VALUES, st.none() | VALUES),
)
kv_inputs = st.one_of(
    st.builds(KvInput, st.just(KvFn.GET), st.sampled_from(KEYS)),
    st.builds(KvInput, st.sampled_from([KvFn.PUT, KvFn.APPEND]), st.sampled_from(KEYS),
              st.sampled_from(["x", "y", "zz"])),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Plan:
    """How one operation appears in the history: its window and whether it was observed."""

    before: int  # call = point - before
    after: int  # ret = point + after
    unknown: bool  # outcome not observed (ret = inf)
    took_effect: bool  # for an unknown op: did it happen at its point, or never?


plans = st.builds(
    Plan,
    st.integers(0, 30),
    st.integers(0, 30),
    st.integers(0, 4).map(lambda x: x == 0),  # about one op in five is unobserved
    st.booleans(),
)


def _run_register(inputs: list[RegisterInput], effective: list[bool]) -> list[RegisterOutput]:
    """Execute sequentially; ops not taking effect are skipped (their output is irrelevant)."""
    state: RegisterOutput = None
    outs: list[RegisterOutput] = []
    for inp, eff in zip(inputs, effective, strict=True):
        ok = state == inp.expected
        if inp.fn is RegisterFn.READ:
            outs.append(state)
        elif inp.fn is RegisterFn.WRITE:
            outs.append(None)
            state = inp.value if eff else state
        else:
            outs.append(ok)
            state = inp.value if ok and eff else state
    return outs


def _run_kv(inputs: list[KvInput], effective: list[bool]) -> list[KvOutput]:
    store: dict[str, str] = {}
    outs: list[KvOutput] = []
    for inp, eff in zip(inputs, effective, strict=True):
        cur = store.get(inp.key, "")
        if inp.fn is KvFn.GET:
            outs.append(cur)
            continue
        outs.append(None)
        if eff:
            store[inp.key] = inp.value if inp.fn is KvFn.PUT else cur + inp.value
    return outs


I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741


def _history(
    inputs: list[I], outputs: list[O], plan: list[Plan], spacing: int
) -> list[Operation[I, O]]:
    """Place op i's linearization point at i*spacing and draw its window around it."""
    ops: list[Operation[I, O]] = []
    for i, (inp, out, p) in enumerate(zip(inputs, outputs, plan, strict=True)):
        point = i * spacing
        if p.unknown:
            ops.append(Operation(i, i, inp, UNKNOWN, point - p.before, math.inf))
        else:
            ops.append(Operation(i, i, inp, out, point - p.before, point + p.after))
    return ops


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(register_inputs, plans), min_size=1, max_size=14), st.integers(1, 10))
def test_concurrent_register_histories_from_a_real_run_are_linearizable(
    spec: list[tuple[RegisterInput, Plan]], spacing: int
) -> None:
    inputs = [i for i, _ in spec]
    plan = [p for _, p in spec]
    effective = [not p.unknown or p.took_effect for p in plan]
    ops = _history(inputs, _run_register(inputs, effective), plan, spacing)
    assert check(CasRegister(), ops).verdict is Verdict.LINEARIZABLE


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(kv_inputs, plans), min_size=1, max_size=20), st.integers(1, 10))
def test_concurrent_kv_histories_from_a_real_run_are_linearizable(
    spec: list[tuple[KvInput, Plan]], spacing: int
) -> None:
    inputs = [i for i, _ in spec]
    plan = [p for _, p in spec]
    effective = [not p.unknown or p.took_effect for p in plan]
    ops = _history(inputs, _run_kv(inputs, effective), plan, spacing)
    assert check(KvStore(), ops).verdict is Verdict.LINEARIZABLE


SEQUENTIAL = Plan(before=0, after=0, unknown=False, took_effect=True)


@settings(max_examples=60, deadline=None)
@given(st.lists(register_inputs, min_size=1, max_size=20), st.data())
def test_corrupted_read_in_a_sequential_register_history_is_caught(
    inputs: list[RegisterInput], data: st.DataObject
) -> None:
    inputs = [*inputs, RegisterInput(RegisterFn.READ)]  # at least one read
    outs = _run_register(inputs, [True] * len(inputs))
    reads = [i for i, inp in enumerate(inputs) if inp.fn is RegisterFn.READ]
    victim = data.draw(st.sampled_from(reads))
    outs[victim] = data.draw(
        st.sampled_from([None, 0, 1, 2, 3, 4]).filter(lambda v: v != outs[victim])
    )
    ops = _history(inputs, outs, [SEQUENTIAL] * len(inputs), spacing=2)
    result = check(CasRegister(), ops)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.anomaly is not None and result.anomaly.blocking_op == victim


@settings(max_examples=60, deadline=None)
@given(st.lists(kv_inputs, min_size=1, max_size=20), st.sampled_from(KEYS), st.data())
def test_corrupted_read_in_a_sequential_kv_history_is_caught(
    inputs: list[KvInput], key: str, data: st.DataObject
) -> None:
    inputs = [*inputs, KvInput(KvFn.GET, key)]
    outs = _run_kv(inputs, [True] * len(inputs))
    reads = [i for i, inp in enumerate(inputs) if inp.fn is KvFn.GET]
    victim = data.draw(st.sampled_from(reads))
    true_value = outs[victim]
    outs[victim] = data.draw(
        st.sampled_from(["", "x", "xy", "zz", "?"]).filter(lambda v: v != true_value)
    )
    ops = _history(inputs, outs, [SEQUENTIAL] * len(inputs), spacing=2)
    result = check(KvStore(), ops)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.anomaly is not None
    assert result.anomaly.blocking_op == victim
    assert result.anomaly.partition == inputs[victim].key
