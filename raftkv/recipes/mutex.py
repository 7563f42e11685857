"""Distributed locks: a fair, fenced :class:`Mutex`, a :class:`RWMutex`, and :func:`try_lock`.

Model: etcd's ``clientv3/concurrency/mutex.go`` and ``contrib/recipes/rwmutex.go``.

A :class:`Mutex` waiter puts ``<prefix>/<lease id hex>`` attached to its session's lease, in
one txn that does not overwrite a key it already has.  The holder is the key with the lowest
create revision; every other waiter watches only the key created just before its own, so a
release wakes one waiter, not all of them.  The holder's create revision is its *fencing
token*: it only grows from holder to holder, and :meth:`Mutex.guarded_txn` makes a write
conditional on the lock key still existing with that create revision, so a holder that lost
its lock (a long pause, its lease expired, someone else holds it now) cannot write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType

from raftkv.api import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    PutRequest,
    RangeRequest,
    RangeResponse,
    RequestOp,
    TxnResponse,
)
from raftkv.client import Bytesish, Client, to_bytes
from raftkv.errors import InvalidArgument, LeaseNotFound, LockLost, Timeout, TransientError
from raftkv.recipes._wait import as_prefix, delete_own, first_under, last_before, wait_delete
from raftkv.recipes.session import Session


class Mutex:
    """A fair distributed lock under ``prefix``, owned by ``session`` (one lock per session
    per prefix; a second :meth:`acquire` on the same session re-enters the same key)."""

    def __init__(self, session: Session, prefix: Bytesish) -> None:
        self.session = session
        self.client: Client = session.client
        self.prefix = as_prefix(prefix)
        self._key: bytes | None = None
        self._rev = 0
        self._held = False
        self._lost = asyncio.Event()
        self._lost_task: asyncio.Task[None] | None = None
        self.wakeups = 0
        """How many times a predecessor's delete woke this waiter (for tests and metrics)."""

    # --- state -----------------------------------------------------------------------------

    @property
    def key(self) -> bytes:
        if self._key is None:
            raise InvalidArgument("the lock is not held")
        return self._key

    @property
    def is_held(self) -> bool:
        return self._held and not self.lost

    @property
    def fencing_token(self) -> int:
        """The lock key's create revision: larger for every later holder."""
        if not self._held:
            raise InvalidArgument("the lock is not held")
        return self._rev

    @property
    def lost(self) -> bool:
        """True once the lock was held and then lost (session gone or key deleted)."""
        return self._lost.is_set()

    @property
    def lost_event(self) -> asyncio.Event:
        return self._lost

    # --- acquire / release -----------------------------------------------------------------

    async def acquire(self, timeout: float | None = None) -> int:
        """Block until this session holds the lock; returns the fencing token.

        On timeout (:class:`~raftkv.errors.Timeout`), cancellation, or a lost session
        (:class:`~raftkv.errors.LockLost`), our waiter key is deleted before the error
        propagates, so a waiter that gave up never blocks anyone."""
        if not self.session.alive:
            raise LockLost("session is not alive")
        key = self.prefix + f"{self.session.lease_id:x}".encode()
        resp = await self.client.txn(
            (Compare(key, CompareTarget.CREATE, CompareResult.EQUAL, 0),),
            (PutRequest(key, b"", lease=self.session.lease_id),),
            (RangeRequest(key),),
        )
        if resp.succeeded:
            rev = resp.header.revision
        else:
            got = resp.responses[0]
            assert isinstance(got, RangeResponse)
            if not got.kvs:  # deleted between compare and read: impossible in one txn
                raise LockLost("own lock key vanished")
            rev = got.kvs[0].create_revision
        self._key, self._rev = key, rev
        try:
            async with asyncio.timeout(timeout):
                await self._wait_turn(rev)
        except Timeout:  # the client's own (a TimeoutError too): not the lock's deadline
            await self._abandon()
            raise
        except TimeoutError:
            await self._abandon()
            raise Timeout(f"lock {self.prefix!r} not acquired within {timeout:g}s") from None
        except BaseException:
            await self._abandon()
            raise
        self._held = True
        self._lost.clear()
        self._lost_task = asyncio.create_task(self._watch_session())
        return rev

    async def _wait_turn(self, rev: int) -> None:
        """Wait until no key under the prefix is older than ours (etcd's waitDeletes)."""
        while True:
            pred, read_rev = await last_before(self.client, self.prefix, rev - 1)
            if pred is None:
                break
            await wait_delete(self.client, pred.key, read_rev, self.session.done)
            self.wakeups += 1
        # Our key must still be there (the session may have expired while we waited).
        own = await self.client.get(self.key)
        if not own.kvs or own.kvs[0].create_revision != rev:
            raise LockLost("lock key deleted while waiting (session expired?)")

    async def _abandon(self) -> None:
        key = self._key
        self._key, self._rev, self._held = None, 0, False
        if key is not None and not self.client.closed:
            with contextlib.suppress(TransientError, LeaseNotFound):
                await delete_own(self.client, key)

    async def _watch_session(self) -> None:
        await self.session.done.wait()
        self._lost.set()

    async def release(self) -> None:
        """Delete our lock key (only if it is still ours); the next waiter is woken."""
        if self._lost_task is not None:
            self._lost_task.cancel()
            self._lost_task = None
        key, rev = self._key, self._rev
        self._key, self._rev, self._held = None, 0, False
        if key is not None:
            await self.client.txn(
                (Compare(key, CompareTarget.CREATE, CompareResult.EQUAL, rev),),
                (DeleteRangeRequest(key),),
            )

    async def owner(self) -> bytes | None:
        """The key of the current holder (None if nobody holds or waits)."""
        kv, _ = await first_under(self.client, self.prefix)
        return kv.key if kv is not None else None

    # --- fenced writes ---------------------------------------------------------------------

    def fence(self) -> Compare:
        """The compare that holds only while we still hold the lock."""
        return Compare(self.key, CompareTarget.CREATE, CompareResult.EQUAL, self.fencing_token)

    async def guarded_txn(
        self,
        compare: Iterable[Compare] = (),
        success: Iterable[RequestOp] = (),
        failure: Iterable[RequestOp] = (),
    ) -> TxnResponse:
        """A txn that also requires the lock.  Raises LockLost (and marks the lock lost) if
        the lock key is gone or belongs to another holder; otherwise returns the txn's
        response (``succeeded`` False means one of *your* compares failed; the extra read of
        the lock key is the last entry of ``responses`` then)."""
        if not self._held or self._key is None:
            raise LockLost("the lock is not held")
        key, rev = self._key, self._rev
        resp = await self.client.txn(
            (*compare, self.fence()), tuple(success), (*failure, RangeRequest(key))
        )
        if resp.succeeded:
            return resp
        check = resp.responses[-1]
        assert isinstance(check, RangeResponse)
        if not check.kvs or check.kvs[0].create_revision != rev:
            self._lost.set()
            raise LockLost(f"lock {key!r} (fencing token {rev}) is no longer held")
        return resp

    async def guarded_put(self, key: Bytesish, value: Bytesish, lease: int = 0) -> bool:
        """Put ``key`` only while holding the lock; False (and the lock marked lost) if not."""
        try:
            await self.guarded_txn((), (PutRequest(to_bytes(key), to_bytes(value), lease),))
        except LockLost:
            return False
        return True

    async def __aenter__(self) -> Mutex:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(TransientError):
            await self.release()


