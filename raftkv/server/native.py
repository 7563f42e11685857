"""The client-facing server: the protocol of :mod:`raftkv.protocol.methods` on top of a
:class:`Node`.

One asyncio server per member.  Each connection starts with a handshake, then carries many
requests at once (each request runs as its own task and answers with its ``req_id``).  Errors
are translated here and only here: a :class:`~raftkv.errors.RaftKVError` becomes
``[code, message, details]`` on the wire; anything else is a bug, logged, and answered as an
internal error — it never kills the connection's other requests or the node.  A frame that
breaks the protocol (garbage, oversized) closes that connection with a logged reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from raftkv.api import (
    AlarmRequest,
    Command,
    CompactionRequest,
    DefragmentRequest,
    DeleteRangeRequest,
    HashKVRequest,
    HealthRequest,
    LeaseGrantRequest,
    LeaseKeepAliveRequest,
    LeaseLeasesRequest,
    LeaseRevokeRequest,
    LeaseTimeToLiveRequest,
    MemberAddRequest,
    MemberListRequest,
    MemberPromoteRequest,
    MemberRemoveRequest,
    MemberUpdateRequest,
    MoveLeaderRequest,
    PutRequest,
    RangeRequest,
    SnapshotChunk,
    SnapshotRequest,
    StatusRequest,
    TxnRequest,
    WatchProgressRequest,
    WatchProgressResponse,
)
from raftkv.errors import (
    HandshakeRefused,
    InvalidArgument,
    ProtocolError,
    RaftKVError,
    RemoteProtocolError,
)
from raftkv.protocol import codec, wire
from raftkv.protocol.methods import Method, Reply, split_addr
from raftkv.server.admission import AdmissionControl, TokenBucket
from raftkv.server.forward import LeaderLink
from raftkv.server.node import Node
from raftkv.server.service import ApiService, CallContext
from raftkv.server.watch import WatchHub, WatchSpec

log = logging.getLogger("raftkv.server.native")

Handler = Callable[["_Conn", int, Any], Awaitable[Any]]

_WRITES: dict[str, type[Any]] = {
    Method.PUT: PutRequest,
    Method.DELETE_RANGE: DeleteRangeRequest,
    Method.TXN: TxnRequest,
    Method.COMPACT: CompactionRequest,
    Method.LEASE_GRANT: LeaseGrantRequest,
    Method.LEASE_REVOKE: LeaseRevokeRequest,
}


class _Conn:
    """One client connection: a writer shared by the request tasks, and its open streams."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.closed = False
        self.bucket: TokenBucket | None = None
        """This connection's rate-limit bucket (admission control), made on first use."""
        self.forwarded = False
        """The dialling side is a member forwarding its clients' calls to us."""

    def context(self, client_id: int = 0, seq: int = 0) -> CallContext:
        """The context of a call on this connection."""
        return CallContext(client_id=client_id, seq=seq, forwarded=self.forwarded)

    def send(self, frame: list[Any]) -> None:
        if self.closed:
            return
        try:
            self.writer.write(wire.encode_frame(frame))
        except RaftKVError as e:
            # Our own answer is unencodable or too large: tell the client, not the socket.
            req_id = frame[0] if frame else 0
            self.writer.write(wire.encode_frame([req_id, int(Reply.ERROR), codec.encode_error(e)]))


