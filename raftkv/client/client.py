"""The async client: ``async with raftkv.Client(endpoints) as c: await c.put(b"k", b"v")``.

Design (the protocol is :mod:`raftkv.protocol.methods`):

* **One connection per endpoint**, opened lazily, handshake first; requests are multiplexed on
  it by ``req_id`` and a reader task dispatches each reply to its future (unary calls) or
  queue (watch, snapshot streams).  Concurrent callers that need the same endpoint share one
  dial.
* **Exactly-once writes**: the client has a random 63-bit ``client_id``; each write takes the
  next ``seq`` and keeps it across retries, so a retried write is applied once and answered
  with its original result.  The server keeps the last 64 results per client
  (:class:`raftkv.state.fsm.DedupConfig`), so seqs are handed out through a *window*: a new write
  waits while it would be ``write_window`` or more ahead of the oldest write still in flight.
  Without it a write delayed by retries could be evicted from the dedup table before it
  applies and fail with ``InvalidArgument``.
* **Retries**: every attempt goes through :meth:`Client._request`, which redirects on
  ``NotLeader`` (bounded), fails over to the next endpoint on connection errors, and backs off
  exponentially with full jitter on transient errors, all within one overall deadline
  (``command_timeout``, or ``timeout=`` per call) that ends in :class:`~raftkv.errors.Timeout`.
  Reads and exactly-once writes retry freely; membership changes and ``move_leader`` retry
  only when the request surely did not reach a server.
* **Circuit breakers**: one :class:`CircuitBreaker` per endpoint.  Connection errors and
  timeouts (ours, or ``Timeout`` / ``NoLeader`` answered by a member cut off from the leader)
  count as failures; any other answer, even an application error, is a success.  ``_pick``
  skips an endpoint whose breaker is open, so a client is never stuck on a dead or
  partitioned member (etcd issues 8326 / 8660).  Serializable reads go round robin over the
  endpoints whose breakers admit calls; everything else goes to the leader (when known) or
  the current endpoint, as before.
* **Keep-alive**: a connection that has received nothing for ``keepalive_interval`` seconds
  is probed with a cheap STATUS; no answer within ``keepalive_timeout`` closes it (its
  pending calls fail over) and counts as a failure of that endpoint.
* **Endpoint sync** (etcd's ``Client.Sync`` / ``AutoSyncInterval``): :meth:`Client.sync_endpoints`
  replaces the endpoints with the client addresses the current voting members published;
  with ``auto_sync_interval`` it runs in the background, so a long-lived client follows
  membership changes even after every member it was given has been replaced.

Only errors of :mod:`raftkv.errors` leave this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import os
import random
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

from raftkv.api import (
    ALL_KEYS,
    Command,
    CompactionRequest,
    CompactionResponse,
    Compare,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Event,
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
    prefix_end,
)
from raftkv.errors import (
    ConnectionLost,
    FrameTooLarge,
    HandshakeRefused,
    InvalidArgument,
    LeaseNotFound,
    LocalProtocolError,
    NoLeader,
    NotLeader,
    ProposalDropped,
    RaftKVError,
    RemoteProtocolError,
    RequestTooLarge,
    StorageError,
    Timeout,
    TooManyRequests,
    TransientError,
    Unavailable,
    WatchCancelled,
)
from raftkv.protocol import codec, wire
from raftkv.protocol.methods import MAX_REPLY_BYTES, Method, Reply, split_addr

T = TypeVar("T")

Bytesish = bytes | str
"""Keys and values may be given as ``str`` (encoded UTF-8) or ``bytes``."""

DEFAULT_ENDPOINT: Final = "127.0.0.1:2379"


def to_bytes(v: Bytesish) -> bytes:
    """``str`` -> UTF-8 bytes; bytes unchanged."""
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v)
    raise InvalidArgument(f"expected bytes or str, got {type(v).__name__}")


def key_range(
    key: Bytesish, *, prefix: bool = False, range_end: Bytesish | None = None
) -> tuple[bytes, bytes]:
    """``(key, range_end)`` as the protocol wants it.  ``prefix`` on an empty key selects every
    key (etcd's ``--prefix ""``)."""
    k = to_bytes(key)
    if prefix and range_end is not None:
        raise InvalidArgument("give either prefix or range_end, not both")
    if prefix:
        if not k:
            return ALL_KEYS, ALL_KEYS
        return k, prefix_end(k)
    if range_end is not None:
        end = to_bytes(range_end)
        return (ALL_KEYS if not k and end == ALL_KEYS else k), end
    return k, b""


# --- values returned by the client ---------------------------------------------------------


class WatchFilter(IntEnum):
    """etcd's ``WatchCreateRequest.FilterType``: drop events of this kind."""

    NOPUT = 0
    NODELETE = 1


@dataclass(frozen=True, slots=True)
class WatchResponse:
    """All events of one revision (atomic), or a progress notification (``events`` empty)."""

    revision: int
    events: tuple[Event, ...] = ()
    progress: bool = False
    compact_revision: int = 0


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    name: str
    peer_addr: str
    client_addr: str
    is_learner: bool = False


@dataclass(frozen=True, slots=True)
class MemberAddResponse:
    member: Member
    members: tuple[Member, ...]
    cluster_id: int = 0


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """One member's view of itself (etcdctl ``endpoint status``)."""

    endpoint: str
    id: int
    name: str
    cluster_id: int
    leader: int
    term: int
    raft_index: int
    raft_applied_index: int
    commit_index: int
    revision: int
    compact_revision: int
    db_size: int
    hash: int
    is_learner: bool
    version: str
    role: str

    @property
    def is_leader(self) -> bool:
        return self.id != 0 and self.id == self.leader


@dataclass(frozen=True, slots=True)
class EndpointHealth:
    endpoint: str
    health: bool
    took: float
    """Seconds the check took."""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class HashKVResponse:
    endpoint: str
    hash: int
    revision: int
    compact_revision: int


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    path: Path
    size: int
    sha256: str
    revision: int
    index: int


# --- txn helpers (etcd clientv3's OpPut / OpGet / OpDelete) ----------------------------------


def op_put(key: Bytesish, value: Bytesish, *, lease: int = 0, prev_kv: bool = False) -> PutRequest:
    return PutRequest(to_bytes(key), to_bytes(value), lease=lease, prev_kv=prev_kv)


def op_get(
    key: Bytesish, *, prefix: bool = False, range_end: Bytesish | None = None, limit: int = 0
) -> RangeRequest:
    k, end = key_range(key, prefix=prefix, range_end=range_end)
    return RangeRequest(k, end, limit=limit)


def op_delete(
    key: Bytesish, *, prefix: bool = False, range_end: Bytesish | None = None, prev_kv: bool = False
) -> DeleteRangeRequest:
    k, end = key_range(key, prefix=prefix, range_end=range_end)
    return DeleteRangeRequest(k, end, prev_kv=prev_kv)


# --- one connection ------------------------------------------------------------------------

_END: Final = object()


class _Stream:
    """The receiving end of one stream (``req_id``) on a connection."""

    __slots__ = ("conn", "queue", "req_id")

    def __init__(self, conn: _Conn, req_id: int) -> None:
        self.conn = conn
        self.req_id = req_id
        # items: (kind, payload); kind END carries None or a RaftKVError
        self.queue: asyncio.Queue[tuple[Reply, Any]] = asyncio.Queue()

    async def next(self) -> Any:
        """The next stream item; ``_END`` when the stream ended cleanly; raises its error."""
        kind, payload = await self.queue.get()
        if kind == Reply.STREAM:
            return payload
        if isinstance(payload, RaftKVError):
            raise payload
        return _END

    def cancel(self) -> None:
        self.conn.cancel(self.req_id)


class _Conn:
    """One TCP connection to one endpoint, after the handshake."""

    def __init__(
        self,
        addr: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decoder: wire.FrameDecoder,
        leftover: list[Any],
    ) -> None:
        self.addr = addr
        self._reader = reader
        self._writer = writer
        self._decoder = decoder
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._streams: dict[int, _Stream] = {}
        self.error: ConnectionLost | None = None
        self.last_seen = asyncio.get_running_loop().time()
        """When the server last sent us anything (the keep-alive probes quiet connections)."""
        for frame in leftover:
            self._dispatch(frame)
        self._task = asyncio.create_task(self._read_loop(), name=f"raftkv-client-{addr}")

    @classmethod
    async def open(
        cls, addr: str, timeout: float, cluster_id: int, max_frame: int, *, node_id: int = 0
    ) -> _Conn:
        """Dial and handshake.  ConnectionLost if unreachable; HandshakeRefused if refused.
        ``node_id``: the member that dials, when a member forwards a call (0: a client)."""
        try:
            host, port = split_addr(addr)
        except ValueError as e:
            raise InvalidArgument(str(e)) from None
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port)
                hello = wire.Handshake(wire.PROTOCOL_VERSION, cluster_id, node_id, wire.ROLE_CLIENT)
                writer.write(wire.encode_frame(hello.to_wire()))
                decoder = wire.FrameDecoder(max_frame)
                frames: list[Any] = []
                while not frames:
                    data = await reader.read(1 << 16)
                    if not data:
                        raise ConnectionLost(f"{addr} closed the connection during the handshake")
                    frames = decoder.feed(data)
                wire.check_handshake_reply(frames[0])
        except HandshakeRefused:
            _close_writer(writer)
            raise
        except TimeoutError:
            _close_writer(writer)
            raise ConnectionLost(f"cannot connect to {addr}: no answer in {timeout:g}s") from None
        except OSError as e:
            _close_writer(writer)
            raise ConnectionLost(f"cannot connect to {addr}: {e.strerror or e}") from None
        except (RemoteProtocolError, FrameTooLarge) as e:
            _close_writer(writer)
            raise ConnectionLost(f"{addr} does not speak the raftkv protocol: {e}") from None
        except BaseException:
            _close_writer(writer)
            raise
        return cls(addr, reader, writer, decoder, frames[1:])

    @property
    def alive(self) -> bool:
        return self.error is None

    def _send(self, frame: list[Any]) -> None:
        if self.error is not None:
            raise self.error
        try:
            data = wire.encode_frame(frame, wire.MAX_CLIENT_FRAME)
        except FrameTooLarge as e:
            raise RequestTooLarge(str(e)) from None
        except LocalProtocolError as e:
            raise InvalidArgument(str(e)) from None
        self._writer.write(data)

    async def call(self, method: Method, payload: Any) -> Any:
        """Send one request and wait for its answer (the server's error is raised)."""
        req_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._send([req_id, str(method), payload])
        self._pending[req_id] = fut
        try:
            if self._writer.transport.get_write_buffer_size() > (1 << 20):
                await self._writer.drain()
            return await fut
        except asyncio.CancelledError:
            if self._pending.get(req_id) is fut:
                self.cancel(req_id)
            raise
        except ConnectionError as e:  # from drain()
            raise self._lost(f"connection to {self.addr} lost: {e}") from None
        finally:
            self._pending.pop(req_id, None)

    def open_stream(self, method: Method, payload: Any) -> _Stream:
        req_id = next(self._ids)
        stream = _Stream(self, req_id)
        self._send([req_id, str(method), payload])
        self._streams[req_id] = stream
        return stream

    def cancel(self, req_id: int) -> None:
        """Ask the server to stop ``req_id`` (a stream, or a unary call we gave up on)."""
        known = self._streams.pop(req_id, None) is not None or req_id in self._pending
        if known and self.error is None:
            with contextlib.suppress(RaftKVError, RuntimeError):
                self._send([req_id, str(Method.CANCEL), None])

    async def _read_loop(self) -> None:
        reason = f"{self.addr} closed the connection"
        try:
            while True:
                data = await self._reader.read(1 << 16)
                if not data:
                    break
                self.last_seen = asyncio.get_running_loop().time()
                for frame in self._decoder.feed(data):
                    self._dispatch(frame)
        except (RemoteProtocolError, FrameTooLarge) as e:
            reason = f"protocol error from {self.addr}: {e}"
        except (ConnectionError, OSError) as e:
            reason = f"connection to {self.addr} lost: {e}"
        except asyncio.CancelledError:
            reason = "client closed"
        self._lost(reason)

    def _dispatch(self, frame: Any) -> None:
        if (
            not isinstance(frame, list)
            or len(frame) != 3
            or not isinstance(frame[0], int)
            or frame[1] not in (0, 1, 2, 3)
        ):
            raise RemoteProtocolError(f"bad reply frame {frame!r:.80}")
        req_id, kind, payload = frame
        kind = Reply(kind)
        if kind in (Reply.OK, Reply.ERROR):
            fut = self._pending.pop(req_id, None)
            if fut is None or fut.done():
                return  # a call we gave up on
            if kind == Reply.OK:
                fut.set_result(payload)
            else:
                fut.set_exception(_decode_error(payload))
            return
        stream = self._streams.get(req_id)
        if stream is None:
            return  # cancelled
        if kind == Reply.STREAM:
            stream.queue.put_nowait((kind, payload))
        else:
            del self._streams[req_id]
            stream.queue.put_nowait((kind, None if payload is None else _decode_error(payload)))

    def _lost(self, reason: str) -> ConnectionLost:
        """Mark the connection dead and fail everything waiting on it."""
        if self.error is None:
            self.error = ConnectionLost(reason)
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionLost(reason))
            self._pending.clear()
            for stream in self._streams.values():
                stream.queue.put_nowait((Reply.END, ConnectionLost(reason)))
            self._streams.clear()
            _close_writer(self._writer)
        return self.error

    def abort(self) -> None:
        """Close at once, without waiting (from synchronous code)."""
        self._lost("client closed")
        self._task.cancel()

    async def close(self) -> None:
        self._lost("client closed")
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)


