"""The etcd v3 gRPC front end of one member: etcd 3.4's services over :class:`ApiService`.

Each handler decodes etcd's message (:mod:`raftkv.server.etcd.convert`), calls the service,
and encodes the answer; a :class:`~raftkv.errors.RaftKVError` becomes etcd's status code and
exact error string (:mod:`raftkv.server.etcd.errors`).  Followers forward inside the service,
so any member answers everything.  Methods not listed in docs/etcd-compatibility.md answer
``UNIMPLEMENTED`` (the Auth service, Hash).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from raftkv import api
from raftkv.errors import LeaseNotFound, NoLeader, RaftKVError
from raftkv.protocol.methods import split_addr
from raftkv.raft import NONE
from raftkv.server.admission import AdmissionControl, TokenBucket
from raftkv.server.etcd import convert
from raftkv.server.etcd.errors import status_of
from raftkv.server.etcd.proto import rpc_pb2
from raftkv.server.etcd.watch import WatchStream
from raftkv.server.node import Node
from raftkv.server.service import ApiService, CallContext

__all__ = ["EtcdServer", "start_etcd_server"]

log = logging.getLogger("raftkv.server.etcd")

GRPC_OVERHEAD = 512 * 1024
"""Bytes a request may exceed the largest command by on the gRPC layer (etcd's margin)."""

SNAPSHOT_PAGE = 512
"""A snapshot stream's data is a whole number of these (etcd's bbolt pages)."""

MAX_TRACKED_CONNECTIONS = 10_000
"""Per-connection rate buckets kept (the least recently used beyond it are forgotten)."""

CTX = CallContext()
"""etcd's clients send no exactly-once tag: every call is anonymous and untagged."""

Unary = Callable[[Any, Any], Awaitable[Any]]


def server_options(max_request_bytes: int) -> list[tuple[str, int]]:
    """gRPC server options.  Clients may ping as often as every second, with or without a
    call open, and are never sent GOAWAY for it (etcd's clients ping quiet streams; a client
    that pings every 2 s must keep its stream)."""
    return [
        ("grpc.max_receive_message_length", max_request_bytes + GRPC_OVERHEAD),
        ("grpc.max_send_message_length", (1 << 31) - 1),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 1_000),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 1_000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_time_ms", 2 * 60 * 60 * 1000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.so_reuseport", 0),
    ]


