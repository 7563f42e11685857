"""The runner's pacing (``--rate``) and the register workload's key rotation: what keeps a
long soak's history small enough to check."""

from __future__ import annotations

import asyncio
import itertools
import random

from jepsen_like.workloads.base import Recorder
from jepsen_like.workloads.register import Register


async def test_rate_spaces_invocations_over_all_clients() -> None:
    rec = Recorder(rate=200.0)  # a slot every 5 ms, shared by every client

    async def noop() -> None:
        return None

    async def client(p: int) -> None:
        for _ in range(5):
            await rec.run(p, "read", "k", None, noop, read_only=True)

    await asyncio.gather(*(client(p) for p in range(3)))
    invokes = sorted(ev["time_ns"] for ev in rec.events if ev["type"] == "invoke")
    assert len(invokes) == 15
    gaps = [b - a for a, b in itertools.pairwise(invokes)]
    # a sleep never ends early: each slot is at least 5 ms after the previous one (1 ms slack
    # for the clock's granularity)
    assert min(gaps) >= 4_000_000
    assert invokes[-1] - invokes[0] >= 14 * 4_000_000


async def test_without_rate_invocations_are_not_paced() -> None:
    rec = Recorder()

    async def noop() -> None:
        return None

    for _ in range(50):
        await rec.run(0, "read", "k", None, noop, read_only=True)
    assert rec.interval == 0.0 and len(rec.events) == 100


def test_register_retires_keys_after_their_share_of_operations() -> None:
    reg = Register(keys=2, ops_per_key=3)
    rng = random.Random(1)
    keys = [reg.next_key(rng) for _ in range(13)]
    gens = [k.split("/")[1] for k in keys]
    assert gens == ["0"] * 6 + ["1"] * 6 + ["2"]
    assert {k.split("/")[2] for k in keys} <= {"0", "1"}
