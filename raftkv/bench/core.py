"""Throughput of the sans-IO core alone: one process drives a 3-node in-memory cluster.

Measures how many proposals per second commit and apply on every node when the
application batches proposals between Ready cycles, with messages delivered in memory and
storage in :class:`MemoryStorage`.  This bounds what the core costs per write; the real
server adds SQLite fsyncs, sockets and the state machine on top.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from raftkv.raft import Config, ConfState, MemoryStorage, Message, RawNode


@dataclass(frozen=True, slots=True)
class CoreBenchResult:
    nodes: int
    proposals: int
    batch: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.proposals / self.seconds if self.seconds else 0.0


def run_core_benchmark(
    total: int = 200_000, batch: int = 1_000, nodes: int = 3, value_size: int = 64
) -> CoreBenchResult:
    ids = list(range(1, nodes + 1))
    storages = {i: MemoryStorage(ConfState(voters=tuple(ids))) for i in ids}
    rns = {i: RawNode(Config(id=i, storage=storages[i], rng=random.Random(i))) for i in ids}
    applied = dict.fromkeys(ids, 0)
    inbox: list[Message] = []

    def cycle() -> None:
        for i in ids:
            rn = rns[i]
            while rn.has_ready():
                rd = rn.ready()
                inbox.extend(rd.early_messages)  # may leave before the fsync
                storages[i].save(rd.hard_state, rd.entries, rd.snapshot)
                inbox.extend(rd.messages)
                applied[i] += sum(1 for e in rd.committed_entries if e.data)
                rn.advance(rd)

    def pump() -> None:
        cycle()
        while inbox:
            msgs = inbox[:]
            inbox.clear()
            for m in msgs:
                rns[m.to].step(m)
            cycle()

    rns[1].campaign()
    pump()
    assert rns[1].is_leader
    payload = b"x" * value_size
    datas = [payload] * batch
    start = time.perf_counter()
    sent = 0
    while sent < total:
        rns[1].propose_batch(datas)
        sent += batch
        pump()
    elapsed = time.perf_counter() - start
    if any(applied[i] != sent for i in ids):
        raise AssertionError(f"not every node applied every proposal: {applied}")
    return CoreBenchResult(nodes=nodes, proposals=sent, batch=batch, seconds=elapsed)
