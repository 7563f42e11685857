"""A lease kept alive in the background: the liveness every other recipe hangs on.

Model: etcd's ``clientv3/concurrency.Session``.  Keys a recipe writes are attached to the
session's lease, so when the process dies (or is cut off for longer than the TTL) the cluster
deletes them and the lock / leadership / registration goes away by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

from raftkv.client import Client
from raftkv.errors import InvalidArgument, LeaseNotFound, RaftKVError, TransientError


class Session:
    """A lease of ``ttl`` seconds renewed every ``ttl/3`` seconds by a background task.

    ``done`` is set once the lease is lost: it expired (no successful renewal for ``ttl``
    seconds), it was revoked, a keep-alive was refused, or the session was closed.  Use as an
    async context manager (``async with Session(c, ttl=10) as s:``); leaving it revokes the
    lease, which deletes every key attached to it.
    """

    def __init__(
        self,
        client: Client,
        ttl: int = 10,
        *,
        lease_id: int = 0,
        keepalive_interval: float | None = None,
    ) -> None:
        if ttl < 1:
            raise InvalidArgument("session ttl must be at least 1 second")
        self.client = client
        self.ttl = ttl
        self._requested_id = lease_id
        self._lease_id = 0
        self._interval = keepalive_interval if keepalive_interval is not None else ttl / 3
        self.done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def create(cls, client: Client, ttl: int = 10, **kwargs: float) -> Session:
        """Grant the lease and start keeping it alive."""
        s = cls(client, ttl, keepalive_interval=kwargs.get("keepalive_interval"))
        await s.start()
        return s

    @property
    def lease_id(self) -> int:
        if not self._lease_id:
            raise InvalidArgument("session not started")
        return self._lease_id

    @property
    def alive(self) -> bool:
        return self._lease_id != 0 and not self.done.is_set()

    async def start(self) -> None:
        if self._lease_id:
            return
        resp = await self.client.lease_grant(self.ttl, self._requested_id)
        self._lease_id = resp.id
        self._task = asyncio.create_task(self._keep_alive(), name=f"raftkv-session-{resp.id:x}")

    async def _keep_alive(self) -> None:
        """Renew every interval.  Transient errors are retried until the lease must be
        presumed expired (``ttl`` seconds after the last successful renewal)."""
        loop = asyncio.get_running_loop()
        expires = loop.time() + self.ttl
        try:
            while True:
                await asyncio.sleep(self._interval)
                try:
                    remaining = expires - loop.time()
                    if remaining <= 0:
                        return
                    resp = await self.client.lease_keep_alive_once(
                        self._lease_id,
                        timeout=max(0.1, min(remaining, self.client.command_timeout)),
                    )
                    expires = loop.time() + resp.ttl
                except LeaseNotFound:
                    return
                except TransientError:
                    if self.client.closed or loop.time() >= expires:
                        return
                except RaftKVError:
                    return
        finally:
            self.done.set()

    def orphan(self) -> None:
        """Stop renewing without revoking: the lease expires after its TTL."""
        if self._task is not None:
            self._task.cancel()

    async def close(self) -> None:
        """Stop renewing and revoke the lease (its keys are deleted at once)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        self.done.set()
        if self._lease_id and not self.client.closed:
            with contextlib.suppress(LeaseNotFound, TransientError):
                await self.client.lease_revoke(self._lease_id)

    async def __aenter__(self) -> Session:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