def _close_writer(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        with contextlib.suppress(Exception):
            writer.close()


def _decode_error(payload: Any) -> RaftKVError:
    try:
        return codec.decode_error(payload)
    except RemoteProtocolError as e:
        return e


# --- retry policy --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Policy:
    leader: bool
    """Send to the leader (writes, lease clocks, membership)."""
    idempotent: bool
    """Safe to resend after it may have reached a server (reads, exactly-once writes)."""
    spread: bool = False
    """Any healthy member will do: round robin over them (serializable reads)."""


_READ: Final = _Policy(leader=False, idempotent=True)
_SERIAL: Final = _Policy(leader=False, idempotent=True, spread=True)
_WRITE: Final = _Policy(leader=True, idempotent=True)
_ADMIN: Final = _Policy(leader=True, idempotent=False)

_BACKOFF_ERRORS: Final = (NoLeader, TooManyRequests, ProposalDropped, Unavailable, Timeout)
"""Transient conditions at a healthy endpoint: wait, then retry there."""
_FAILOVER_ERRORS: Final = (ConnectionLost, StorageError)
"""The endpoint itself is the problem: retry at another one."""


_UNHEALTHY_ANSWERS: Final = (NoLeader, Timeout)
"""Answers from a member that is up but cut off from the leader: they count against its
breaker and move the client on, so it does not sit on a partitioned member."""


class BreakerState(IntEnum):
    CLOSED = 0
    """Calls go through; consecutive failures are counted."""
    OPEN = 1
    """The endpoint is skipped until the cool-down has passed."""
    HALF_OPEN = 2
    """Cool-down over: calls go through; one success closes, one failure re-opens."""


class CircuitBreaker:
    """One endpoint's breaker: closed -> open after ``threshold`` consecutive failures;
    open -> half-open once ``cooldown`` seconds have passed (checked on :meth:`allow`);
    half-open -> closed on a success, or back to open on a failure.  ``clock`` is injected
    (monotonic seconds) so every transition is testable without sleeping.

    Half-open admits every call rather than exactly one probe: the client has one connection
    per endpoint, so concurrent callers share the outcome of the same dial anyway.
    """

    __slots__ = ("_clock", "cooldown", "failures", "opened_at", "state", "threshold")

    def __init__(
        self, threshold: int = 3, cooldown: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if threshold < 1 or cooldown < 0:
            raise InvalidArgument("breaker threshold must be >= 1 and cooldown >= 0")
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self.state = BreakerState.CLOSED
        self.failures = 0
        """Consecutive failures (reset by a success)."""
        self.opened_at = 0.0

    def allow(self) -> bool:
        """May a call go to this endpoint now?  (Moves open -> half-open after the cool-down.)"""
        if self.state == BreakerState.OPEN and self._clock() - self.opened_at >= self.cooldown:
            self.state = BreakerState.HALF_OPEN
        return self.state != BreakerState.OPEN

    def record_success(self) -> None:
        self.state = BreakerState.CLOSED
        self.failures = 0

    def record_failure(self) -> None:
        self.failures += 1
        if self.state == BreakerState.HALF_OPEN or self.failures >= self.threshold:
            self.state = BreakerState.OPEN
            self.opened_at = self._clock()


_WRITE_RESPONSES: Final[dict[type[Any], tuple[Method, type[Any]]]] = {
    PutRequest: (Method.PUT, PutResponse),
    DeleteRangeRequest: (Method.DELETE_RANGE, DeleteRangeResponse),
    TxnRequest: (Method.TXN, TxnResponse),
    CompactionRequest: (Method.COMPACT, CompactionResponse),
    LeaseGrantRequest: (Method.LEASE_GRANT, LeaseGrantResponse),
    LeaseRevokeRequest: (Method.LEASE_REVOKE, LeaseRevokeResponse),
}


# --- the client ----------------------------------------------------------------------------


class Client:
    """An asyncio client for a raftkv cluster.  Use as an async context manager.

    ``endpoints`` are client addresses (``host:port``) of some members; the client learns the
    leader from redirects.  ``dial_timeout`` bounds one connection attempt, ``command_timeout``
    one call with all its retries (override per call with ``timeout=``); ``attempt_timeout``
    bounds one attempt at one endpoint before failing over (default: half the call's budget).

    Resilience knobs (see docs/client.md): ``backoff_base`` / ``backoff_cap`` shape the
    exponential backoff with full jitter between retries; ``breaker_threshold`` consecutive
    connection failures or timeouts open an endpoint's circuit breaker for
    ``breaker_cooldown`` seconds (``clock`` drives the breakers, for tests); a connection
    quiet for ``keepalive_interval`` seconds is probed and closed if the probe gets no answer
    within ``keepalive_timeout`` (``keepalive_interval=None`` turns probing off);
    ``auto_sync_interval`` seconds between background :meth:`sync_endpoints` calls (None: off,
    as in etcd).
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str = (DEFAULT_ENDPOINT,),
        *,
        dial_timeout: float = 2.0,
        command_timeout: float = 5.0,
        attempt_timeout: float | None = None,
        cluster_id: int = 0,
        client_id: int | None = None,
        write_window: int = 64,
        max_redirects: int = 5,
        backoff_base: float = 0.025,
        backoff_cap: float = 1.0,
        max_frame: int = MAX_REPLY_BYTES,
        rng: random.Random | None = None,
        breaker_threshold: int = 3,
        breaker_cooldown: float = 5.0,
        keepalive_interval: float | None = 10.0,
        keepalive_timeout: float = 3.0,
        auto_sync_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
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
        if write_window < 1:
            raise InvalidArgument("write_window must be at least 1")
        if keepalive_interval is not None and (keepalive_interval <= 0 or keepalive_timeout <= 0):
            raise InvalidArgument("keepalive_interval and keepalive_timeout must be positive")
        if auto_sync_interval is not None and auto_sync_interval <= 0:
            raise InvalidArgument("auto_sync_interval must be positive")
        CircuitBreaker(breaker_threshold, breaker_cooldown)  # validate the knobs early
        self.endpoints: tuple[str, ...] = tuple(dict.fromkeys(eps))
        self.dial_timeout = dial_timeout
        self.command_timeout = command_timeout
        self.attempt_timeout = attempt_timeout
        self.cluster_id = cluster_id
        self.client_id: int = client_id if client_id else (secrets.randbits(63) or 1)
        self.write_window = write_window
        self.max_redirects = max_redirects
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_frame = max_frame
        self._rng = rng or random.Random()
        self._conns: dict[str, _Conn] = {}
        self._dials: dict[str, asyncio.Task[_Conn]] = {}
        self.breaker_threshold = breaker_threshold
        self.breaker_cooldown = breaker_cooldown
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self._keepalive_task: asyncio.Task[None] | None = None
        self.auto_sync_interval = auto_sync_interval
        self._sync_task: asyncio.Task[None] | None = None
        self._pin = 0
        self._rr = 0
        self._leader_addr: str | None = None
        self._addr_of: dict[int, str] = {}
        """Member id -> the endpoint that answered as that member (from response headers):
        resolves a NotLeader hint that comes without the leader's address."""
        self._seq = 0
        self._inflight: set[int] = set()
        self._window_cond: asyncio.Condition | None = None
        self._closed = False

    # --- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection; open streams end, pending calls fail with ConnectionLost."""
        self._closed = True
        for task in (self._keepalive_task, self._sync_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._keepalive_task = self._sync_task = None
        for t in list(self._dials.values()):
            t.cancel()
        for t in list(self._dials.values()):
            with contextlib.suppress(BaseException):
                await t
        self._dials.clear()
        conns = list(self._conns.values())
        self._conns.clear()
        for c in conns:
            await c.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _is_closed(self) -> bool:
        return self._closed

    @property
    def leader_endpoint(self) -> str | None:
        """The leader's client address, as last learnt from a redirect (None if unknown)."""
        return self._leader_addr

    def breaker(self, endpoint: str) -> CircuitBreaker:
        """The circuit breaker of ``endpoint`` (made on first use)."""
        b = self._breakers.get(endpoint)
        if b is None:
            b = CircuitBreaker(self.breaker_threshold, self.breaker_cooldown, self._clock)
            self._breakers[endpoint] = b
        return b

    @property
    def seq(self) -> int:
        """The last write sequence number handed out."""
        return self._seq

    # --- KV --------------------------------------------------------------------------------

    async def put(
        self,
        key: Bytesish,
        value: Bytesish,
        lease: int = 0,
        prev_kv: bool = False,
        *,
        timeout: float | None = None,
    ) -> PutResponse:
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
        policy = _SERIAL if req.serializable else _READ
        plain = await self._request(Method.RANGE, codec.to_plain(req), policy, timeout=timeout)
        return _decode(RangeResponse, plain)

    async def delete(
        self,
        key: Bytesish,
        *,
        prefix: bool = False,
        range_end: Bytesish | None = None,
        prev_kv: bool = False,
        timeout: float | None = None,
    ) -> DeleteRangeResponse:
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
        req = TxnRequest(tuple(compare), tuple(success), tuple(failure))
        return await self._write(req, TxnResponse, timeout)

    async def compact(
        self, revision: int, physical: bool = False, *, timeout: float | None = None
    ) -> CompactionResponse:
        return await self._write(CompactionRequest(revision, physical), CompactionResponse, timeout)

    # --- leases ----------------------------------------------------------------------------

    async def lease_grant(
        self, ttl: int, id: int = 0, *, timeout: float | None = None
    ) -> LeaseGrantResponse:
        return await self._write(LeaseGrantRequest(ttl, id), LeaseGrantResponse, timeout)

    async def lease_revoke(self, id: int, *, timeout: float | None = None) -> LeaseRevokeResponse:
        return await self._write(LeaseRevokeRequest(id), LeaseRevokeResponse, timeout)

    async def lease_time_to_live(
        self, id: int, keys: bool = False, *, timeout: float | None = None
    ) -> LeaseTimeToLiveResponse:
        payload = codec.to_plain(LeaseTimeToLiveRequest(id, keys))
        plain = await self._request(Method.LEASE_TIME_TO_LIVE, payload, _WRITE, timeout=timeout)
        return _decode(LeaseTimeToLiveResponse, plain)

    async def lease_leases(self, *, timeout: float | None = None) -> LeaseLeasesResponse:
        payload = codec.to_plain(LeaseLeasesRequest())
        plain = await self._request(Method.LEASE_LEASES, payload, _READ, timeout=timeout)
        return _decode(LeaseLeasesResponse, plain)

    async def lease_keep_alive_once(
        self, id: int, *, timeout: float | None = None
    ) -> LeaseKeepAliveResponse:
        """Renew lease ``id`` once; LeaseNotFound if it expired or never existed."""
        payload = codec.to_plain(LeaseKeepAliveRequest(id))
        plain = await self._request(Method.LEASE_KEEP_ALIVE, payload, _WRITE, timeout=timeout)
        resp = _decode(LeaseKeepAliveResponse, plain)
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
                if self._is_closed():
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
        return Watcher(self, spec)

    # --- cluster and maintenance -----------------------------------------------------------

    async def status(
        self, endpoint: str | None = None, *, hash: bool = False, timeout: float | None = None
    ) -> EndpointStatus:
        """The status of ``endpoint`` (default: any reachable member).  ``hash=True`` also
        computes the content hash, which walks the member's whole store (about 2 s at a
        million keys): ask for it when comparing members, not to probe liveness."""
        payload = {"hash": True} if hash else {}
        addr, d = await self._admin_dict(Method.STATUS, payload, endpoint, timeout)
        try:
            return EndpointStatus(
                endpoint=addr,
                id=int(d["id"]),
                name=str(d.get("name", "")),
                cluster_id=int(d.get("cluster_id", 0)),
                leader=int(d.get("leader", 0)),
                term=int(d.get("term", 0)),
                raft_index=int(d.get("raft_index", 0)),
                raft_applied_index=int(d.get("raft_applied_index", 0)),
                commit_index=int(d.get("commit_index", 0)),
                revision=int(d.get("revision", 0)),
                compact_revision=int(d.get("compact_revision", 0)),
                db_size=int(d.get("db_size", 0)),
                hash=int(d.get("hash", 0)),
                is_learner=bool(d.get("is_learner", False)),
                version=str(d.get("version", "")),
                role=str(d.get("role", "")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise RemoteProtocolError(f"malformed status answer: {e}") from None

    async def health(
        self, endpoint: str | None = None, *, timeout: float | None = None
    ) -> EndpointHealth:
        """Whether ``endpoint`` has a leader and serves a linearizable read.  An unreachable
        endpoint is reported unhealthy rather than raised."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            addr, d = await self._admin_dict(Method.HEALTH, {}, endpoint, timeout)
        except (TransientError, NotLeader) as e:
            return EndpointHealth(endpoint or "", False, loop.time() - t0, str(e))
        return EndpointHealth(
            addr, bool(d.get("health", False)), loop.time() - t0, str(d.get("reason", ""))
        )

    async def hash_kv(
        self, revision: int = 0, endpoint: str | None = None, *, timeout: float | None = None
    ) -> HashKVResponse:
        addr, d = await self._admin_dict(Method.HASH_KV, {"revision": revision}, endpoint, timeout)
        try:
            return HashKVResponse(
                addr, int(d["hash"]), int(d["revision"]), int(d.get("compact_revision", 0))
            )
        except (KeyError, TypeError, ValueError) as e:
            raise RemoteProtocolError(f"malformed hash_kv answer: {e}") from None

    async def member_list(self, *, timeout: float | None = None) -> tuple[Member, ...]:
        d = _as_dict(await self._request(Method.MEMBER_LIST, {}, _READ, timeout=timeout))
        return _members(d.get("members"))

    async def sync_endpoints(self, *, timeout: float | None = None) -> tuple[str, ...]:
        """Replace the endpoints with the client addresses of the current voting members
        (etcd's ``Client.Sync``); returns them.  Members that have not published a client
        address yet are left out; an empty answer changes nothing.  The endpoint in use stays
        in use if it is still a member."""
        members = await self.member_list(timeout=timeout)
        eps = [m.client_addr for m in members if m.client_addr and not m.is_learner]
        if eps:
            self._set_endpoints(eps)
        return self.endpoints

    def _set_endpoints(self, eps: Sequence[str]) -> None:
        current = self.endpoints[self._pin % len(self.endpoints)]
        new = tuple(dict.fromkeys(eps))
        if new == self.endpoints:
            return
        self.endpoints = new
        self._pin = new.index(current) if current in new else 0
        self._rr %= len(new)
        if self._leader_addr is not None and self._leader_addr not in new:
            self._leader_addr = None

    async def member_add(
        self,
        name: str,
        peer_addr: str,
        client_addr: str = "",
        learner: bool = False,
        *,
        timeout: float | None = None,
    ) -> MemberAddResponse:
        payload = {
            "name": name,
            "peer_addr": peer_addr,
            "client_addr": client_addr,
            "learner": learner,
        }
        d = _as_dict(await self._request(Method.MEMBER_ADD, payload, _ADMIN, timeout=timeout))
        member = _members([d.get("member")])[0]
        return MemberAddResponse(member, _members(d.get("members")), int(d.get("cluster_id", 0)))

    async def member_remove(self, id: int, *, timeout: float | None = None) -> tuple[Member, ...]:
        d = _as_dict(await self._request(Method.MEMBER_REMOVE, {"id": id}, _ADMIN, timeout=timeout))
        return _members(d.get("members"))

    async def member_promote(self, id: int, *, timeout: float | None = None) -> tuple[Member, ...]:
        d = _as_dict(
            await self._request(Method.MEMBER_PROMOTE, {"id": id}, _ADMIN, timeout=timeout)
        )
        return _members(d.get("members"))

    async def move_leader(self, id: int, *, timeout: float | None = None) -> int:
        """Transfer leadership to member ``id``; returns the new leader's id."""
        d = _as_dict(await self._request(Method.MOVE_LEADER, {"id": id}, _ADMIN, timeout=timeout))
        leader = d.get("leader", 0)
        if not isinstance(leader, int):
            raise RemoteProtocolError("malformed move_leader answer")
        if leader == id:
            # Leadership moved: forget the old leader so the next write finds the new one.
            self._leader_addr = None
        return leader

    async def snapshot_save(
        self, path: str | os.PathLike[str], *, timeout: float | None = None
    ) -> SnapshotInfo:
        """Stream a snapshot of one member's state into ``path`` (written to a temporary file,
        checked against the server's SHA-256, fsynced, then renamed)."""
        dest = Path(path)
        tmp = dest.with_name(dest.name + ".part")
        budget = timeout if timeout is not None else max(self.command_timeout, 60.0)
        try:
            async with asyncio.timeout(budget):
                conn = await self._connect(self._pick(_READ), min(self.dial_timeout, budget))
                stream = conn.open_stream(Method.SNAPSHOT, {})
                try:
                    info = await _receive_snapshot(stream, tmp)
                finally:
                    stream.cancel()
        except TimeoutError:
            tmp.unlink(missing_ok=True)
            raise Timeout(f"snapshot not received within {budget:g}s") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
        return SnapshotInfo(dest, info[0], info[1], info[2], info[3])

    # --- the request machinery -------------------------------------------------------------

    async def _write(self, req: Request, resp_cls: type[T], timeout: float | None) -> T:
        method, _ = _WRITE_RESPONSES[type(req)]
        async with self._write_seq() as seq:
            payload = codec.to_plain(Command(req, self.client_id, seq))
            plain = await self._request(method, payload, _WRITE, timeout=timeout)
        return _decode(resp_cls, plain)

    @contextlib.asynccontextmanager
    async def _write_seq(self) -> AsyncIterator[int]:
        """Hand out the next seq once it is within ``write_window`` of the oldest write still
        in flight (see the module docstring), and release it when the write is done."""
        if self._window_cond is None:
            self._window_cond = asyncio.Condition()
        cond = self._window_cond
        async with cond:
            await cond.wait_for(
                lambda: (
                    not self._inflight or self._seq + 1 - min(self._inflight) < self.write_window
                )
            )
            self._seq += 1
            seq = self._seq
            self._inflight.add(seq)
        try:
            yield seq
        finally:
            self._inflight.discard(seq)
            async with cond:
                cond.notify_all()

    async def _admin_dict(
        self, method: Method, payload: Any, endpoint: str | None, timeout: float | None
    ) -> tuple[str, dict[str, Any]]:
        if endpoint is None:
            addr_box: list[str] = []
            res = await self._request(method, payload, _READ, timeout=timeout, used=addr_box)
            return addr_box[-1], _as_dict(res)
        res = await self._request(method, payload, _READ, timeout=timeout, endpoint=endpoint)
        return endpoint, _as_dict(res)

    def _pick(self, policy: _Policy) -> str:
        """The endpoint for the next attempt: the leader if the call wants it and its breaker
        admits calls; else (round robin for ``spread`` calls, the current endpoint otherwise)
        the first endpoint whose breaker is not open.  If every breaker is open, try the
        current endpoint anyway: failing fast would only fail every call."""
        if policy.leader and self._leader_addr is not None:
            if self.breaker(self._leader_addr).allow():
                return self._leader_addr
            self._leader_addr = None
        n = len(self.endpoints)
        start = self._rr if policy.spread else self._pin
        for i in range(n):
            addr = self.endpoints[(start + i) % n]
            if self.breaker(addr).allow():
                if policy.spread:
                    self._rr = (start + i + 1) % n
                else:
                    self._pin = (start + i) % n
                return addr
        return self.endpoints[self._pin % n]

    def _ok(self, addr: str) -> None:
        """``addr`` answered (anything, even an application error): it is alive."""
        self.breaker(addr).record_success()

    def _failed(self, addr: str) -> None:
        """``addr`` failed to answer: count it against its breaker and move on from it."""
        self.breaker(addr).record_failure()
        if addr == self._leader_addr:
            self._leader_addr = None
        if self.endpoints[self._pin % len(self.endpoints)] == addr:
            self._pin = (self._pin + 1) % len(self.endpoints)

    def _learn(self, addr: str, result: Any) -> None:
        """Note which member answered at ``addr``: plain responses are ``[tag, header, ...]``
        with ``header = [tag, cluster_id, member_id, ...]``; status answers carry ``id``."""
        mid: Any = None
        if isinstance(result, list) and len(result) > 1 and isinstance(result[1], list):
            header = result[1]
            mid = header[2] if len(header) > 2 else None
        elif isinstance(result, dict):
            mid = result.get("id")
        if isinstance(mid, int) and mid and not isinstance(mid, bool):
            self._addr_of[mid] = addr

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter."""
        return self._rng.uniform(0, min(self.backoff_cap, self.backoff_base * (2**attempt)))

    async def _connect(self, addr: str, timeout: float) -> _Conn:
        if self._closed:
            raise ConnectionLost("client is closed")
        conn = self._conns.get(addr)
        if conn is not None and conn.alive:
            return conn
        task = self._dials.get(addr)
        if task is None:
            task = asyncio.create_task(
                _Conn.open(addr, timeout, self.cluster_id, self.max_frame),
                name=f"raftkv-dial-{addr}",
            )
            self._dials[addr] = task
            task.add_done_callback(functools.partial(self._dialled, addr))
        return await asyncio.shield(task)

    def _dialled(self, addr: str, task: asyncio.Task[_Conn]) -> None:
        if self._dials.get(addr) is task:
            del self._dials[addr]
        if task.cancelled() or task.exception() is not None:
            return
        conn = task.result()
        if self._closed:
            conn.abort()
            return
        old = self._conns.get(addr)
        self._conns[addr] = conn
        if old is not None and old is not conn:
            old.abort()
        if self.keepalive_interval is not None and self._keepalive_task is None:
            self._keepalive_task = asyncio.create_task(
                self._keepalive_loop(self.keepalive_interval), name="raftkv-client-keepalive"
            )
        if self.auto_sync_interval is not None and self._sync_task is None:
            self._sync_task = asyncio.create_task(
                self._sync_loop(self.auto_sync_interval), name="raftkv-client-sync"
            )

    async def _sync_loop(self, interval: float) -> None:
        """:meth:`sync_endpoints` every ``interval`` seconds; a failed sync keeps the
        endpoints it had (the next one tries again)."""
        while not self._closed:
            await asyncio.sleep(interval)
            with contextlib.suppress(RaftKVError):
                await self.sync_endpoints(timeout=max(interval, self.dial_timeout))

    async def _keepalive_loop(self, interval: float) -> None:
        """Probe every connection that has been quiet for ``interval`` seconds."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            await asyncio.sleep(interval / 2)
            now = loop.time()
            quiet = [c for c in self._conns.values() if c.alive and now - c.last_seen >= interval]
            if quiet:
                await asyncio.gather(*(self._probe(c) for c in quiet))

    async def _probe(self, conn: _Conn) -> None:
        """A cheap STATUS; any answer (even an error) proves the peer alive.  No answer within
        ``keepalive_timeout`` closes the connection (its pending calls fail with
        ConnectionLost and fail over) and counts against the endpoint's breaker."""
        try:
            async with asyncio.timeout(self.keepalive_timeout):
                await conn.call(Method.STATUS, {})
        except TimeoutError:
            conn._lost(f"{conn.addr} did not answer a keep-alive in {self.keepalive_timeout:g}s")
        except ConnectionLost:
            pass
        except RaftKVError:
            return
        else:
            return
        if not self._closed:
            self._failed(conn.addr)

    async def _request(
        self,
        method: Method,
        payload: Any,
        policy: _Policy,
        *,
        timeout: float | None = None,
        endpoint: str | None = None,
        used: list[str] | None = None,
    ) -> Any:
        """One call with redirects, failover and backoff inside one deadline.

        ``endpoint`` pins the call to that member (no failover, no redirect); ``used``
        receives the endpoint that answered."""
        loop = asyncio.get_running_loop()
        budget = self.command_timeout if timeout is None else timeout
        deadline = loop.time() + budget
        per_attempt = self.attempt_timeout if self.attempt_timeout is not None else budget / 2
        attempt = 0
        redirects = 0
        last: RaftKVError | None = None
        target = endpoint
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise _timeout(method, budget, last)
            addr = target or self._pick(policy)
            target = endpoint
            sent = False
            if endpoint is not None and not self.breaker(addr).allow():
                raise ConnectionLost(
                    f"circuit breaker open for {addr}: it failed {self.breaker_threshold} times "
                    f"in a row (retry after {self.breaker_cooldown:g}s)"
                )
            try:
                conn = await self._connect(addr, min(self.dial_timeout, remaining))
                sent = True
                async with asyncio.timeout(min(per_attempt, remaining)):
                    result = await conn.call(method, payload)
                self._ok(addr)
                self._learn(addr, result)
                if policy.leader and endpoint is None:
                    self._leader_addr = addr  # only the leader serves these
                if used is not None:
                    used.append(addr)
                return result
            except TimeoutError:
                last = Timeout(f"{addr} did not answer {method} in time")
                self._failed(addr)
                if endpoint is not None or not policy.idempotent:
                    raise _timeout(method, budget, last) from None
                continue  # the attempt used its time; fail over at once
            except NotLeader as e:
                last = e
                self._ok(addr)
                if endpoint is not None:
                    raise
                lead = e.leader_addr or self._addr_of.get(e.leader_hint, "")
                if lead and lead != addr and redirects < self.max_redirects:
                    redirects += 1
                    self._leader_addr = lead
                    target = lead
                    continue
                if self._leader_addr == addr:
                    self._leader_addr = None
                self._pin = (self._pin + 1) % len(self.endpoints)
            except HandshakeRefused:
                raise
            except _FAILOVER_ERRORS as e:
                last = e
                if self._closed:
                    raise ConnectionLost("client is closed") from None
                self._failed(addr)
                if endpoint is not None or (sent and not policy.idempotent):
                    raise
            except _BACKOFF_ERRORS as e:
                last = e
                if isinstance(e, _UNHEALTHY_ANSWERS):
                    self._failed(addr)  # cut off from the leader: try another member next
                else:
                    self._ok(addr)
                if not policy.idempotent and not isinstance(e, NoLeader | TooManyRequests):
                    raise
            except RaftKVError:
                self._ok(addr)  # an application error is an answer: the endpoint is alive
                raise
            # back off before the next attempt
            pause = self._backoff(attempt)
            if isinstance(last, TooManyRequests):
                # Honour retry_after, plus jitter so refused clients do not return in step.
                ra = last.retry_after
                pause = max(pause, ra + self._rng.uniform(0, ra))
            attempt += 1
            remaining = deadline - loop.time()
            if pause >= remaining:
                raise _timeout(method, budget, last)
            await asyncio.sleep(pause)


def _timeout(method: Method, budget: float, last: RaftKVError | None) -> Timeout:
    why = f" (last error: {type(last).__name__}: {last})" if last is not None else ""
    return Timeout(f"{method} did not complete within {budget:g}s{why}")


# --- watch -------------------------------------------------------------------------------


class Watcher:
    """An open watch: an async iterator of :class:`WatchResponse`, and an async context
    manager that cancels it on exit.  ``revision`` is the store revision when the watch was
    created (after the first item, or after :meth:`start`)."""

    def __init__(self, client: Client, spec: dict[str, Any]) -> None:
        self._client = client
        self._spec = spec
        self._stream: _Stream | None = None
        self._next_rev = int(spec["start_revision"])
        self.revision = 0
        self._done = False

    async def __aenter__(self) -> Watcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()

    def __aiter__(self) -> Watcher:
        return self

    async def start(self) -> None:
        """Open the stream and wait until the server confirms the watch.  After this returns,
        every later write in range will be delivered."""
        if self._stream is None and not self._done:
            await self._open()

    async def _open(self) -> None:
        c = self._client
        loop = asyncio.get_running_loop()
        deadline = loop.time() + c.command_timeout
        attempt = 0
        while True:
            addr = c._pick(_READ)
            try:
                remaining = deadline - loop.time()
                conn = await c._connect(addr, max(0.01, min(c.dial_timeout, remaining)))
                spec = dict(self._spec, start_revision=self._next_rev)
                stream = conn.open_stream(Method.WATCH, spec)
                async with asyncio.timeout(max(0.01, remaining)):
                    first = await stream.next()
                if first is _END:
                    raise WatchCancelled("closed by the server")
                d = _as_dict(first)
                if not d.get("created"):
                    raise RemoteProtocolError("a watch stream must start with 'created'")
                self.revision = int(d.get("revision", 0))
                if self._next_rev == 0:
                    self._next_rev = self.revision + 1
                self._stream = stream
                c._ok(addr)
                return
            except TimeoutError:
                raise Timeout(f"watch not created within {c.command_timeout:g}s") from None
            except (ConnectionLost, NoLeader, StorageError, TooManyRequests) as e:
                if c._closed:
                    raise ConnectionLost("client is closed") from None
                if isinstance(e, TooManyRequests):
                    c._ok(addr)
                    pause = e.retry_after + c._rng.uniform(0, e.retry_after)
                else:
                    c._failed(addr)
                    pause = c._backoff(attempt)
                attempt += 1
                if loop.time() + pause >= deadline:
                    raise _timeout(Method.WATCH, c.command_timeout, e) from None
                await asyncio.sleep(pause)

    async def __anext__(self) -> WatchResponse:
        while True:
            if self._done:
                raise StopAsyncIteration
            if self._stream is None:
                try:
                    await self._open()
                except ConnectionLost:
                    if self._client._closed:
                        self._done = True
                        raise StopAsyncIteration from None
                    raise
                assert self._stream is not None
            try:
                item = await self._stream.next()
            except ConnectionLost:
                self._stream = None
                if self._client._closed:
                    self._done = True
                    raise StopAsyncIteration from None
                continue  # resume at self._next_rev on another connection
            except BaseException:
                self._done = True
                raise
            if item is _END:
                self._done = True
                raise StopAsyncIteration
            resp = _watch_response(item)
            if resp.events or resp.progress:
                self._next_rev = max(self._next_rev, resp.revision + 1)
            return resp

    def cancel(self) -> None:
        """Stop the watch (the server is told; iteration ends)."""
        self._done = True
        if self._stream is not None:
            self._stream.cancel()
            self._stream = None


def _watch_response(item: Any) -> WatchResponse:
    d = _as_dict(item)
    try:
        events = tuple(codec.from_plain(Event, e) for e in d.get("events") or [])
        return WatchResponse(
            revision=int(d["revision"]),
            events=events,
            progress=bool(d.get("progress", False)),
            compact_revision=int(d.get("compact_revision", 0)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise RemoteProtocolError(f"malformed watch item: {e}") from None


# --- helpers -------------------------------------------------------------------------------


async def _receive_snapshot(stream: _Stream, tmp: Path) -> tuple[int, str, int, int]:
    digest = hashlib.sha256()
    size = 0
    trailer: dict[str, Any] | None = None
    with open(tmp, "wb") as f:
        while True:
            item = await stream.next()
            if item is _END:
                break
            d = _as_dict(item)
            if "data" in d:
                chunk = d["data"]
                if not isinstance(chunk, bytes):
                    raise RemoteProtocolError("snapshot chunk must be bytes")
                f.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            else:
                trailer = d
        f.flush()
        os.fsync(f.fileno())
    if trailer is None or "sha256" not in trailer:
        raise ConnectionLost("snapshot stream ended without its checksum")
    if trailer["sha256"] != digest.hexdigest():
        raise RemoteProtocolError("snapshot checksum mismatch: the file is corrupt")
    return (
        size,
        digest.hexdigest(),
        int(trailer.get("revision", 0)),
        int(trailer.get("index", 0)),
    )


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _decode(cls: type[T], plain: Any) -> T:
    return codec.from_plain(cls, plain)


def _as_dict(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise RemoteProtocolError(f"expected a map, got {type(v).__name__}")
    return v


def _members(v: Any) -> tuple[Member, ...]:
    if not isinstance(v, list):
        raise RemoteProtocolError("expected a list of members")
    out: list[Member] = []
    for m in v:
        d = _as_dict(m)
        try:
            out.append(
                Member(
                    id=int(d["id"]),
                    name=str(d.get("name", "")),
                    peer_addr=str(d.get("peer_addr", "")),
                    client_addr=str(d.get("client_addr", "")),
                    is_learner=bool(d.get("is_learner", False)),
                )
            )
        except (KeyError, TypeError, ValueError) as e:
            raise RemoteProtocolError(f"malformed member: {e}") from None
    return tuple(out)
