"""Nemesis planning without a cluster: partition shapes, variant parsing, seeded schedules."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from jepsen_like import nemesis as nem
from jepsen_like.workloads.base import NEMESIS, Recorder

NODES3 = ["n1", "n2", "n3"]
NODES5 = ["n1", "n2", "n3", "n4", "n5"]


def _symmetric(g: dict[str, set[str]]) -> bool:
    return all(a in g[b] for a, peers in g.items() for b in peers)


def _components(nodes: list[str], g: dict[str, set[str]]) -> list[set[str]]:
    """Groups of members that can all reach each other directly."""
    return [{n} | {m for m in nodes if m not in g[n] and m != n} for n in nodes]


@pytest.mark.parametrize("shape", nem.SYMMETRIC_PARTITIONS)
@pytest.mark.parametrize("nodes", [NODES3, NODES5])
def test_every_shape_is_symmetric_and_cuts_something(shape: str, nodes: list[str]) -> None:
    for seed in range(20):
        g = nem.grudge(shape, nodes, nodes[seed % len(nodes)], random.Random(seed))
        assert _symmetric(g)
        assert any(g.values()), "a partition that cuts nothing tests nothing"
        assert all(n not in peers for n, peers in g.items())


def test_leader_shape_isolates_exactly_the_leader() -> None:
    g = nem.grudge("leader", NODES5, "n4", random.Random(1))
    assert g["n4"] == {"n1", "n2", "n3", "n5"}
    assert all(g[n] == {"n4"} for n in NODES5 if n != "n4")


def test_halves_leave_one_majority() -> None:
    for seed in range(20):
        g = nem.grudge("halves", NODES5, None, random.Random(seed))
        sides = {frozenset(c) for c in _components(NODES5, g)}
        assert sorted(len(s) for s in sides) == [2, 3]


def test_ring_gives_overlapping_majorities() -> None:
    g = nem.grudge("ring", NODES5, None, random.Random(3))
    for n in NODES5:
        sees = {m for m in NODES5 if m not in g[n]}  # itself and its two neighbours
        assert len(sees) == 3
    views = [frozenset(m for m in NODES5 if m not in g[n]) for n in NODES5]
    assert all(a & b for a in views for b in views), "any two majorities must intersect"


def test_bridge_has_one_member_seeing_everyone() -> None:
    for seed in range(10):
        g = nem.grudge("bridge", NODES5, None, random.Random(seed))
        bridges = [n for n in NODES5 if not g[n]]
        assert len(bridges) == 1
        assert all(len(g[n]) == 2 for n in NODES5 if n not in bridges)


def test_parse_names_variants_and_errors() -> None:
    ns = nem.parse("kill:leader+followers,partition:ring,clock")
    assert [n.name for n in ns] == ["kill", "partition", "clock"]
    assert isinstance(ns[0], nem.Kill) and ns[0].modes == ("leader", "followers")
    assert isinstance(ns[1], nem.Partition) and ns[1].shapes == ("ring",)
    assert nem.parse("none") == [] and nem.parse("") == []
    with pytest.raises(ValueError, match="unknown nemesis"):
        nem.parse("kill,meteor")
    with pytest.raises(ValueError, match="unknown variant"):
        nem.parse("kill:sideways")
    with pytest.raises(ValueError, match="unknown variant"):
        nem.parse("clock:fast")
    (disk,) = nem.parse("disk:wal-truncate+rollback")
    assert isinstance(disk, nem.Disk) and disk.modes == ("wal-truncate", "rollback")
    with pytest.raises(ValueError, match="unknown variant"):
        nem.parse("disk:shred")


class _Fake:
    """A nemesis that records its calls; draws one number so the RNG stream matters."""

    name = "fake"

    def __init__(self, calls: list[Any]) -> None:
        self.calls = calls

    async def start(self, c: Any, rng: random.Random) -> dict[str, Any]:
        self.calls.append(("start", rng.randrange(1000)))
        return {"pick": self.calls[-1][1]}

    async def stop(self, c: Any) -> dict[str, Any]:
        self.calls.append(("stop",))
        return {}

    async def heal(self, c: Any) -> None:
        self.calls.append(("heal",))


async def _plan(seed: int) -> tuple[list[Any], list[dict[str, Any]]]:
    calls: list[Any] = []
    rec = Recorder()
    stop = asyncio.Event()
    task = asyncio.create_task(
        nem.schedule(
            [_Fake(calls)], None, rec, random.Random(seed), stop, quiet=(0, 0.01), fault=(0, 0.01)
        )
    )
    while len(calls) < 6:
        await asyncio.sleep(0.001)
    stop.set()
    await task
    return calls[:6], rec.events


async def test_schedule_is_a_function_of_the_seed() -> None:
    a, events = await _plan(7)
    b, _ = await _plan(7)
    c, _ = await _plan(8)
    assert a == b
    assert a != c
    assert [x[0] for x in a] == ["start", "stop"] * 3, "one fault at a time, each undone"
    assert all(ev["process"] == NEMESIS for ev in events)
    assert events[0]["f"] == "start-fake" and events[1]["value"] == {"pick": a[0][1]}


async def test_membership_retry_outlasts_an_election_and_counts_a_lost_answer_as_done() -> None:
    """The member nemesis retries a membership call while the cluster has no leader, treats
    "already done" (an earlier attempt's answer was lost) as success, and gives up with the
    last error once its patience runs out."""
    from raftkv.errors import MemberExists, NoLeader

    answers: list[Exception | str] = [NoLeader("electing"), NoLeader("electing"), "ok"]

    async def flaky() -> str:
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a

    assert await nem._retry(flaky, patience=5.0) == "ok"
    assert answers == []

    async def done_already() -> str:
        raise MemberExists("member n4 already exists")

    assert await nem._retry(done_already, done=MemberExists, patience=5.0) is None
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(MemberExists):
        await nem._retry(done_already, patience=5.0)  # not declared done: raised, not retried
    assert loop.time() - t0 < 0.5
    calls = 0

    async def never() -> str:
        nonlocal calls
        calls += 1
        raise NoLeader("no quorum")

    with pytest.raises(NoLeader):
        await nem._retry(never, patience=1.2)
    assert 2 <= calls <= 3
