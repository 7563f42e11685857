"""The async client: ``async with raftkv.Client(endpoints) as c: await c.put(b"k", b"v")``.

:class:`Client` holds the API methods; the machinery lives beside it (the protocol is
:mod:`raftkv.protocol.methods`):

* :mod:`raftkv.client.config`: the knobs, grouped (``Client(endpoints,
  config=ClientConfig(...))``; the single keyword arguments still work);
* :mod:`raftkv.client.connection`: one multiplexed connection per endpoint, opened lazily,
  handshake first;
* :mod:`raftkv.client.router`: endpoint choice, leader affinity, circuit breakers,
  keep-alive probes, and the one retry loop every call and every watch goes through;
  whether an error is retried is the error class's own ``retryable`` (:mod:`raftkv.errors`);
* :mod:`raftkv.client.watcher`: :class:`Watcher`;
* :mod:`raftkv.client.values`: the values the client takes and returns.

**Exactly-once writes**: the client has a random 63-bit ``client_id``; each write takes the
next ``seq`` (:mod:`raftkv.client.writes`, through a window of ``write_window``) and keeps it
across retries, so a retried write is applied once and answered with its original result.

**Endpoint sync** (etcd's ``Client.Sync`` / ``AutoSyncInterval``): :meth:`Client.sync_endpoints`
replaces the endpoints with the client addresses the current voting members published; with
``auto_sync_interval`` it runs in the background, so a long-lived client follows membership
changes even after every member it was given has been replaced.

Only errors of :mod:`raftkv.errors` leave this package.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Final, TypeVar

from raftkv.api import (
    Command,
    CompactionRequest,
    CompactionResponse,
    Compare,
    DeleteRangeRequest,
    DeleteRangeResponse,
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseKeepAliveRequest,
    LeaseKeepAliveResponse,
    LeaseLeasesRequest,
    LeaseLeasesResponse,
    LeaseRevokeRequest,
    LeaseRevokeResponse,
    LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    Request,
    RequestOp,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
)
from raftkv.client.cluster import ClusterCalls
from raftkv.client.config import (
    KWARG_FIELDS,
    UNSET,
    ClientConfig,
    ConfigKnobs,
    Unset,
    config_from_kwargs,
)
from raftkv.client.connection import ClientConnection
from raftkv.client.router import READ, SERIAL, WRITE, BreakerState, CircuitBreaker, Router
from raftkv.client.values import (
    DEFAULT_ENDPOINT,
    Bytesish,
    EndpointHealth,
    EndpointStatus,
    HashKVResponse,
    Member,
    MemberAddResponse,
    SnapshotInfo,
    WatchFilter,
    WatchResponse,
    decode,
    key_range,
    op_delete,
    op_get,
    op_put,
    to_bytes,
)
from raftkv.client.watcher import Watcher
from raftkv.client.writes import WriteWindow
from raftkv.errors import (
    ConnectionLost,
    InvalidArgument,
    LeaseNotFound,
    RaftKVError,
)
from raftkv.protocol import codec
from raftkv.protocol.methods import Method, split_addr

__all__ = [
    "DEFAULT_ENDPOINT",
    "BreakerState",
    "Bytesish",
    "CircuitBreaker",
    "Client",
    "ClientConfig",
    "EndpointHealth",
    "EndpointStatus",
    "HashKVResponse",
    "Member",
    "MemberAddResponse",
    "SnapshotInfo",
    "WatchFilter",
    "WatchResponse",
    "Watcher",
    "key_range",
    "op_delete",
    "op_get",
    "op_put",
    "to_bytes",
]

T = TypeVar("T")

_Conn = ClientConnection
"""The connection class under its former private name (kept for existing callers)."""

_WRITE_RESPONSES: Final[dict[type[Any], tuple[Method, type[Any]]]] = {
    PutRequest: (Method.PUT, PutResponse),
    DeleteRangeRequest: (Method.DELETE_RANGE, DeleteRangeResponse),
    TxnRequest: (Method.TXN, TxnResponse),
    CompactionRequest: (Method.COMPACT, CompactionResponse),
    LeaseGrantRequest: (Method.LEASE_GRANT, LeaseGrantResponse),
    LeaseRevokeRequest: (Method.LEASE_REVOKE, LeaseRevokeResponse),
}


class Client(ConfigKnobs, ClusterCalls):
    """An asyncio client for a raftkv cluster.  Use as an async context manager.

    ``endpoints`` are client addresses (``host:port``, a list or one comma-separated string)
    of some members; the client learns the leader from redirects.  Its knobs are a
    :class:`~raftkv.client.config.ClientConfig` (timeouts, retries and breakers, limits,
    cluster id, endpoint sync; docs/api.md, "The client")::

        Client(eps, config=ClientConfig(timeouts=Timeouts(command=10.0)))

    The single keyword arguments of earlier versions (``dial_timeout``, ``command_timeout``,
    ``attempt_timeout``, ``keepalive_interval``, ``keepalive_timeout``, ``max_redirects``,
    ``backoff_base``, ``backoff_cap``, ``breaker_threshold``, ``breaker_cooldown``,
    ``write_window``, ``max_frame``, ``cluster_id``, ``auto_sync_interval``) still work and
    override the same knob of ``config``; they are readable as attributes too.
    ``client_id`` (default: random) tags exactly-once writes; ``rng`` drives the backoff
    jitter and ``clock`` the breakers (both injectable for tests).
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str = (DEFAULT_ENDPOINT,),
        *,
        config: ClientConfig | None = None,
        client_id: int | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        dial_timeout: float | Unset = UNSET,
        command_timeout: float | Unset = UNSET,
        attempt_timeout: float | Unset | None = UNSET,
        cluster_id: int | Unset = UNSET,
        write_window: int | Unset = UNSET,
        max_redirects: int | Unset = UNSET,
        backoff_base: float | Unset = UNSET,
        backoff_cap: float | Unset = UNSET,
        max_frame: int | Unset = UNSET,
        breaker_threshold: int | Unset = UNSET,
        breaker_cooldown: float | Unset = UNSET,
        keepalive_interval: float | Unset | None = UNSET,
        keepalive_timeout: float | Unset = UNSET,
        auto_sync_interval: float | Unset | None = UNSET,
    ) -> None:
        knobs = {k: v for k, v in locals().items() if k in KWARG_FIELDS}
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        eps = [e.strip() for e in endpoints]
        if not eps:
            raise InvalidArgument("at least one endpoint is required")
        for e in eps:
            try:
                split_addr(e)
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from None
        self.config: ClientConfig = config_from_kwargs(config, knobs)
        """The client's knobs (frozen)."""
        self.client_id: int = client_id if client_id else (secrets.randbits(63) or 1)
        self._router = Router(
            eps, self.config, rng or random.Random(), clock, on_dialled=self._start_sync
        )
        self._sync_task: asyncio.Task[None] | None = None
        self._window = WriteWindow(self.config.limits.write_window)

    # --- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        """The client itself (connections are opened on first use)."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the client (see :meth:`close`)."""
        await self.close()

    async def close(self) -> None:
        """Close every connection; open streams end, pending calls fail with ConnectionLost."""
        self._router.closed = True
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(BaseException):
                await self._sync_task
            self._sync_task = None
        await self._router.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._router.closed

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoints in use (replaced by :meth:`sync_endpoints`)."""
        return self._router.endpoints

    @property
    def leader_endpoint(self) -> str | None:
        """The leader's client address, as last learnt from a redirect (None if unknown)."""
        return self._router.leader_addr

    @property
    def router(self) -> Router:
        """Endpoint choice, breakers, connections and the retry loop of this client."""
        return self._router

    @property
    def _conns(self) -> dict[str, ClientConnection]:
        """The open connections by endpoint (kept for existing callers; see :attr:`router`)."""
        return self._router.conns

    def breaker(self, endpoint: str) -> CircuitBreaker:
        """The circuit breaker of ``endpoint`` (made on first use)."""
        return self._router.breaker(endpoint)

    @property
    def seq(self) -> int:
        """The last write sequence number handed out."""
        return self._window.last

    async def put(
        self,
        key: Bytesish,
        value: Bytesish,
        lease: int = 0,
        prev_kv: bool = False,
        *,
        timeout: float | None = None,
    ) -> PutResponse:
        """Set ``key`` to ``value`` (attached to ``lease`` if given); ``prev_kv`` returns the
        value it replaced.  Exactly-once: a retried put is applied once."""
        req = PutRequest(to_bytes(key), to_bytes(value), lease=lease, prev_kv=prev_kv)
        return await self._write(req, PutResponse, timeout)

    async def get(
        self,
        key: Bytesish,
        *,
        prefix: bool = False,
        range_end: Bytesish | None = None,
        revision: int = 0,
        serializable: bool = False,
        keys_only: bool = False,
        count_only: bool = False,
        limit: int = 0,
        sort_order: SortOrder = SortOrder.NONE,
        sort_target: SortTarget = SortTarget.KEY,
        timeout: float | None = None,
    ) -> RangeResponse:
        """Read ``key``, every key under it (``prefix``) or ``[key, range_end)``, at
        ``revision`` (0: the latest).  Linearizable unless ``serializable`` (then any member may
        answer, possibly stale); ``keys_only``, ``count_only``, ``limit`` and the sort options
        are etcd's."""
        k, end = key_range(key, prefix=prefix, range_end=range_end)
        req = RangeRequest(
            k,
            end,
            limit=limit,
            revision=revision,
            sort_order=sort_order,
            sort_target=sort_target,
            serializable=serializable,
            keys_only=keys_only,
            count_only=count_only,
        )
        return await self.range(req, timeout=timeout)

    async def range(self, req: RangeRequest, *, timeout: float | None = None) -> RangeResponse:
        """A RANGE with every field of :class:`~raftkv.api.RangeRequest`.  Serializable reads
        are spread round robin over the endpoints whose breakers are not open."""
        policy = SERIAL if req.serializable else READ
        plain = await self._router.call(Method.RANGE, codec.to_plain(req), policy, timeout=timeout)
        return decode(RangeResponse, plain)

    async def delete(
        self,
        key: Bytesish,
        *,
        prefix: bool = False,
        range_end: Bytesish | None = None,
        prev_kv: bool = False,
        timeout: float | None = None,
    ) -> DeleteRangeResponse:
        """Delete ``key``, every key under it (``prefix``) or ``[key, range_end)``;
        ``prev_kv`` returns what was deleted.  Exactly-once."""
        k, end = key_range(key, prefix=prefix, range_end=range_end)
        req = DeleteRangeRequest(k, end, prev_kv=prev_kv)
        return await self._write(req, DeleteRangeResponse, timeout)

    async def txn(
        self,
        compare: Iterable[Compare] = (),
        success: Iterable[RequestOp] = (),
        failure: Iterable[RequestOp] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResponse:
        """An atomic transaction: if every ``compare`` holds, run ``success``, else
        ``failure`` (ops from :func:`op_put`, :func:`op_get`, :func:`op_delete`, or nested
        txns).  Exactly-once; a txn without writes is served as a read."""
        req = TxnRequest(tuple(compare), tuple(success), tuple(failure))
        return await self._write(req, TxnResponse, timeout)

    async def compact(
        self, revision: int, physical: bool = False, *, timeout: float | None = None
    ) -> CompactionResponse:
        """Drop the MVCC history before ``revision`` (reads below it then fail with
        Compacted).  ``physical`` waits until the space is reclaimed."""
        return await self._write(CompactionRequest(revision, physical), CompactionResponse, timeout)

    # --- leases ----------------------------------------------------------------------------

    async def lease_grant(
        self, ttl: int, id: int = 0, *, timeout: float | None = None
    ) -> LeaseGrantResponse:
        """Grant a lease of ``ttl`` seconds (``id`` 0: the server picks the id)."""
        return await self._write(LeaseGrantRequest(ttl, id), LeaseGrantResponse, timeout)

    async def lease_revoke(self, id: int, *, timeout: float | None = None) -> LeaseRevokeResponse:
        """Revoke lease ``id``; the keys attached to it are deleted."""
        return await self._write(LeaseRevokeRequest(id), LeaseRevokeResponse, timeout)

    async def lease_time_to_live(
        self, id: int, keys: bool = False, *, timeout: float | None = None
    ) -> LeaseTimeToLiveResponse:
        """The remaining and granted TTL of lease ``id`` (``keys``: with its
        keys).  Asked of the leader, whose clock counts down leases."""
        payload = codec.to_plain(LeaseTimeToLiveRequest(id, keys))
        plain = await self._router.call(Method.LEASE_TIME_TO_LIVE, payload, WRITE, timeout=timeout)
        return decode(LeaseTimeToLiveResponse, plain)

    async def lease_leases(self, *, timeout: float | None = None) -> LeaseLeasesResponse:
        """Every live lease."""
        payload = codec.to_plain(LeaseLeasesRequest())
        plain = await self._router.call(Method.LEASE_LEASES, payload, READ, timeout=timeout)
        return decode(LeaseLeasesResponse, plain)

    async def lease_keep_alive_once(
        self, id: int, *, timeout: float | None = None
    ) -> LeaseKeepAliveResponse:
        """Renew lease ``id`` once; LeaseNotFound if it expired or never existed."""
        payload = codec.to_plain(LeaseKeepAliveRequest(id))
        plain = await self._router.call(Method.LEASE_KEEP_ALIVE, payload, WRITE, timeout=timeout)
        resp = decode(LeaseKeepAliveResponse, plain)
        if resp.ttl <= 0:
            raise LeaseNotFound(id)
        return resp

    async def lease_keep_alive(
        self, id: int, *, interval: float | None = None
    ) -> AsyncGenerator[LeaseKeepAliveResponse, None]:
        """Keep lease ``id`` alive while iterating: renew now, then every TTL/3 (or
        ``interval`` seconds), yielding each answer.  Ends with LeaseNotFound once the lease is
        gone, and quietly when the client is closed."""
        while not self.closed:
            try:
                resp = await self.lease_keep_alive_once(id)
            except ConnectionLost:
                if self._router.closed:  # (not self.closed: mypy narrowed it above)
                    return
                raise
            yield resp
            await asyncio.sleep(interval if interval is not None else max(resp.ttl / 3, 0.05))

    # --- watch -----------------------------------------------------------------------------

    def watch(
        self,
        key: Bytesish,
        *,
        prefix: bool = False,
        range_end: Bytesish | None = None,
        start_revision: int = 0,
        prev_kv: bool = False,
        filters: Iterable[WatchFilter] = (),
        progress_notify: bool = False,
    ) -> Watcher:
        """Watch a key or range: ``async for resp in c.watch(b"k", prefix=True): ...``.

        Each item holds every matching event of one revision.  On a lost connection the
        watcher reconnects (another endpoint if need be) and resumes at the revision after the
        last it delivered, so nothing is missed or repeated.  Ends with WatchCancelled if the
        server cancels it (e.g. the start revision was compacted)."""
        k, end = key_range(key, prefix=prefix, range_end=range_end)
        if not k:
            raise InvalidArgument("watch needs a non-empty key (use prefix=True for all keys)")
        fs = frozenset(WatchFilter(f) for f in filters)
        spec = {
            "key": k,
            "range_end": end,
            "start_revision": start_revision,
            "prev_kv": prev_kv,
            "no_put": WatchFilter.NOPUT in fs,
            "no_delete": WatchFilter.NODELETE in fs,
            "progress_notify": progress_notify,
        }
        return Watcher(self._router, spec)

    # --- the request machinery -------------------------------------------------------------

    async def _write(self, req: Request, resp_cls: type[T], timeout: float | None) -> T:
        method, _ = _WRITE_RESPONSES[type(req)]
        async with self._window.next() as seq:
            payload = codec.to_plain(Command(req, self.client_id, seq))
            plain = await self._router.call(method, payload, WRITE, timeout=timeout)
        return decode(resp_cls, plain)

    def _start_sync(self) -> None:
        """Start the background endpoint sync on the first connection (if configured)."""
        interval = self.config.auto_sync_interval
        if interval is not None and self._sync_task is None and not self.closed:
            self._sync_task = asyncio.create_task(
                self._sync_loop(interval), name="raftkv-client-sync"
            )

    async def _sync_loop(self, interval: float) -> None:
        """:meth:`sync_endpoints` every ``interval`` seconds; a failed sync keeps the
        endpoints it had (the next one tries again)."""
        while not self.closed:
            await asyncio.sleep(interval)
            with contextlib.suppress(RaftKVError):
                await self.sync_endpoints(timeout=max(interval, self.dial_timeout))
