"""ZooKeeper's Barrier and Queue recipes (etcd ``contrib/recipes/barrier.go``, ``queue.go``).

* :class:`Barrier`: ``hold()`` raises it, ``release()`` lowers it, ``wait()`` blocks while it
  is up.
* :class:`Queue`: a FIFO of values under a prefix, ordered by create revision; ``dequeue``
  claims the oldest item with a txn guarded by its mod revision, so each item is taken by
  exactly one consumer.
"""

from __future__ import annotations

import secrets

from raftkv.api import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    EventType,
    PutRequest,
)
from raftkv.client import Bytesish, Client, WatchFilter, to_bytes
from raftkv.recipes._wait import as_prefix, first_under, wait_delete


class Barrier:
    """A barrier on one key: processes block in :meth:`wait` until it is released."""

    def __init__(self, client: Client, key: Bytesish) -> None:
        self.client = client
        self.key = to_bytes(key)

    async def hold(self, lease: int = 0) -> bool:
        """Raise the barrier; False if it was already up.  With a session's ``lease`` it
        falls when the holder dies."""
        resp = await self.client.txn(
            (Compare(self.key, CompareTarget.CREATE, CompareResult.EQUAL, 0),),
            (PutRequest(self.key, b"", lease=lease),),
        )
        return resp.succeeded

    async def release(self) -> None:
        await self.client.delete(self.key)

    async def wait(self) -> None:
        """Return once the barrier is down (at once if it is not up)."""
        resp = await self.client.get(self.key)
        if resp.kvs:
            await wait_delete(self.client, self.key, resp.header.revision)


class Queue:
    """A distributed FIFO queue under ``prefix``."""

    def __init__(self, client: Client, prefix: Bytesish) -> None:
        self.client = client
        self.prefix = as_prefix(prefix)

    async def enqueue(self, value: Bytesish) -> bytes:
        """Append ``value``; returns the item's key."""
        while True:
            key = self.prefix + secrets.token_hex(8).encode()
            resp = await self.client.txn(
                (Compare(key, CompareTarget.CREATE, CompareResult.EQUAL, 0),),
                (PutRequest(key, to_bytes(value)),),
            )
            if resp.succeeded:
                return key

    async def dequeue(self) -> bytes:
        """Remove and return the oldest value, waiting for one if the queue is empty."""
        while True:
            kv, rev = await first_under(self.client, self.prefix)
            if kv is None:
                async with self.client.watch(
                    self.prefix,
                    prefix=True,
                    start_revision=rev + 1,
                    filters=(WatchFilter.NODELETE,),
                ) as w:
                    async for wr in w:
                        if any(ev.type == EventType.PUT for ev in wr.events):
                            break
                continue
            claim = await self.client.txn(
                (Compare(kv.key, CompareTarget.MOD, CompareResult.EQUAL, kv.mod_revision),),
                (DeleteRangeRequest(kv.key),),
            )
            if claim.succeeded:
                return kv.value

    async def size(self) -> int:
        """How many items are queued now."""
        return (await self.client.get(self.prefix, prefix=True, count_only=True)).count