class Server:
    def __init__(
        self,
        node: Node,
        listen_addr: str,
        max_frame: int = wire.MAX_CLIENT_FRAME,
        test_hooks: bool = False,
        max_reply_bytes: int | None = None,
        admission: AdmissionControl | None = None,
        *,
        max_connections: int | None = None,
        handshake_timeout: float | None = None,
        idle_timeout: float | None = None,
        pre_handshake_max_frame: int = wire.MAX_PRE_HANDSHAKE_FRAME,
        forward_to_leader: bool = True,
    ) -> None:
        # Connection limits: the NodeConfig's (max_client_connections, client_idle_timeout,
        # client_handshake_timeout) unless given here.
        cfg = node.cfg
        if max_connections is None:
            max_connections = cfg.max_client_connections
        if handshake_timeout is None:
            handshake_timeout = cfg.client_handshake_timeout
        if idle_timeout is None:
            idle_timeout = cfg.client_idle_timeout
        if max_connections < 1 or handshake_timeout <= 0 or idle_timeout < 0:
            raise ValueError(
                "max_connections must be >= 1, handshake_timeout > 0 and idle_timeout >= 0"
            )
        self.node = node
        self.host, self.port = split_addr(listen_addr)
        self.max_frame = max_frame
        self.max_connections = max_connections
        """Most client connections open at once (handshaking or not); more are closed at once."""
        self.handshake_timeout = handshake_timeout
        """Seconds, in total, from accept to a complete handshake (slow senders are closed)."""
        self.idle_timeout = idle_timeout
        """Seconds without a request on a connection that holds no open request, watch or
        stream, after which it is closed (0: never)."""
        self.pre_handshake_max_frame = pre_handshake_max_frame
        """The largest frame read before the handshake is done (then ``max_frame``)."""
        self.connections_refused = 0
        self.connections_timed_out = 0
        """Connections closed for the handshake deadline or for being idle."""
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._handlers: dict[str, Handler] = {
            Method.RANGE: self._range,
            Method.LEASE_TIME_TO_LIVE: self._lease_ttl,
            Method.LEASE_LEASES: self._lease_leases,
            Method.WATCH_PROGRESS: self._watch_progress,
        }
        for m, cls in _WRITES.items():
            self._handlers[m] = self._writer(cls)
        self._handlers[Method.LEASE_KEEP_ALIVE] = self._lease_keep_alive
        self.stream_handlers: dict[str, Handler] = {
            Method.WATCH: self._watch,
            Method.SNAPSHOT: self.stream_snapshot,
        }
        self.extra_handlers: dict[str, Handler] = {}
        if test_hooks:
            self.extra_handlers["debug_fault"] = self._debug_fault
        self.hub = WatchHub(lambda: node.fsm)
        self.leader_link = LeaderLink(node.cluster_id, node.id)
        """The connection on which this member forwards calls to the leader."""
        self.service = ApiService(
            node,
            self.hub,
            max_reply_bytes=max_reply_bytes,
            forwarder=self.leader_link if forward_to_leader else None,
            admission=admission,
        )
        """What every call means (this front end only decodes and encodes)."""
        svc = self.service
        admin: list[tuple[Method, type[Any], Callable[[Any, CallContext], Awaitable[Any]]]] = [
            (Method.STATUS, StatusRequest, svc.status),
            (Method.HEALTH, HealthRequest, svc.health),
            (Method.HASH_KV, HashKVRequest, svc.hash_kv),
            (Method.MEMBER_LIST, MemberListRequest, svc.member_list),
            (Method.MEMBER_ADD, MemberAddRequest, svc.member_add),
            (Method.MEMBER_REMOVE, MemberRemoveRequest, svc.member_remove),
            (Method.MEMBER_PROMOTE, MemberPromoteRequest, svc.member_promote),
            (Method.MEMBER_UPDATE, MemberUpdateRequest, svc.member_update),
            (Method.MOVE_LEADER, MoveLeaderRequest, svc.move_leader),
            (Method.ALARM, AlarmRequest, svc.alarm),
            (Method.DEFRAGMENT, DefragmentRequest, svc.defragment),
        ]
        for method, req_cls, call in admin:
            self._handlers[method] = self._admin(req_cls, call)
        self._service_write: dict[type[Any], Callable[[Any, CallContext], Awaitable[Any]]] = {
            PutRequest: self.service.put,
            DeleteRangeRequest: self.service.delete_range,
            TxnRequest: self.service.txn,
            CompactionRequest: self.service.compact,
            LeaseGrantRequest: self.service.lease_grant,
            LeaseRevokeRequest: self.service.lease_revoke,
        }
        self.hub_progress_interval = 10.0
        """Seconds between progress notifications on quiet watches that asked for them."""
        node.listeners.append(self.hub.on_apply)
        node.fatal_listeners.append(self._on_fatal)

    @property
    def admission(self) -> AdmissionControl | None:
        """Rate limits per connection and per member (None: off): the service's."""
        return self.service.admission

    @admission.setter
    def admission(self, value: AdmissionControl | None) -> None:
        self.service.admission = value

    @property
    def max_reply_bytes(self) -> int:
        """The largest reply this member builds (the service's limit)."""
        return self.service.max_reply_bytes

    @max_reply_bytes.setter
    def max_reply_bytes(self, value: int) -> None:
        self.service.max_reply_bytes = value

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connect, self.host, self.port)
        sock = self._server.sockets[0].getsockname()
        self.port = int(sock[1])
        log.info("serving clients on %s", self.address)

    async def stop(self) -> None:
        await self.leader_link.close()
        if self._server is not None:
            self._server.close()
        for c in list(self._conns):
            c.closed = True
            for t in c.tasks.values():
                t.cancel()
            c.writer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    # --- connections -----------------------------------------------------------------------

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if len(self._conns) >= self.max_connections:
            self.connections_refused += 1
            log.warning(
                "refusing client connection %s: %d connections already open (max_connections)",
                peer,
                len(self._conns),
            )
            writer.close()
            return
        conn = _Conn(writer)
        self._conns.add(conn)
        # Until the handshake is done, one small frame at most (then max_frame).
        decoder = wire.FrameDecoder(self.pre_handshake_max_frame)
        loop = asyncio.get_running_loop()
        idle_timer: asyncio.TimerHandle | None = None
        try:
            try:
                await asyncio.wait_for(
                    self._handshake(conn, reader, writer, decoder), self.handshake_timeout
                )
            except TimeoutError:
                self.connections_timed_out += 1
                raise RemoteProtocolError(
                    f"no handshake within {self.handshake_timeout:g}s"
                ) from None
            decoder.max_frame = self.max_frame
            # Idle: no whole request received, and no request, watch or stream open.  A timer
            # checks four times per idle_timeout (no cost on the read path), so a connection
            # is closed between 1 and 1.25 idle_timeouts after it was last busy.
            busy_at = loop.time()

            def check_idle() -> None:
                nonlocal busy_at, idle_timer
                now = loop.time()
                if conn.tasks:
                    busy_at = now
                elif now - busy_at >= self.idle_timeout:
                    self.connections_timed_out += 1
                    log.warning(
                        "closing idle client connection %s: no request for %gs",
                        peer,
                        self.idle_timeout,
                    )
                    writer.close()  # the read below sees EOF
                    return
                idle_timer = loop.call_later(self.idle_timeout / 4, check_idle)

            if self.idle_timeout > 0:
                idle_timer = loop.call_later(self.idle_timeout / 4, check_idle)
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                frames = decoder.feed(data)
                if frames:  # only whole requests count: a trickled partial frame does not
                    busy_at = loop.time()
                for frame in frames:
                    self._dispatch(conn, frame)
                if writer.transport.get_write_buffer_size() > (8 << 20):
                    await writer.drain()
        except (ProtocolError, HandshakeRefused) as e:
            log.warning("closing client connection %s: %s", peer, e)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            if idle_timer is not None:
                idle_timer.cancel()
            conn.closed = True
            for t in conn.tasks.values():
                t.cancel()
            self._conns.discard(conn)
            with contextlib.suppress(Exception):
                writer.close()

    async def _handshake(
        self,
        conn: _Conn,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decoder: wire.FrameDecoder,
    ) -> None:
        """Read and answer the handshake (the caller bounds all of it by handshake_timeout)."""
        frames: list[Any] = []
        while not frames:
            data = await reader.read(1 << 16)
            if not data:
                raise ConnectionError("closed before the handshake")
            frames = decoder.feed(data, max_frames=1)  # anything after it stays buffered
        hs = wire.Handshake.from_wire(frames[0])
        try:
            cid = hs.cluster_id or self.node.cluster_id
            wire.check_handshake(
                wire.Handshake(hs.protocol_version, cid, hs.node_id, hs.role),
                cluster_id=self.node.cluster_id,
                role=wire.ROLE_CLIENT,
            )
        except HandshakeRefused as e:
            writer.write(wire.encode_frame(wire.handshake_reply(str(e))))
            raise
        writer.write(wire.encode_frame(wire.handshake_reply()))
        conn.forwarded = hs.node_id != 0
        if decoder.buffered:
            raise RemoteProtocolError(
                f"{decoder.buffered} bytes of requests sent before the handshake reply"
            )

    def _dispatch(self, conn: _Conn, frame: Any) -> None:
        if not isinstance(frame, list) or len(frame) != 3 or type(frame[0]) is not int:
            raise RemoteProtocolError("a request must be [req_id, method, payload]")
        req_id, method, payload = frame
        if type(method) is not str:
            err = InvalidArgument(f"a method must be a string, got {type(method).__name__}")
            conn.send([req_id, int(Reply.ERROR), codec.encode_error(err)])
            return
        if method == Method.CANCEL:
            t = conn.tasks.pop(req_id, None)
            if t is not None:
                t.cancel()
            return
        if self.service.admission is not None:
            if conn.bucket is None:
                conn.bucket = self.service.caller_bucket()
            try:
                self.service.admit(conn.bucket)
            except RaftKVError as e:  # TooManyRequests: refused before any work is queued
                end = Reply.END if method in self.stream_handlers else Reply.ERROR
                conn.send([req_id, int(end), codec.encode_error(e)])
                return
        stream = self.stream_handlers.get(method)
        if stream is not None:
            conn.tasks[req_id] = asyncio.create_task(
                self._run_stream(conn, req_id, method, stream, payload)
            )
            return
        handler = self._handlers.get(method) or self.extra_handlers.get(method)
        if handler is None:
            conn.send(
                [
                    req_id,
                    int(Reply.ERROR),
                    codec.encode_error(InvalidArgument(f"unknown method {method!r}")),
                ]
            )
            return
        task = asyncio.create_task(self._run(conn, req_id, method, handler, payload))
        conn.tasks[req_id] = task

    async def _run(
        self, conn: _Conn, req_id: int, method: str, handler: Handler, payload: Any
    ) -> None:
        try:
            result = await handler(conn, req_id, payload)
            conn.send([req_id, int(Reply.OK), result])
        except asyncio.CancelledError:
            pass
        except RaftKVError as e:
            conn.send([req_id, int(Reply.ERROR), codec.encode_error(e)])
        except Exception as e:
            log.exception("internal error serving %s", method)
            conn.send(
                [req_id, int(Reply.ERROR), codec.encode_error(RaftKVError(f"internal error: {e}"))]
            )
        finally:
            conn.tasks.pop(req_id, None)

    async def _run_stream(
        self, conn: _Conn, req_id: int, method: str, handler: Handler, payload: Any
    ) -> None:
        """A stream ends with ``[req_id, END, None]``, or ``[req_id, END, error]``."""
        end: Any = None
        try:
            result = await handler(conn, req_id, payload)
            if result is not None:
                conn.send([req_id, int(Reply.STREAM), result])
        except asyncio.CancelledError:
            end = None
        except RaftKVError as e:
            end = codec.encode_error(e)
        except Exception as e:
            log.exception("internal error serving stream %s", method)
            end = codec.encode_error(RaftKVError(f"internal error: {e}"))
        finally:
            conn.tasks.pop(req_id, None)
            conn.send([req_id, int(Reply.END), end])

    # --- KV ----------------------------------------------------------------------------------

    def _writer(self, cls: type[Any]) -> Handler:
        """The handler of one write method: it accepts exactly its own request type."""

        async def handle(conn: _Conn, req_id: int, payload: Any) -> Any:
            call = self._service_write[cls]
            cmd = codec.from_plain(Command, payload)
            if type(cmd.request) is not cls:
                raise InvalidArgument(
                    f"this method takes a {cls.__name__}, not a {type(cmd.request).__name__}"
                )
            return codec.to_plain(await call(cmd.request, conn.context(cmd.client_id, cmd.seq)))

        return handle

    async def _range(self, conn: _Conn, req_id: int, payload: Any) -> Any:
        req = codec.from_plain(RangeRequest, payload)
        return codec.to_plain(await self.service.range(req, conn.context()))

    # --- leases ----------------------------------------------------------------------------

    async def _lease_ttl(self, conn: _Conn, req_id: int, payload: Any) -> Any:
        req = codec.from_plain(LeaseTimeToLiveRequest, payload)
        return codec.to_plain(await self.service.lease_time_to_live(req, conn.context()))

    async def _lease_keep_alive(self, conn: _Conn, req_id: int, payload: Any) -> Any:
        req = codec.from_plain(LeaseKeepAliveRequest, payload)
        return codec.to_plain(await self.service.lease_keep_alive(req, conn.context()))

    async def _lease_leases(self, conn: _Conn, req_id: int, payload: Any) -> Any:
        req = codec.from_plain(LeaseLeasesRequest, payload)
        return codec.to_plain(await self.service.lease_leases(req, conn.context()))

    # --- watch -----------------------------------------------------------------------------

    def _on_fatal(self, e: BaseException) -> None:
        """The member stopped serving: close every connection with a watch open, so its
        clients resume their watches on a healthy member (they reconnect elsewhere)."""
        for c in list(self._conns):
            if any(t.get_name().startswith("watch") for t in c.tasks.values()):
                log.warning("closing a watching client connection: this member stopped serving")
                c.closed = True
                c.writer.close()

    async def _watch(self, conn: _Conn, req_id: int, payload: Any) -> Any:
        spec = WatchSpec.from_plain(payload)
        n_watches = sum(1 for t in conn.tasks.values() if t.get_name().startswith("watch"))
        asyncio.current_task().set_name(f"watch-{req_id}")  # type: ignore[union-attr]

        def send(d: dict[str, Any]) -> None:
            conn.send([req_id, int(Reply.STREAM), d])

        await self.service.watch(
            spec,
            send,
            conn.writer.drain,
            n_watches + 1,
            conn.context(),
            self.hub_progress_interval,
            group=conn,
        )
        return None

    async def _watch_progress(self, conn: _Conn, req_id: int, payload: Any) -> Any:
        codec.from_plain(WatchProgressRequest, payload)  # validate
        n = self.service.watch_progress(conn, conn.context())
        return codec.to_plain(WatchProgressResponse(n))

    # --- cluster and maintenance -----------------------------------------------------------

    def _admin(
        self, req_cls: type[Any], call: Callable[[Any, CallContext], Awaitable[Any]]
    ) -> Handler:
        """The handler of one cluster or maintenance method: its typed request in, its typed
        answer out."""

        no_arguments = all(
            f.default is not dataclasses.MISSING for f in dataclasses.fields(req_cls)
        )

        async def handle(conn: _Conn, req_id: int, payload: Any) -> Any:
            if no_arguments and (payload is None or payload == {}):
                req = req_cls()  # a call that needs no arguments may send none
            else:
                req = codec.from_plain(req_cls, payload)
            return codec.to_plain(await call(req, conn.context()))

        return handle

    async def _debug_fault(self, conn: _Conn, req_id: int, payload: Any) -> Any:
        """TEST ONLY (``RAFTKV_TEST_HOOKS=1``): fault injection for jepsen_like nemeses.

        ``{"block": [ids], "block_out": [ids], "block_in": [ids], "drop": {id: p},
        "delay": {id: s}, "heal": true, "clock_skew": seconds}`` — ``block`` cuts this
        member's traffic to and from those peers (both directions, at this end);
        ``block_out`` / ``block_in`` cut one direction (one-way partitions); ``heal`` undoes
        every link fault.
        """
        p = _dict(payload)
        inner = getattr(self.node.transport, "inner", None)
        faults = getattr(inner, "faults", None)
        if faults is None:
            raise InvalidArgument("this transport has no fault hooks")
        if p.get("heal"):
            faults.heal()
        for pid in p.get("block", []) or []:
            faults.block(int(pid))
        for pid in p.get("block_out", []) or []:
            faults.block_direction(int(pid), outgoing=True)
        for pid in p.get("block_in", []) or []:
            faults.block_direction(int(pid), incoming=True)
        for pid, prob in (p.get("drop") or {}).items():
            faults.set_drop(int(pid), float(prob))
        for pid, secs in (p.get("delay") or {}).items():
            faults.set_delay(int(pid), float(secs))
        if "clock_skew" in p:
            self.node.clock_skew = float(p["clock_skew"])
        return {"ok": True, "id": self.node.id}

    async def stream_snapshot(self, conn: _Conn, req_id: int, payload: Any) -> Any:
        """SNAPSHOT: the node's state as chunks; the last one carries the SHA-256 of the
        whole (see :class:`raftkv.api.SnapshotChunk`)."""
        req = codec.from_plain(SnapshotRequest, payload)
        last: SnapshotChunk | None = None
        async for chunk in self.service.snapshot(req, conn.context()):
            if chunk.sha256:
                last = chunk
                break
            conn.send([req_id, int(Reply.STREAM), codec.to_plain(chunk)])
            await conn.writer.drain()
        if last is None:
            raise RaftKVError("internal error: the snapshot stream ended without its digest")
        return codec.to_plain(last)


def _dict(p: Any) -> dict[str, Any]:
    if not isinstance(p, dict):
        raise InvalidArgument("payload must be a map")
    return p
