"""Election: one leader at a time, resign hands over, observe follows every change."""

from __future__ import annotations

import asyncio

import pytest

from raftkv.client import Client
from raftkv.errors import LockLost
from raftkv.recipes import Election, Leader, Session, observe


async def test_one_leader_at_a_time_and_resign_hands_over(client: Client) -> None:
    sessions = [await Session.create(client, ttl=10) for _ in range(3)]
    try:
        elections = [Election(s, "/elect") for s in sessions]
        leading: list[int] = []
        tasks = [asyncio.create_task(e.campaign(f"cand-{i}")) for i, e in enumerate(elections)]
        for _ in range(3):
            await asyncio.wait(
                [t for t in tasks if not t.done()] or tasks,
                timeout=5,
                return_when=asyncio.FIRST_COMPLETED,
            )
            await asyncio.sleep(0.2)  # a second leader would show up now
            now = [i for i, t in enumerate(tasks) if t.done() and i not in leading]
            assert len(now) == 1, now
            i = now[0]
            leading.append(i)
            ldr = await elections[i].leader()
            assert ldr is not None and ldr.value == f"cand-{i}".encode()
            assert ldr.key == elections[i].key
            await elections[i].proclaim(f"cand-{i}-updated")
            assert (await elections[i].leader()) == Leader(
                ldr.key, f"cand-{i}-updated".encode(), ldr.revision
            )
            await elections[i].resign()
        assert sorted(leading) == [0, 1, 2]
        assert await elections[0].leader() is None
    finally:
        for s in sessions:
            await s.close()


async def test_deposed_leader_cannot_proclaim(client: Client) -> None:
    s1 = await Session.create(client, ttl=10)
    e1 = Election(s1, "/dep")
    await e1.campaign("a")
    await client.lease_revoke(s1.lease_id)
    with pytest.raises(LockLost):
        await e1.proclaim("b")
    await s1.close()


async def test_observe_sees_every_leader_change(client: Client) -> None:
    seen: list[bytes] = []
    got_three = asyncio.Event()

    async def follow() -> None:
        async for ldr in observe(client, "/obs"):
            seen.append(ldr.value)
            if len(seen) == 3:
                got_three.set()
                return

    async with Session(client, ttl=10) as s1, Session(client, ttl=10) as s2:
        e1, e2 = Election(s1, "/obs"), Election(s2, "/obs")
        await e1.campaign("one")
        watcher = asyncio.create_task(follow())
        await asyncio.sleep(0.2)
        second = asyncio.create_task(e2.campaign("two"))
        await asyncio.sleep(0.2)  # a new candidate is not a leader change
        await e1.proclaim("one-b")
        await e1.resign()
        await asyncio.wait_for(second, 5)
        await asyncio.wait_for(got_three.wait(), 5)
        await watcher
    assert seen == [b"one", b"one-b", b"two"]
