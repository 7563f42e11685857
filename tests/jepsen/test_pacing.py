"""The runner's pacing (``--rate``) and the register workload's key rotation: what keeps a
long soak's history small enough to check."""

from __future__ import annotations

import asyncio
import random

from jepsen_like.workloads.append import Append
from jepsen_like.workloads.base import Recorder
from jepsen_like.workloads.register import Register


async def test_rate_spaces_invocations_over_all_clients() -> None:
    rec = Recorder(rate=200.0)  # a slot every 5 ms, shared by every client

    async def noop() -> None:
        return None

    async def client(p: int) -> None:
        for _ in range(5):
            await rec.run(p, "read", "k", None, noop, read_only=True)

    start = rec.now()
    await asyncio.gather(*(client(p) for p in range(3)))
    invokes = sorted(ev["time_ns"] for ev in rec.events if ev["type"] == "invoke")
    assert len(invokes) == 15
    # the i-th slot is i * 5 ms after the start and a sleep never ends early (a late wake-up
    # can shorten the gap to the next invocation, never move one before its slot)
    for i, t in enumerate(invokes):
        assert t - start >= i * 5_000_000 - 1_000_000, (i, t - start)
    assert invokes[-1] - start >= 14 * 5_000_000 - 1_000_000


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


def test_append_retires_keys_after_max_writes() -> None:
    app = Append(keys=2, max_writes_per_key=3)
    rng = random.Random(3)
    appended: dict[str, list[int]] = {}
    for _ in range(200):
        for f, k, v in app.gen(rng):
            if f == "append":
                appended.setdefault(k, []).append(v)
    # every key got at most 3 appends, numbered 1.. in order, and fresh keys kept coming
    assert all(vs == list(range(1, len(vs) + 1)) and len(vs) <= 3 for vs in appended.values())
    assert len(appended) > 20
    assert set(app.next_value) >= set(appended)  # the final read covers every key used
