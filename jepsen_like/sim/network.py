"""A simulated network: messages in flight with a delivery time in ticks, and partitions.

The network drops, duplicates, delays and (through random delays) reorders messages, all
drawn from the one ``random.Random`` of the run, so a run is replayable from its seed.  A
partition is a set of blocked *directed* links ``(src, dst)``; every shape the fault
schedule uses (isolate one node, minority/majority, overlapping-majorities ring, bridge,
one-way links) is built by the pure functions at the bottom of this module.  A link is
checked both when a message is sent and when it is delivered, so a partition that starts
while a message is in flight also loses it.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from raftkv.raft.types import Message

Link = tuple[int, int]
"""A directed link ``(src, dst)``."""


@dataclass(frozen=True, slots=True)
class NetConfig:
    """Loss and latency of the network; ``max_delay >= min_delay >= 1`` (in ticks)."""

    drop: float = 0.0
    duplicate: float = 0.0
    min_delay: int = 1
    max_delay: int = 3


CLEAN = NetConfig()


class Network:
    """Messages in flight, ordered by (delivery tick, send order)."""

    __slots__ = ("_heap", "_rng", "_seq", "blocked", "config", "delivered", "dropped", "sent")

    def __init__(self, rng: random.Random, config: NetConfig = CLEAN) -> None:
        self._rng = rng
        self._heap: list[tuple[int, int, Message]] = []
        self._seq = 0
        self.config = config
        # Invariant: no link (a, a); a node always reaches itself.
        self.blocked: frozenset[Link] = frozenset()
        self.sent = 0
        self.dropped = 0
        self.delivered = 0

    def can_reach(self, src: int, dst: int) -> bool:
        return (src, dst) not in self.blocked

    def set_partition(self, blocked: Iterable[Link]) -> None:
        """Replace the current partition (not add to it): shapes do not accumulate."""
        self.blocked = frozenset(link for link in blocked if link[0] != link[1])

    def heal(self) -> None:
        self.blocked = frozenset()

    def send(self, msg: Message, now: int) -> bool:
        """Put ``msg`` in flight; returns False if it was lost at once (blocked or dropped)."""
        self.sent += 1
        cfg = self.config
        rng = self._rng
        if (msg.frm, msg.to) in self.blocked or (cfg.drop and rng.random() < cfg.drop):
            self.dropped += 1
            return False
        copies = 2 if cfg.duplicate and rng.random() < cfg.duplicate else 1
        span = cfg.max_delay - cfg.min_delay + 1
        for _ in range(copies):
            at = now + cfg.min_delay + (int(rng.random() * span) if span > 1 else 0)
            self._seq += 1
            heapq.heappush(self._heap, (at, self._seq, msg))
        return True

    def due(self, now: int) -> list[Message]:
        """Pop every message whose delivery tick is ``<= now`` and whose link is open."""
        heap = self._heap
        out: list[Message] = []
        blocked = self.blocked
        while heap and heap[0][0] <= now:
            msg = heapq.heappop(heap)[2]
            if (msg.frm, msg.to) in blocked:
                self.dropped += 1
            else:
                out.append(msg)
        self.delivered += len(out)
        return out

    def in_flight(self) -> int:
        return len(self._heap)


# --- partition shapes (pure: node ids in, blocked directed links out) -----------------------


def split(groups: Sequence[Iterable[int]]) -> frozenset[Link]:
    """Block both directions between every pair of groups; links inside a group stay up."""
    sets = [sorted(set(g)) for g in groups]
    out: set[Link] = set()
    for i, a in enumerate(sets):
        for b in sets[i + 1 :]:
            for x in a:
                for y in b:
                    out.add((x, y))
                    out.add((y, x))
    return frozenset(out)


def isolate(node: int, nodes: Iterable[int]) -> frozenset[Link]:
    """``node`` can neither send to nor hear from anyone."""
    return split([[node], [n for n in nodes if n != node]])


def minority_majority(nodes: Sequence[int], rng: random.Random) -> frozenset[Link]:
    """A random minority (at least one node) cut off from the majority."""
    order = list(nodes)
    rng.shuffle(order)
    k = rng.randint(1, max(1, (len(order) - 1) // 2))
    return split([order[:k], order[k:]])


def ring(order: Sequence[int]) -> frozenset[Link]:
    """Each node reaches only its two neighbours in ``order`` (overlapping majorities)."""
    n = len(order)
    out: set[Link] = set()
    for i, x in enumerate(order):
        near = {order[(i - 1) % n], order[(i + 1) % n], x}
        out.update((x, y) for y in order if y not in near)
    return frozenset(out)


def bridge(order: Sequence[int]) -> frozenset[Link]:
    """``order[0]`` sees everyone; the rest split into two halves that cannot see each other."""
    rest = list(order[1:])
    half = len(rest) // 2
    return split([rest[:half], rest[half:]])


def one_way(src: Iterable[int], dst: Iterable[int]) -> frozenset[Link]:
    """Messages from every node in ``src`` to every node in ``dst`` are lost (not back)."""
    return frozenset((a, b) for a in src for b in dst if a != b)


def reachable(blocked: frozenset[Link], src: int, nodes: Iterable[int]) -> set[int]:
    """The nodes ``src`` can send to directly (itself included)."""
    return {n for n in nodes if n == src or (src, n) not in blocked}
