"""A blocking facade over :class:`raftkv.client.client.Client`, for scripts and the CLI.

The async client runs on a private event loop in a daemon thread; every method submits the
coroutine of the same name there and waits for it, so behaviour (retries, exactly-once,
errors) is exactly the async client's::

    with raftkv.SyncClient(["127.0.0.1:2379"]) as c:
        c.put("k", "v")
        print(c.get("k").kvs)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from raftkv.api import LeaseKeepAliveResponse
from raftkv.client.client import Client
from raftkv.client.values import DEFAULT_ENDPOINT, Bytesish, WatchFilter, WatchResponse
from raftkv.client.watcher import Watcher
from raftkv.errors import ConnectionLost

__all__ = ["SyncClient", "SyncWatcher"]

P = ParamSpec("P")
T = TypeVar("T")
U = TypeVar("U")


def _blocking(
    method: Callable[Concatenate[Client, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[SyncClient, P], T]:
    """``Client.name`` as a blocking ``SyncClient.name`` with the same signature."""

    def call(self: SyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(method(self.aio, *args, **kwargs))

    call.__name__ = method.__name__
    call.__qualname__ = f"SyncClient.{method.__name__}"
    call.__doc__ = method.__doc__
    return call


async def _next(it: AsyncIterator[U]) -> tuple[bool, U | None]:
    try:
        return True, await it.__anext__()
    except StopAsyncIteration:
        return False, None


class SyncClient:
    """The blocking client.  Same constructor arguments (``config=`` a
    :class:`~raftkv.client.config.ClientConfig`, or the single keyword arguments) and methods
    as :class:`Client`;
    ``watch`` and ``lease_keep_alive`` return ordinary iterators."""

    def __init__(
        self, endpoints: Sequence[str] | str = (DEFAULT_ENDPOINT,), **options: Any
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="raftkv-sync-client", daemon=True
        )
        self._thread.start()
        self.aio = Client(endpoints, **options)
        """The underlying async client (use it only from its own loop)."""
        self._closed = False

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise ConnectionLost("client is closed")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result()
        except BaseException:
            fut.cancel()  # Ctrl-C while waiting: do not leave the call running
            raise

    def close(self) -> None:
        """Close the connections and stop the loop thread (idempotent)."""
        if self._closed:
            return
        try:
            self._run(self.aio.close())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5.0)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> SyncClient:
        """The client itself; closed on exit."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def client_id(self) -> int:
        """The id that tags this client's exactly-once writes."""
        return self.aio.client_id

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoints in use (see :meth:`Client.sync_endpoints`)."""
        return self.aio.endpoints

    put = _blocking(Client.put)
    get = _blocking(Client.get)
    range = _blocking(Client.range)
    delete = _blocking(Client.delete)
    txn = _blocking(Client.txn)
    compact = _blocking(Client.compact)
    lease_grant = _blocking(Client.lease_grant)
    lease_revoke = _blocking(Client.lease_revoke)
    lease_time_to_live = _blocking(Client.lease_time_to_live)
    lease_leases = _blocking(Client.lease_leases)
    lease_keep_alive_once = _blocking(Client.lease_keep_alive_once)
    status = _blocking(Client.status)
    health = _blocking(Client.health)
    hash_kv = _blocking(Client.hash_kv)
    member_list = _blocking(Client.member_list)
    sync_endpoints = _blocking(Client.sync_endpoints)
    member_add = _blocking(Client.member_add)
    member_remove = _blocking(Client.member_remove)
    member_promote = _blocking(Client.member_promote)
    member_update = _blocking(Client.member_update)
    alarm_list = _blocking(Client.alarm_list)
    alarm_disarm = _blocking(Client.alarm_disarm)
    defragment = _blocking(Client.defragment)
    move_leader = _blocking(Client.move_leader)
    snapshot_save = _blocking(Client.snapshot_save)

    def watch(
        self,
        key: Bytesish,
        *,
        prefix: bool = False,
        range_end: Bytesish | None = None,
        start_revision: int = 0,
        prev_kv: bool = False,
        filters: Sequence[WatchFilter] = (),
        progress_notify: bool = False,
    ) -> SyncWatcher:
        """A started watch; iterate it for :class:`WatchResponse` items, ``cancel()`` or use
        it as a context manager to stop."""
        w = self.aio.watch(
            key,
            prefix=prefix,
            range_end=range_end,
            start_revision=start_revision,
            prev_kv=prev_kv,
            filters=filters,
            progress_notify=progress_notify,
        )
        self._run(w.start())
        return SyncWatcher(self, w)

    def lease_keep_alive(
        self, id: int, *, interval: float | None = None
    ) -> Iterator[LeaseKeepAliveResponse]:
        """Renew lease ``id`` on every ``next()`` after waiting TTL/3 (see
        :meth:`Client.lease_keep_alive`); close the iterator to stop."""
        agen = self.aio.lease_keep_alive(id, interval=interval)
        try:
            while True:
                more, item = self._run(_next(agen))
                if not more or item is None:
                    return
                yield item
        finally:
            if not self._closed:
                self._run(agen.aclose())


class SyncWatcher:
    """A blocking iterator over a :class:`raftkv.client.client.Watcher`."""

    def __init__(self, client: SyncClient, watcher: Watcher) -> None:
        self._client = client
        self._watcher = watcher

    @property
    def revision(self) -> int:
        """The store revision when the watch was created."""
        return self._watcher.revision

    def __iter__(self) -> SyncWatcher:
        """The watcher is its own iterator."""
        return self

    def __next__(self) -> WatchResponse:
        """Block for the next response (see :meth:`Watcher.__anext__`)."""
        more, item = self._client._run(_next(self._watcher))
        if not more or item is None:
            raise StopIteration
        return item

    def cancel(self) -> None:
        """Stop the watch; iteration ends."""
        if not self._client._closed:
            self._client._loop.call_soon_threadsafe(self._watcher.cancel)

    def __enter__(self) -> SyncWatcher:
        """The watcher itself; cancelled on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()
