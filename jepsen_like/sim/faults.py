"""Fault schedules: what happens to the cluster and when, drawn from one seed.

A schedule is a tuple of :class:`Fault` values sorted by step.  Targets are *selectors*
(``LEADER``, ``JUST_VOTED``, ...) resolved by the cluster when the fault fires, with the run's
own random generator, so a schedule is plain data (hypothesis can draw one) and a run stays
a pure function of its inputs.  A fault may remember the node it hit in a numbered *tag*
slot, so a later fault can hit the same node (restart the node that was crashed, send a read
to the leader that was isolated, ...).

:func:`make_schedule` strings together *scenarios*, each a few faults aimed at one class of
bug; :data:`DEFAULT_WEIGHTS` is tuned so every mutation in ``raftkv.raft.config.MUTATIONS``
is found within a couple of hundred seeds:

- ``stale_read``: isolate the leader and freeze its clock (a paused process keeps believing
  it leads), then ask it for ReadIndex reads after the majority has moved on.
- ``churn``: propose, then crash the leader a tick or two later, again and again (the
  Figure 8 history: entries on a minority, leaders of interleaved terms).
- ``lag_swap``: cut a follower off while entries commit, then in one step let it back and
  isolate the leader, so an election runs with divergent logs.
- ``crash_voter``: crash a node right after it granted a vote, restart it soon after.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum


class FaultKind(IntEnum):
    PARTITION = 0
    HEAL = 1
    CRASH = 2  # arg > 0: crash between persisting its next Ready and sending it
    RESTART = 3
    CLOCK = 4  # arg: tick once every ``arg`` steps; 0 freezes the clock
    CLOCK_RESET = 5
    LOSSY = 6  # arg: drop probability in per mille (delays grow too); 0: lockstep network
    # (no loss, every message takes exactly one tick)
    CALM = 7
    ADD_LEARNER = 8
    ADD_VOTER = 9
    PROMOTE = 10
    REMOVE = 11
    TRANSFER = 12
    PROPOSE = 13  # arg: number of proposals
    READ_INDEX = 14
    SNAPSHOT = 15  # arg: entries to keep behind the snapshot when compacting
    CRASH_NEXT_LEADER = 16  # arm: crash the next node to win an election, between persisting
    # its first Ready as leader and sending it; arg: steps the trigger stays armed
    CRASH_ON_COMMIT = 17  # arm: crash the next leader whose commit index advances, likewise
    POISON = 18  # propose an entry whose apply raises (an injected state-machine bug)


class Target(IntEnum):
    ANY = 0  # a random live node
    LEADER = 1  # the live leader of the highest term (the fault is skipped if none)
    FOLLOWER = 2  # a random live node that is not that leader
    JUST_VOTED = 3  # a live node that granted a vote in the last step, else ANY
    TAGGED = 4  # the node remembered in slot ``tag``
    CRASHED = 5  # a random crashed node
    LAGGING = 6  # the live node with the shortest log


class Shape(IntEnum):
    ISOLATE = 0  # the target is cut off both ways
    MINORITY = 1  # a random minority against the majority
    RING = 2  # each node reaches only its two neighbours
    BRIDGE = 3  # two halves joined by the target, which sees both
    ONE_WAY_IN = 4  # the target hears nobody but can send
    ONE_WAY_OUT = 5  # the target can hear everyone but its messages are lost


@dataclass(frozen=True, slots=True)
class Fault:
    step: int
    kind: FaultKind
    target: Target = Target.ANY
    shape: Shape = Shape.ISOLATE
    arg: int = 0
    tag: int = 0
    """With ``target=TAGGED``: the slot to read.  Otherwise, if non-zero, the slot where the
    node this fault hit is remembered."""

    def __str__(self) -> str:
        parts = [self.kind.name.lower()]
        if self.kind == FaultKind.PARTITION:
            parts.append(self.shape.name.lower())
        if self.kind not in (FaultKind.HEAL, FaultKind.CALM, FaultKind.CLOCK_RESET):
            parts.append(f"target={self.target.name.lower()}")
        if self.arg:
            parts.append(f"arg={self.arg}")
        if self.tag:
            parts.append(f"tag={self.tag}")
        return " ".join(parts)


Schedule = tuple[Fault, ...]

DEFAULT_WEIGHTS: Mapping[str, int] = {
    "propose": 40,
    "read": 8,
    "partition": 8,
    "crash": 5,
    "crash_leader": 5,
    "crash_voter": 4,
    "stale_read": 4,
    "churn": 4,
    "figure8": 5,
    "lag_swap": 4,
    "membership": 8,
    "transfer": 3,
    "snapshot": 8,
    "lossy": 2,
    "clock_skew": 2,
    "poison": 3,
}


class _Builder:
    def __init__(self, rng: random.Random, steps: int) -> None:
        self.rng = rng
        self.steps = steps
        self.faults: list[Fault] = []
        self.tags = 0

    def tag(self) -> int:
        self.tags += 1
        return self.tags

    def add(
        self,
        step: int,
        kind: FaultKind,
        target: Target = Target.ANY,
        shape: Shape = Shape.ISOLATE,
        arg: int = 0,
        tag: int = 0,
    ) -> None:
        if step < self.steps:
            self.faults.append(Fault(step, kind, target, shape, arg, tag))


_EXCLUSIVE = {"stale_read": 55, "churn": 90, "lag_swap": 75, "figure8": 170}
"""Scenarios that need the cluster to themselves, and how many steps they take."""
_BACKGROUND = frozenset({"propose", "read"})
"""Scenarios that may run during an exclusive one: client load, no faults."""


def _scenario(b: _Builder, name: str, s: int) -> None:
    r = b.rng
    F, T = FaultKind, Target
    if name == "propose":
        b.add(s, F.PROPOSE, target=T.LEADER, arg=r.randint(1, 3))
    elif name == "poison":
        b.add(s, F.POISON, target=T.LEADER)
    elif name == "read":
        b.add(s, F.READ_INDEX, target=r.choice((T.ANY, T.LEADER)))
    elif name == "partition":
        shape = r.choice(list(Shape))
        b.add(s, F.PARTITION, shape=shape, target=r.choice((T.ANY, T.LEADER)))
        b.add(s + r.randint(5, 40), F.HEAL)
    elif name in ("crash", "crash_leader"):
        t = b.tag()
        b.add(s, F.CRASH, target=T.LEADER if name == "crash_leader" else T.ANY, tag=t)
        b.add(s + r.randint(3, 40), F.RESTART, target=T.TAGGED, tag=t)
    elif name == "crash_voter":
        t = b.tag()
        b.add(s, F.CRASH, target=T.JUST_VOTED, tag=t)
        b.add(s + r.randint(1, 8), F.RESTART, target=T.TAGGED, tag=t)
    elif name == "stale_read":
        t = b.tag()
        b.add(s, F.PARTITION, shape=Shape.ISOLATE, target=T.LEADER, tag=t)
        b.add(s, F.CLOCK, target=T.TAGGED, tag=t, arg=0)
        for _ in range(3):
            b.add(s + r.randint(20, 45), F.READ_INDEX, target=T.TAGGED, tag=t)
        b.add(s + 50, F.HEAL)
        b.add(s + 50, F.CLOCK_RESET)
    elif name == "figure8":
        # Raft paper Figure 8: entries of three terms at one index, each on one node, then a
        # leader that re-replicates an old-term entry and crashes the moment it commits.
        a, c = b.tag(), b.tag()
        b.add(s, F.LOSSY, arg=0)  # lockstep: followers' acks arrive together
        b.add(s, F.PROPOSE, target=T.LEADER, arg=1, tag=a)
        b.add(s, F.CRASH, target=T.TAGGED, tag=a, arg=1)
        elected = [b.tag() for _ in range(3)]  # enough for 7 nodes; spare triggers expire
        for t in elected:
            b.add(s + 1, F.CRASH_NEXT_LEADER, arg=70, tag=t)
        r1 = s + r.randint(70, 80)
        b.add(r1, F.RESTART, target=T.TAGGED, tag=a)
        b.add(r1, F.CRASH_ON_COMMIT, arg=55, tag=c)
        for t in elected:  # the leaders that never sent a thing come back first
            b.add(r1 + 58, F.RESTART, target=T.TAGGED, tag=t)
        b.add(r1 + 85, F.RESTART, target=T.TAGGED, tag=c)
        b.add(r1 + 85, F.CALM)
    elif name == "churn":
        at = s
        for _ in range(r.randint(2, 4)):
            t = b.tag()
            b.add(at, F.PROPOSE, target=T.LEADER, arg=r.randint(1, 2))
            b.add(at + r.randint(1, 2), F.CRASH, target=T.LEADER, tag=t)
            b.add(at + r.randint(6, 20), F.RESTART, target=T.TAGGED, tag=t)
            at += r.randint(12, 30)
    elif name == "lag_swap":
        t = b.tag()
        b.add(s, F.PARTITION, shape=Shape.ISOLATE, target=T.FOLLOWER, tag=t)
        for k in range(r.randint(1, 4)):
            b.add(s + 3 + 4 * k, F.PROPOSE, target=T.LEADER, arg=r.randint(1, 3))
        d = s + r.randint(20, 35)
        b.add(d, F.PARTITION, shape=Shape.ISOLATE, target=T.LEADER)
        b.add(d + r.randint(15, 40), F.HEAL)
    elif name == "membership":
        kind = r.choice((F.ADD_LEARNER, F.ADD_VOTER, F.REMOVE, F.PROMOTE))
        b.add(s, kind, target=T.LEADER)
        if kind == F.ADD_LEARNER:
            b.add(s + r.randint(10, 40), F.PROMOTE, target=T.LEADER)
    elif name == "transfer":
        b.add(s, F.TRANSFER, target=T.FOLLOWER)
    elif name == "snapshot":
        b.add(s, F.SNAPSHOT, target=r.choice((T.ANY, T.LEADER)), arg=r.randint(0, 4))
    elif name == "lossy":
        b.add(s, F.LOSSY, arg=r.randint(100, 400))
        b.add(s + r.randint(10, 40), F.CALM)
    elif name == "clock_skew":
        b.add(s, F.CLOCK, target=T.ANY, arg=r.randint(2, 4))
        b.add(s + r.randint(10, 60), F.CLOCK_RESET)
    else:
        raise ValueError(f"unknown scenario {name!r}")


def make_schedule(
    rng: random.Random,
    steps: int,
    weights: Mapping[str, int] = DEFAULT_WEIGHTS,
    rate: float = 0.12,
    warmup: int = 15,
) -> Schedule:
    """Draw a schedule for ``steps`` steps: at each step after ``warmup`` a scenario starts
    with probability ``rate``, chosen by ``weights``."""
    names = sorted(weights)
    cum: list[int] = []
    total = 0
    for n in names:
        total += weights[n]
        cum.append(total)
    b = _Builder(rng, steps)
    busy_until = 0
    for s in range(warmup, steps):
        if rng.random() < rate:
            x = rng.random() * total
            k = 0
            while cum[k] <= x:
                k += 1
            name = names[k]
            if s < busy_until and name not in _BACKGROUND:
                continue  # an exclusive scenario is running: only load, no other faults
            if name in _EXCLUSIVE:
                busy_until = s + _EXCLUSIVE[name]
            _scenario(b, name, s)
    b.faults.sort(key=lambda f: f.step)
    return tuple(b.faults)
