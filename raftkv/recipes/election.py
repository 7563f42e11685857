"""Leader election (model: etcd's ``clientv3/concurrency/election.go``).

Each candidate puts ``<prefix>/<lease id hex>`` (its proposal as the value) attached to its
session's lease; the leader is the key with the lowest create revision.  Waiting is the
mutex's: watch only the candidate just before you.  The leader updates its value with
:meth:`Election.proclaim`, a txn guarded by its key's create revision, so a deposed leader
cannot overwrite anything.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import NamedTuple

from raftkv.api import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    EventType,
    PutRequest,
    RangeRequest,
    RangeResponse,
)
from raftkv.client import Bytesish, Client, to_bytes
from raftkv.errors import InvalidArgument, LockLost, TransientError
from raftkv.recipes._wait import as_prefix, delete_own, first_under, last_before, wait_delete
from raftkv.recipes.session import Session


class Leader(NamedTuple):
    """The current leader: its key, its value (proposal) and its key's create revision."""

    key: bytes
    value: bytes
    revision: int


class Election:
    """One candidate in the election under ``prefix``."""

    def __init__(self, session: Session, prefix: Bytesish) -> None:
        self.session = session
        self.client: Client = session.client
        self.prefix = as_prefix(prefix)
        self._key: bytes | None = None
        self._rev = 0
        self._value = b""

    @property
    def key(self) -> bytes | None:
        """Our candidate key while campaigning or leading."""
        return self._key

    @property
    def revision(self) -> int:
        """Our key's create revision (the leadership's fencing token)."""
        return self._rev

    async def campaign(self, value: Bytesish) -> None:
        """Block until we are the leader, proposing ``value``.  Cancelling (or a lost
        session, LockLost) withdraws the candidacy."""
        val = to_bytes(value)
        if not self.session.alive:
            raise LockLost("session is not alive")
        key = self.prefix + f"{self.session.lease_id:x}".encode()
        resp = await self.client.txn(
            (Compare(key, CompareTarget.CREATE, CompareResult.EQUAL, 0),),
            (PutRequest(key, val, lease=self.session.lease_id),),
            (RangeRequest(key),),
        )
        self._key, self._value = key, val
        if resp.succeeded:
            self._rev = resp.header.revision
        else:
            got = resp.responses[0]
            assert isinstance(got, RangeResponse) and got.kvs
            self._rev = got.kvs[0].create_revision
            if got.kvs[0].value != val:
                await self.proclaim(val)
        try:
            while True:
                pred, read_rev = await last_before(self.client, self.prefix, self._rev - 1)
                if pred is None:
                    break
                await wait_delete(self.client, pred.key, read_rev, self.session.done)
            own = await self.client.get(key)
            if not own.kvs or own.kvs[0].create_revision != self._rev:
                raise LockLost("candidate key deleted while waiting (session expired?)")
        except BaseException:
            k, self._key, self._rev = self._key, None, 0
            if k is not None and not self.client.closed:
                with contextlib.suppress(TransientError):
                    await delete_own(self.client, k)
            raise

    async def proclaim(self, value: Bytesish) -> None:
        """Change our value while leading; LockLost if we no longer hold our key."""
        if self._key is None:
            raise InvalidArgument("not campaigning")
        val = to_bytes(value)
        resp = await self.client.txn(
            (Compare(self._key, CompareTarget.CREATE, CompareResult.EQUAL, self._rev),),
            (PutRequest(self._key, val, lease=self.session.lease_id),),
        )
        if not resp.succeeded:
            self._key, self._rev = None, 0
            raise LockLost("election key is gone: not the leader any more")
        self._value = val

    async def resign(self) -> None:
        """Give up leadership (or candidacy); the next candidate takes over."""
        key, rev = self._key, self._rev
        self._key, self._rev = None, 0
        if key is not None:
            await self.client.txn(
                (Compare(key, CompareTarget.CREATE, CompareResult.EQUAL, rev),),
                (DeleteRangeRequest(key),),
            )

    async def leader(self) -> Leader | None:
        """The current leader, or None if there is no candidate."""
        return await leader_of(self.client, self.prefix)

    def observe(self) -> AsyncIterator[Leader]:
        return observe(self.client, self.prefix)


async def leader_of(client: Client, prefix: Bytesish) -> Leader | None:
    kv, _ = await first_under(client, as_prefix(prefix))
    return Leader(kv.key, kv.value, kv.create_revision) if kv is not None else None


async def observe(client: Client, prefix: Bytesish) -> AsyncIterator[Leader]:
    """Yield the leader each time it (or its value) changes, starting with the current one.

    The candidates are loaded once and then followed by a watch on the prefix from the next
    revision, so no change is missed; the client's watch resumes across reconnects."""
    pfx = as_prefix(prefix)
    resp = await client.get(pfx, prefix=True)
    cands: dict[bytes, tuple[int, bytes]] = {
        kv.key: (kv.create_revision, kv.value) for kv in resp.kvs
    }
    last: Leader | None = None

    def current() -> Leader | None:
        if not cands:
            return None
        k = min(cands, key=lambda x: cands[x][0])
        rev, val = cands[k]
        return Leader(k, val, rev)

    now = current()
    if now is not None:
        last = now
        yield now
    async with client.watch(pfx, prefix=True, start_revision=resp.header.revision + 1) as w:
        async for wr in w:
            for ev in wr.events:
                if ev.type == EventType.PUT:
                    cands[ev.kv.key] = (ev.kv.create_revision, ev.kv.value)
                else:
                    cands.pop(ev.kv.key, None)
            now = current()
            if now is not None and now != last:
                last = now
                yield now
            elif now is None:
                last = None
