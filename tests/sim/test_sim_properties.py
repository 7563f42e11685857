"""Hypothesis draws whole fault schedules; the simulator must find no violation in any of them.

Shrinking works on the schedule, so a failure comes back as a short list of faults.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from jepsen_like.sim.cluster import run
from jepsen_like.sim.faults import Fault, FaultKind, Schedule, Shape, Target

STEPS = 200

_ARGS = {
    FaultKind.CLOCK: st.integers(0, 4),
    FaultKind.LOSSY: st.integers(0, 500),
    FaultKind.PROPOSE: st.integers(1, 4),
    FaultKind.SNAPSHOT: st.integers(0, 5),
    FaultKind.CRASH: st.integers(0, 1),
    FaultKind.CRASH_NEXT_LEADER: st.integers(1, 80),
    FaultKind.CRASH_ON_COMMIT: st.integers(1, 80),
}


@st.composite
def faults(draw: st.DrawFn) -> Fault:
    kind = draw(st.sampled_from(FaultKind))
    return Fault(
        step=draw(st.integers(0, STEPS - 1)),
        kind=kind,
        target=draw(st.sampled_from(Target)),
        shape=draw(st.sampled_from(Shape)),
        arg=draw(_ARGS.get(kind, st.just(0))),
        tag=draw(st.integers(0, 3)),
    )


schedules = st.lists(faults(), max_size=40).map(lambda fs: tuple(sorted(fs, key=lambda f: f.step)))


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), nodes=st.sampled_from([3, 5, 7]), schedule=schedules)
def test_no_schedule_breaks_safety_or_liveness(seed: int, nodes: int, schedule: Schedule) -> None:
    res = run(seed, STEPS, nodes, schedule=schedule)
    assert res.violation is None, "\n".join([str(res.violation), *res.trace()])


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), schedule=schedules)
def test_a_run_is_a_pure_function_of_its_inputs(seed: int, schedule: Schedule) -> None:
    a = run(seed, STEPS // 2, 3, schedule=schedule)
    b = run(seed, STEPS // 2, 3, schedule=schedule)
    assert (a.events, a.digest, a.violation) == (b.events, b.digest, b.violation)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), schedule=schedules)
def test_a_vote_that_is_not_persisted_is_always_caught(seed: int, schedule: Schedule) -> None:
    # Every run elects a leader, and every granted vote must be durable before it leaves.
    res = run(seed, STEPS, 3, mutation="no_persist_vote", schedule=schedule)
    assert res.violation is not None and res.violation.invariant in {
        "persistence",
        "election safety",
    }
