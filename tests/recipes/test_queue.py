"""Barrier and Queue (ZooKeeper recipes)."""

from __future__ import annotations

import asyncio

from raftkv.client import Client
from raftkv.recipes import Barrier, Queue


async def test_barrier_blocks_until_released(client: Client) -> None:
    b = Barrier(client, "/barrier")
    await b.wait()  # not up: returns at once
    assert await b.hold() and not await b.hold()
    waiters = [asyncio.create_task(Barrier(client, "/barrier").wait()) for _ in range(3)]
    await asyncio.sleep(0.2)
    assert not any(w.done() for w in waiters)
    await b.release()
    await asyncio.wait_for(asyncio.gather(*waiters), 5)


async def test_queue_fifo_each_item_taken_once(client: Client) -> None:
    q = Queue(client, "/q")
    for i in range(10):
        await q.enqueue(f"item-{i}")
    assert await q.size() == 10
    assert await q.dequeue() == b"item-0"
    got: list[bytes] = []

    async def consumer() -> None:
        while True:
            got.append(await q.dequeue())

    consumers = [asyncio.create_task(consumer()) for _ in range(3)]
    late = asyncio.create_task(Queue(client, "/q").enqueue("item-10"))
    await late

    async def ten() -> None:
        while len(got) < 10:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(ten(), 10)
    for c in consumers:
        c.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)
    assert sorted(got) == sorted(f"item-{i}".encode() for i in range(1, 11))  # no duplicates
    assert await q.size() == 0
