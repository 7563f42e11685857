"""Fault schedules: drawn from one seed, sorted, and shaped by the scenario weights."""

from __future__ import annotations

import random

import pytest

from jepsen_like.sim.faults import (
    _BACKGROUND,
    _EXCLUSIVE,
    DEFAULT_WEIGHTS,
    FaultKind,
    Target,
    make_schedule,
)


def test_schedule_is_a_pure_function_of_the_seed() -> None:
    a = make_schedule(random.Random(5), 300)
    assert a == make_schedule(random.Random(5), 300)
    assert a != make_schedule(random.Random(6), 300)


@pytest.mark.parametrize("seed", range(10))
def test_schedule_is_sorted_and_inside_the_run(seed: int) -> None:
    s = make_schedule(random.Random(seed), 300)
    steps = [f.step for f in s]
    assert steps == sorted(steps)
    assert all(15 <= st < 300 for st in steps)


@pytest.mark.parametrize("name", sorted(DEFAULT_WEIGHTS))
def test_every_scenario_can_be_drawn_alone(name: str) -> None:
    s = make_schedule(random.Random(1), 400, {name: 1}, rate=0.2)
    assert s, name
    if name == "figure8":
        kinds = {f.kind for f in s}
        assert {FaultKind.CRASH_NEXT_LEADER, FaultKind.CRASH_ON_COMMIT} <= kinds


def test_tagged_targets_refer_to_a_tag_set_earlier_or_at_the_same_step() -> None:
    s = make_schedule(random.Random(3), 2000)
    set_at: dict[int, int] = {}
    for f in s:
        if f.target == Target.TAGGED:
            assert f.tag in set_at and set_at[f.tag] <= f.step, f
        elif f.tag:
            set_at.setdefault(f.tag, f.step)


def test_no_other_fault_starts_while_an_exclusive_scenario_runs() -> None:
    # figure8 alone emits LOSSY(arg=0); a partition scenario starts with its PARTITION fault.
    s = make_schedule(random.Random(9), 5000, {"figure8": 1, "partition": 3, "propose": 3})
    f8 = [f.step for f in s if f.kind == FaultKind.LOSSY and f.arg == 0]
    parts = [f.step for f in s if f.kind == FaultKind.PARTITION]
    assert f8 and parts
    window = _EXCLUSIVE["figure8"]
    for start in f8:
        assert not [p for p in parts if start <= p < start + window]
    assert "propose" in _BACKGROUND
    assert any(
        start < f.step < start + window
        for start in f8
        for f in s
        if f.kind == FaultKind.PROPOSE and f.target == Target.LEADER and not f.tag
    )


def test_the_mix_has_every_kind_of_fault() -> None:
    s = make_schedule(random.Random(0), 5000)
    assert {f.kind for f in s} == set(FaultKind)
