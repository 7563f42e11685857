"""Waiting on predecessors: the no-thundering-herd core shared by Mutex, RWMutex, Election.

Model: etcd's ``concurrency/key.go`` (``waitDelete``, ``waitDeletes``).  A waiter never watches
the whole prefix; it watches only the one key created just before its own, so a release
wakes exactly one waiter.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from raftkv.api import DeleteRangeRequest, EventType, KeyValue, RangeRequest, SortOrder, SortTarget
from raftkv.api import prefix_end as _prefix_end
from raftkv.client import Bytesish, Client, Watcher, WatchFilter, to_bytes
from raftkv.errors import LockLost


def prefix_range(prefix: bytes) -> tuple[bytes, bytes]:
    return prefix, _prefix_end(prefix)


async def last_before(
    client: Client, prefix: bytes, max_create_rev: int
) -> tuple[KeyValue | None, int]:
    """The key under ``prefix`` with the highest create revision ``<= max_create_rev``, and the
    store revision of the read."""
    key, end = prefix_range(prefix)
    resp = await client.range(
        RangeRequest(
            key,
            end,
            limit=1,
            sort_order=SortOrder.DESCEND,
            sort_target=SortTarget.CREATE,
            max_create_revision=max_create_rev,
        )
    )
    return (resp.kvs[0] if resp.kvs else None), resp.header.revision


async def first_under(client: Client, prefix: bytes) -> tuple[KeyValue | None, int]:
    """The key under ``prefix`` with the lowest create revision (the owner / leader)."""
    key, end = prefix_range(prefix)
    resp = await client.range(
        RangeRequest(key, end, limit=1, sort_order=SortOrder.ASCEND, sort_target=SortTarget.CREATE)
    )
    return (resp.kvs[0] if resp.kvs else None), resp.header.revision


async def wait_delete(
    client: Client, key: bytes, rev: int, lost: asyncio.Event | None = None
) -> None:
    """Return once ``key`` is deleted at a revision after ``rev``; LockLost if ``lost`` is set
    first (our own session died while we waited)."""
    async with client.watch(key, start_revision=rev + 1, filters=(WatchFilter.NOPUT,)) as w:
        watch_task: asyncio.Future[None] = asyncio.ensure_future(_first_delete(w, key))
        tasks: list[asyncio.Future[Any]] = [watch_task]
        if lost is not None:
            tasks.append(asyncio.ensure_future(lost.wait()))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                if not t.done():
                    t.cancel()
                    with contextlib.suppress(BaseException):
                        await t
        if watch_task.done() and not watch_task.cancelled():
            watch_task.result()  # re-raise a watch error
            return
        raise LockLost("session lost while waiting")


async def _first_delete(w: Watcher, key: bytes) -> None:
    async for resp in w:
        for ev in resp.events:
            if ev.type == EventType.DELETE and ev.kv.key == key:
                return None
    raise LockLost("watch ended before the predecessor was deleted")


async def delete_own(client: Client, key: bytes) -> None:
    """Delete ``key`` even while the caller is being cancelled."""
    task = asyncio.ensure_future(client.txn((), (DeleteRangeRequest(key),)))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await task
        raise


def as_prefix(prefix: Bytesish) -> bytes:
    """``prefix`` with exactly one trailing ``/``."""
    p = to_bytes(prefix).rstrip(b"/")
    return p + b"/"