# --- try_lock ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LockToken:
    """A lock taken with :func:`try_lock`: the key, its lease, and the fencing token (the
    key's create revision)."""

    key: bytes
    lease_id: int
    fencing_token: int


async def try_lock(client: Client, name: Bytesish, ttl: int) -> LockToken | None:
    """Put-if-absent with expiry (Redis ``SET NX EX``): one txn creates ``name`` attached to a
    fresh ``ttl``-second lease if no such key exists.  None if someone holds it.  Nothing
    renews the lease: the lock ends after ``ttl`` seconds or at :func:`unlock`."""
    key = to_bytes(name)
    lease = (await client.lease_grant(ttl)).id
    try:
        resp = await client.txn(
            (Compare(key, CompareTarget.CREATE, CompareResult.EQUAL, 0),),
            (PutRequest(key, b"", lease=lease),),
        )
    except BaseException:
        with contextlib.suppress(Exception):
            await client.lease_revoke(lease)
        raise
    if not resp.succeeded:
        with contextlib.suppress(LeaseNotFound, TransientError):
            await client.lease_revoke(lease)
        return None
    return LockToken(key, lease, resp.header.revision)


async def unlock(client: Client, token: LockToken) -> None:
    """Release a :func:`try_lock` lock (revoking its lease deletes the key)."""
    with contextlib.suppress(LeaseNotFound):
        await client.lease_revoke(token.lease_id)


# --- RWMutex -------------------------------------------------------------------------------


class RWMutex:
    """Readers share, a writer is exclusive (etcd ``recipes/rwmutex.go``).

    Keys are ``<prefix>/read/<lease>`` and ``<prefix>/write/<lease>``.  A reader waits only for
    the last *writer* created before it; a writer waits for the last key of either kind before
    it; both re-check after each wakeup.  FIFO: a writer queued behind readers is not starved
    by readers that come after it."""

    def __init__(self, session: Session, prefix: Bytesish) -> None:
        self.session = session
        self.client: Client = session.client
        self.prefix = as_prefix(prefix)
        self._key: bytes | None = None
        self._rev = 0

    @property
    def key(self) -> bytes | None:
        return self._key

    async def rlock(self, timeout: float | None = None) -> None:
        await self._lock(b"read/", self.prefix + b"write/", timeout)

    async def lock(self, timeout: float | None = None) -> None:
        await self._lock(b"write/", self.prefix, timeout)

    async def _lock(self, kind: bytes, wait_prefix: bytes, timeout: float | None) -> None:
        if self._key is not None:
            raise InvalidArgument("this RWMutex is already locked by this session")
        key = self.prefix + kind + f"{self.session.lease_id:x}".encode()
        resp = await self.client.txn(
            (Compare(key, CompareTarget.CREATE, CompareResult.EQUAL, 0),),
            (PutRequest(key, b"", lease=self.session.lease_id),),
        )
        if not resp.succeeded:
            raise InvalidArgument(f"{key!r} exists: this session already waits on this lock")
        self._key, self._rev = key, resp.header.revision
        try:
            async with asyncio.timeout(timeout):
                while True:
                    pred, read_rev = await last_before(self.client, wait_prefix, self._rev - 1)
                    if pred is None:
                        return
                    await wait_delete(self.client, pred.key, read_rev, self.session.done)
        except Timeout:  # the client's own (a TimeoutError too): not the lock's deadline
            await self.unlock()
            raise
        except TimeoutError:
            await self.unlock()
            raise Timeout(f"rwlock {self.prefix!r} not acquired within {timeout:g}s") from None
        except BaseException:
            await self.unlock()
            raise

    async def unlock(self) -> None:
        """Release a read or write lock (or give up waiting for one)."""
        key, self._key, self._rev = self._key, None, 0
        if key is not None and not self.client.closed:
            with contextlib.suppress(TransientError):
                await delete_own(self.client, key)

    runlock = unlock
