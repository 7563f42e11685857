"""Injected state-machine failures in the simulator: an entry whose apply raises becomes the
same error result on every member, and the cluster goes on (crashes, restarts, snapshots)."""

from __future__ import annotations

import random

from jepsen_like.sim.cluster import App, PoisonableFSM, kv_entry, run
from jepsen_like.sim.faults import make_schedule
from raftkv.api import PutRequest, RangeRequest
from raftkv.errors import ApplyFailed
from raftkv.raft.types import ConfState, Entry, EntryType

WEIGHTS = {
    "propose": 10,
    "poison": 12,
    "crash": 6,
    "crash_leader": 4,
    "snapshot": 6,
    "partition": 4,
}


def test_poisoned_entries_never_stop_the_members_and_they_still_agree() -> None:
    poisoned = 0
    for seed in range(12):
        sched = make_schedule(random.Random(seed), 400, WEIGHTS)
        res = run(seed, 400, schedule=sched)
        assert res.violation is None, (seed, res.violation, res.trace())
        poisoned += res.stats["poisoned"]
    assert poisoned > 20, "the scenario really applied poisoned entries"


def test_a_poisoned_entry_yields_apply_failed_and_the_next_entry_applies() -> None:
    app = App(1, bytes(16), ConfState(voters=(1,)))
    bad = app.fsm.apply(2, kv_entry(PutRequest(b"poison/1"))[1:], 1)
    assert isinstance(bad.error, ApplyFailed)
    assert "injected apply failure" in str(bad.error)
    good = app.fsm.apply(3, kv_entry(PutRequest(b"k", b"v"))[1:], 1)
    assert good.error is None
    assert [kv.value for kv in app.fsm.range(RangeRequest(b"k")).kvs] == [b"v"]


def test_replaying_a_poisoned_log_after_a_restart_gives_the_same_state() -> None:
    entries = [
        Entry(index=i + 2, term=1, type=EntryType.NORMAL, data=kv_entry(PutRequest(k, b"v")))
        for i, k in enumerate([b"a", b"poison/x", b"b", b"poison/y", b"c"])
    ]
    first, replay = PoisonableFSM(), PoisonableFSM()
    first.applied_index = replay.applied_index = 1
    a = [first.apply(e.index, e.data[1:], e.term) for e in entries]
    b = [replay.apply(e.index, e.data[1:], e.term) for e in entries]
    assert [(r.revision, type(r.error)) for r in a] == [(r.revision, type(r.error)) for r in b]
    assert [str(r.error) for r in a] == [str(r.error) for r in b]
    assert first.hash() == replay.hash()
    assert sum(isinstance(r.error, ApplyFailed) for r in a) == 2