class EtcdServer:
    """etcd's KV, Lease, Watch, Cluster and Maintenance services for one member."""

    def __init__(
        self,
        node: Node,
        service: ApiService,
        addr: str = "127.0.0.1:0",
        *,
        client_urls: Callable[[api.Member], list[str]] | None = None,
        progress_interval: float = 10.0,
        admission: AdmissionControl | None = None,
    ) -> None:
        self.node = node
        self.service = service
        self.host, self.port = split_addr(addr)
        self.client_urls = client_urls
        """The clientURLs a member is listed with (None: this member's own etcd address for
        itself, none for the others — members publish only their native client address)."""
        self.progress_interval = progress_interval
        """Seconds between progress notifications on quiet watches that asked for them."""
        self.admission = admission if admission is not None else service.admission
        """Rate limits (None: off): the member's bucket, shared with the native front end when
        it is that server's ``admission``, and one bucket per gRPC connection."""
        self._buckets: OrderedDict[str, TokenBucket | None] = OrderedDict()
        self._server: Any = None
        self._watch_streams: set[WatchStream] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server(options=server_options(self.node.fsm.limits.max_request_bytes))
        server.add_generic_rpc_handlers(self._handlers())
        port = server.add_insecure_port(self.address)
        if port == 0:
            raise OSError(f"cannot listen on {self.address}")
        self.port = port
        await server.start()
        self._server = server
        self.node.fatal_listeners.append(self._on_fatal)
        log.info("serving the etcd v3 API on %s", self.address)

    async def stop(self, grace: float = 0.5) -> None:
        if self._server is not None:
            with contextlib.suppress(ValueError):
                self.node.fatal_listeners.remove(self._on_fatal)
            await self._server.stop(grace)
            self._server = None

    def _on_fatal(self, e: BaseException) -> None:
        """The member stopped serving: end every watch stream (UNAVAILABLE), so its clients
        resume their watches on a healthy member."""
        for ws in list(self._watch_streams):
            ws.fail()

    # --- plumbing --------------------------------------------------------------------------

    def _handlers(self) -> list[Any]:
        u = self._unary
        kv = {
            "Range": u(self.range, rpc_pb2.RangeRequest, rpc_pb2.RangeResponse),
            "Put": u(self.put, rpc_pb2.PutRequest, rpc_pb2.PutResponse),
            "DeleteRange": u(
                self.delete_range, rpc_pb2.DeleteRangeRequest, rpc_pb2.DeleteRangeResponse
            ),
            "Txn": u(self.txn, rpc_pb2.TxnRequest, rpc_pb2.TxnResponse),
            "Compact": u(self.compact, rpc_pb2.CompactionRequest, rpc_pb2.CompactionResponse),
        }
        lease = {
            "LeaseGrant": u(
                self.lease_grant, rpc_pb2.LeaseGrantRequest, rpc_pb2.LeaseGrantResponse
            ),
            "LeaseRevoke": u(
                self.lease_revoke, rpc_pb2.LeaseRevokeRequest, rpc_pb2.LeaseRevokeResponse
            ),
            "LeaseTimeToLive": u(
                self.lease_time_to_live,
                rpc_pb2.LeaseTimeToLiveRequest,
                rpc_pb2.LeaseTimeToLiveResponse,
            ),
            "LeaseLeases": u(
                self.lease_leases, rpc_pb2.LeaseLeasesRequest, rpc_pb2.LeaseLeasesResponse
            ),
            "LeaseKeepAlive": grpc.stream_stream_rpc_method_handler(
                self.lease_keep_alive,
                request_deserializer=rpc_pb2.LeaseKeepAliveRequest.FromString,
                response_serializer=rpc_pb2.LeaseKeepAliveResponse.SerializeToString,
            ),
        }
        cluster = {
            "MemberList": u(
                self.member_list, rpc_pb2.MemberListRequest, rpc_pb2.MemberListResponse
            ),
            "MemberAdd": u(self.member_add, rpc_pb2.MemberAddRequest, rpc_pb2.MemberAddResponse),
            "MemberRemove": u(
                self.member_remove, rpc_pb2.MemberRemoveRequest, rpc_pb2.MemberRemoveResponse
            ),
            "MemberPromote": u(
                self.member_promote, rpc_pb2.MemberPromoteRequest, rpc_pb2.MemberPromoteResponse
            ),
            "MemberUpdate": u(
                self.member_update, rpc_pb2.MemberUpdateRequest, rpc_pb2.MemberUpdateResponse
            ),
        }
        maintenance = {
            "Status": u(self.status, rpc_pb2.StatusRequest, rpc_pb2.StatusResponse),
            "HashKV": u(self.hash_kv, rpc_pb2.HashKVRequest, rpc_pb2.HashKVResponse),
            "MoveLeader": u(
                self.move_leader, rpc_pb2.MoveLeaderRequest, rpc_pb2.MoveLeaderResponse
            ),
            "Alarm": u(self.alarm, rpc_pb2.AlarmRequest, rpc_pb2.AlarmResponse),
            "Defragment": u(self.defragment, rpc_pb2.DefragmentRequest, rpc_pb2.DefragmentResponse),
            "Snapshot": grpc.unary_stream_rpc_method_handler(
                self.snapshot,
                request_deserializer=rpc_pb2.SnapshotRequest.FromString,
                response_serializer=rpc_pb2.SnapshotResponse.SerializeToString,
            ),
        }
        watch = {
            "Watch": grpc.stream_stream_rpc_method_handler(
                self.watch,
                request_deserializer=rpc_pb2.WatchRequest.FromString,
                response_serializer=rpc_pb2.WatchResponse.SerializeToString,
            )
        }
        return [
            grpc.method_handlers_generic_handler(f"etcdserverpb.{name}", methods)
            for name, methods in (
                ("KV", kv),
                ("Lease", lease),
                ("Cluster", cluster),
                ("Maintenance", maintenance),
                ("Watch", watch),
            )
        ]

    def admit(self, context: Any) -> None:
        """Before a request: etcd's ``hasleader`` metadata (a client that asks for a member
        with a leader gets ``etcdserver: no leader`` at once from one without), then a token
        for ``context``'s connection (TooManyRequests if the connection or the member is over
        its rate)."""
        if self.node.leader_id == NONE and _wants_leader(context):
            raise NoLeader("this member has no leader and the client requires one (hasleader)")
        if self.admission is None:
            return
        peer = str(context.peer())
        if peer in self._buckets:
            self._buckets.move_to_end(peer)
        else:
            self._buckets[peer] = self.admission.conn_bucket()
            while len(self._buckets) > MAX_TRACKED_CONNECTIONS:
                self._buckets.popitem(last=False)
        self.admission.admit(self._buckets[peer])

    def _unary(self, fn: Unary, req_cls: Any, resp_cls: Any) -> Any:
        async def handle(request: Any, context: Any) -> Any:
            try:
                self.admit(context)
                return await fn(request, context)
            except RaftKVError as err:
                code, msg = status_of(err)
                await context.abort(code, msg)
            except Exception as err:
                if isinstance(err, grpc.aio.AbortError):
                    raise
                log.exception("internal error serving %s", fn.__name__)
                code, msg = status_of(err)
                await context.abort(code, msg)

        return grpc.unary_unary_rpc_method_handler(
            handle,
            request_deserializer=req_cls.FromString,
            response_serializer=resp_cls.SerializeToString,
        )

    # --- KV --------------------------------------------------------------------------------

    async def range(self, r: rpc_pb2.RangeRequest, context: Any) -> rpc_pb2.RangeResponse:
        return convert.range_response(await self.service.range(convert.range_request(r), CTX))

    async def put(self, r: rpc_pb2.PutRequest, context: Any) -> rpc_pb2.PutResponse:
        return convert.put_response(await self.service.put(convert.put_request(r), CTX))

    async def delete_range(
        self, r: rpc_pb2.DeleteRangeRequest, context: Any
    ) -> rpc_pb2.DeleteRangeResponse:
        resp = await self.service.delete_range(convert.delete_range_request(r), CTX)
        return convert.delete_range_response(resp)

    async def txn(self, r: rpc_pb2.TxnRequest, context: Any) -> rpc_pb2.TxnResponse:
        return convert.txn_response(await self.service.txn(convert.txn_request(r), CTX))

    async def compact(
        self, r: rpc_pb2.CompactionRequest, context: Any
    ) -> rpc_pb2.CompactionResponse:
        resp = await self.service.compact(convert.compaction_request(r), CTX)
        return convert.compaction_response(resp)

    # --- leases ----------------------------------------------------------------------------

    async def lease_grant(
        self, r: rpc_pb2.LeaseGrantRequest, context: Any
    ) -> rpc_pb2.LeaseGrantResponse:
        resp = await self.service.lease_grant(convert.lease_grant_request(r), CTX)
        return convert.lease_grant_response(resp)

    async def lease_revoke(
        self, r: rpc_pb2.LeaseRevokeRequest, context: Any
    ) -> rpc_pb2.LeaseRevokeResponse:
        resp = await self.service.lease_revoke(api.LeaseRevokeRequest(r.ID), CTX)
        return convert.lease_revoke_response(resp)

    async def lease_time_to_live(
        self, r: rpc_pb2.LeaseTimeToLiveRequest, context: Any
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        """An unknown lease answers TTL -1, as etcd's does (no error)."""
        resp = await self.service.lease_time_to_live(api.LeaseTimeToLiveRequest(r.ID, r.keys), CTX)
        return convert.lease_time_to_live_response(resp)

    async def lease_leases(
        self, r: rpc_pb2.LeaseLeasesRequest, context: Any
    ) -> rpc_pb2.LeaseLeasesResponse:
        resp = await self.service.lease_leases(api.LeaseLeasesRequest(), CTX)
        return convert.lease_leases_response(resp)

    async def lease_keep_alive(
        self, requests: AsyncIterator[rpc_pb2.LeaseKeepAliveRequest], context: Any
    ) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
        """One answer per request, in order.  An unknown (expired, revoked) lease answers
        TTL 0, as etcd's does; any other error ends the stream with its status."""
        async for req in requests:
            try:
                self.admit(context)
                resp = await self.service.lease_keep_alive(api.LeaseKeepAliveRequest(req.ID), CTX)
            except LeaseNotFound:
                resp = api.LeaseKeepAliveResponse(self.service.header(), req.ID, 0)
            except RaftKVError as err:
                code, msg = status_of(err)
                await context.abort(code, msg)
            yield convert.lease_keep_alive_response(resp)

    # --- watch -----------------------------------------------------------------------------

    async def watch(self, requests: AsyncIterator[rpc_pb2.WatchRequest], context: Any) -> None:
        ws = WatchStream(
            self.service, context, self.progress_interval, admit=lambda: self.admit(context)
        )
        self._watch_streams.add(ws)
        try:
            await ws.run(requests)
        finally:
            self._watch_streams.discard(ws)

    # --- cluster ---------------------------------------------------------------------------

    def _urls(self, m: api.Member) -> list[str]:
        if self.client_urls is not None:
            return self.client_urls(m)
        return [convert.url(self.address)] if m.id == self.node.id else []

    def _members(self, members: tuple[api.Member, ...]) -> list[rpc_pb2.Member]:
        return [convert.member(m, self._urls(m)) for m in members]

    async def member_list(
        self, r: rpc_pb2.MemberListRequest, context: Any
    ) -> rpc_pb2.MemberListResponse:
        resp = await self.service.member_list(api.MemberListRequest(), CTX)
        return rpc_pb2.MemberListResponse(
            header=convert.header(resp.header), members=self._members(resp.members)
        )

    async def member_add(
        self, r: rpc_pb2.MemberAddRequest, context: Any
    ) -> rpc_pb2.MemberAddResponse:
        resp = await self.service.member_add(convert.member_add_request(r), CTX)
        return rpc_pb2.MemberAddResponse(
            header=convert.header(resp.header),
            member=convert.member(resp.member, self._urls(resp.member)),
            members=self._members(resp.members),
        )

    async def member_remove(
        self, r: rpc_pb2.MemberRemoveRequest, context: Any
    ) -> rpc_pb2.MemberRemoveResponse:
        resp = await self.service.member_remove(api.MemberRemoveRequest(r.ID), CTX)
        return rpc_pb2.MemberRemoveResponse(
            header=convert.header(resp.header), members=self._members(resp.members)
        )

    async def member_promote(
        self, r: rpc_pb2.MemberPromoteRequest, context: Any
    ) -> rpc_pb2.MemberPromoteResponse:
        resp = await self.service.member_promote(api.MemberPromoteRequest(r.ID), CTX)
        return rpc_pb2.MemberPromoteResponse(
            header=convert.header(resp.header), members=self._members(resp.members)
        )

    async def member_update(
        self, r: rpc_pb2.MemberUpdateRequest, context: Any
    ) -> rpc_pb2.MemberUpdateResponse:
        resp = await self.service.member_update(convert.member_update_request(r), CTX)
        return rpc_pb2.MemberUpdateResponse(
            header=convert.header(resp.header), members=self._members(resp.members)
        )

    # --- maintenance -----------------------------------------------------------------------

    async def status(self, r: rpc_pb2.StatusRequest, context: Any) -> rpc_pb2.StatusResponse:
        return convert.status_response(await self.service.status(api.StatusRequest(), CTX))

    async def hash_kv(self, r: rpc_pb2.HashKVRequest, context: Any) -> rpc_pb2.HashKVResponse:
        return convert.hash_kv_response(
            await self.service.hash_kv(api.HashKVRequest(r.revision), CTX)
        )

    async def move_leader(
        self, r: rpc_pb2.MoveLeaderRequest, context: Any
    ) -> rpc_pb2.MoveLeaderResponse:
        resp = await self.service.move_leader(api.MoveLeaderRequest(r.targetID), CTX)
        return rpc_pb2.MoveLeaderResponse(header=convert.header(resp.header))

    async def alarm(self, r: rpc_pb2.AlarmRequest, context: Any) -> rpc_pb2.AlarmResponse:
        """This member's alarms (raftkv raises CORRUPT on a member out of service, never
        NOSPACE: it has no space quota)."""
        req = api.AlarmRequest(api.AlarmAction(r.action), r.memberID, api.AlarmType(r.alarm))
        resp = await self.service.alarm(req, CTX)
        return rpc_pb2.AlarmResponse(
            header=convert.header(resp.header),
            alarms=[
                rpc_pb2.AlarmMember(memberID=a.member_id, alarm=a.alarm.name) for a in resp.alarms
            ],
        )

    async def defragment(
        self, r: rpc_pb2.DefragmentRequest, context: Any
    ) -> rpc_pb2.DefragmentResponse:
        resp = await self.service.defragment(api.DefragmentRequest(), CTX)
        return rpc_pb2.DefragmentResponse(header=convert.header(resp.header))

    async def snapshot(
        self, r: rpc_pb2.SnapshotRequest, context: Any
    ) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        """raftkv's snapshot (not a bbolt file) in etcd's stream layout: the data, zero-padded
        to a multiple of 512 bytes (etcdctl checks that a saved file is whole pages plus its
        checksum), then the SHA-256 of the padded data (32 bytes) as the last message."""
        chunks: list[bytes] = []
        try:
            async for chunk in self.service.snapshot(api.SnapshotRequest(), CTX):
                if not chunk.sha256:
                    chunks.append(chunk.data)
        except RaftKVError as err:
            code, msg = status_of(err)
            await context.abort(code, msg)
        size = sum(len(c) for c in chunks)
        chunks.append(bytes(-size % SNAPSHOT_PAGE))
        h = convert.header(self.service.header())
        digest = hashlib.sha256()
        remaining = size + len(chunks[-1]) + digest.digest_size
        for c in chunks:
            if not c:
                continue
            digest.update(c)
            remaining -= len(c)
            yield rpc_pb2.SnapshotResponse(header=h, remaining_bytes=remaining, blob=c)
        yield rpc_pb2.SnapshotResponse(header=h, remaining_bytes=0, blob=digest.digest())


def _wants_leader(context: Any) -> bool:
    """Whether the call carries etcd's ``hasleader=true`` metadata (clientv3's
    ``WithRequireLeader``, which etcdctl's watch uses)."""
    md = context.invocation_metadata() or ()
    return any(k == "hasleader" and v == "true" for k, v in md)


async def start_etcd_server(
    node: Node,
    service: ApiService,
    addr: str = "127.0.0.1:0",
    **options: Any,
) -> EtcdServer:
    """Serve the etcd v3 API of ``node`` on ``addr`` (``host:port``, port 0: any free one;
    the bound port is ``EtcdServer.port``).  Stop it with ``await server.stop()``."""
    server = EtcdServer(node, service, addr, **options)
    await server.start()
    return server
