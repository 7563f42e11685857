"""A small fake raftkv cluster speaking the client protocol, for client and CLI tests.

Every fake member shares one real :class:`~raftkv.state.fsm.KVStateMachine` (so dedup by
``(client_id, seq)`` and the KV semantics are the real ones) but no Raft: the member marked
leader applies writes at once, the others answer ``NotLeader`` with the leader's address.
Knobs inject the faults the client must survive: drop the connection after applying a write,
answer nothing at all, refuse the handshake, delay answers, answer ``TooManyRequests`` or any
other error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

from raftkv import api
from raftkv.api import (
    Command,
    LeaseLeasesResponse,
    LeaseTimeToLiveRequest,
    RangeRequest,
    ResponseHeader,
)
from raftkv.errors import (
    InvalidArgument,
    MemberNotFound,
    NotLeader,
    RaftKVError,
    TooManyRequests,
)
from raftkv.protocol import codec, wire
from raftkv.protocol.methods import Method, Reply, member_id
from raftkv.server.watch import WatchSpec
from raftkv.state.fsm import KVStateMachine

_WRITES = {
    Method.PUT,
    Method.DELETE_RANGE,
    Method.TXN,
    Method.COMPACT,
    Method.LEASE_GRANT,
    Method.LEASE_REVOKE,
}
_LEADER_ONLY = {
    *_WRITES,
    Method.LEASE_TIME_TO_LIVE,
    Method.MEMBER_ADD,
    Method.MEMBER_REMOVE,
    Method.MEMBER_PROMOTE,
    Method.MOVE_LEADER,
}


@dataclass
class SharedState:
    """What all fake members share: the state machine and a log of every request."""

    fsm: KVStateMachine = field(default_factory=KVStateMachine)
    index: int = 0
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    """(member name, method, payload) of every request received, in order."""
    applied: list[tuple[int, int]] = field(default_factory=list)
    """(client_id, seq) of every write the state machine really applied (not a duplicate)."""
    watchers: list[tuple[WatchSpec, Any]] = field(default_factory=list)
    history: list[tuple[int, tuple[Any, ...]]] = field(default_factory=list)
    """(revision, events) of every applied write, for watches that start in the past."""
    leader: FakeMember | None = None
    members: list[FakeMember] = field(default_factory=list)

    def apply(self, cmd: Command) -> Any:
        self.index += 1
        res = self.fsm.apply_command(self.index, cmd)
        if not res.duplicate:
            self.applied.append((cmd.client_id, cmd.seq))
        if res.events:
            self.history.append((res.revision, res.events))
            for spec, send in list(self.watchers):
                evs = [codec.to_plain(e) for e in res.events if spec.wants(e)]
                if evs:
                    send({"revision": res.revision, "events": evs})
        if res.error is not None:
            raise res.error
        return codec.to_plain(res.response)


class FakeMember:
    def __init__(self, name: str, shared: SharedState) -> None:
        self.name = name
        self.id = member_id(name)
        self.shared = shared
        self.addr = ""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        # fault knobs
        self.drop_after_apply = 0
        """Apply the next N writes, then close the connection instead of answering."""
        self.black_hole = False
        """Accept requests and never answer them."""
        self.refuse_handshake: str | None = None
        self.delay = 0.0
        self.busy = 0
        """Answer the next N requests with TooManyRequests."""
        self.alarms: list[str] = []
        """Alarms this fake member reports (CORRUPT, one per entry)."""
        self.no_leader_addr = False
        """As a follower, answer NotLeader without the leader's address."""
        self.fail_with: dict[str, list[RaftKVError]] = {}
        """Answer the next requests of a method with these errors, one each, in order."""
        self.connections = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.snapshot_data = b""
        self.corrupt_snapshot = False

    @property
    def is_leader(self) -> bool:
        return self.shared.leader is self

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.addr = f"127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop_connections()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    def drop_connections(self) -> None:
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self._writers.clear()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        decoder = wire.FrameDecoder()
        tasks: dict[int, asyncio.Task[None]] = {}
        try:
            frames: list[Any] = []
            while not frames:
                data = await reader.read(1 << 16)
                if not data:
                    return
                frames = decoder.feed(data)
            wire.Handshake.from_wire(frames[0])
            writer.write(wire.encode_frame(wire.handshake_reply(self.refuse_handshake)))
            if self.refuse_handshake:
                return
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    return
                for frame in decoder.feed(data):
                    req_id, method = frame[0], frame[1]
                    if method == Method.CANCEL:
                        self.shared.requests.append((self.name, method, req_id))
                        t = tasks.pop(req_id, None)
                        if t is not None:
                            t.cancel()
                        continue
                    tasks[req_id] = asyncio.create_task(self._serve(writer, frame))
        except (ConnectionError, RaftKVError):
            return
        finally:
            for t in tasks.values():
                t.cancel()
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _serve(self, writer: asyncio.StreamWriter, frame: list[Any]) -> None:
        req_id, method, payload = frame
        self.shared.requests.append((self.name, method, payload))
        if self.black_hole:
            await asyncio.Event().wait()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            failures = self.fail_with.get(method)
            if failures:
                kind = Reply.END if method in (Method.WATCH, Method.SNAPSHOT) else Reply.ERROR
                writer.write(
                    wire.encode_frame([req_id, int(kind), codec.encode_error(failures.pop(0))])
                )
                return
            if method == Method.WATCH:
                await self._watch(writer, req_id, payload)
                return
            if method == Method.SNAPSHOT:
                await self._snapshot(writer, req_id)
                return
            try:
                if self.busy > 0:
                    self.busy -= 1
                    raise TooManyRequests(0.01)
                result = self._handle(method, payload)
            except RaftKVError as e:
                writer.write(wire.encode_frame([req_id, int(Reply.ERROR), codec.encode_error(e)]))
                return
            if method in _WRITES and self.drop_after_apply > 0:
                self.drop_after_apply -= 1
                writer.transport.abort()
                return
            writer.write(wire.encode_frame([req_id, int(Reply.OK), result]))
        finally:
            self.in_flight -= 1

    def _header(self) -> ResponseHeader:
        lead = self.shared.leader
        return ResponseHeader(
            member_id=self.id,
            revision=self.shared.fsm.revision,
            leader_id=lead.id if lead is not None else 0,
        )

    def _handle(self, method: str, payload: Any) -> Any:
        sh = self.shared
        if method in _LEADER_ONLY and not self.is_leader:
            lead = sh.leader
            if lead is None:
                raise NotLeader(0, "")
            raise NotLeader(lead.id, "" if self.no_leader_addr else lead.addr)
        if method in _WRITES:
            return sh.apply(codec.from_plain(Command, payload))
        if method == Method.RANGE:
            return codec.to_plain(sh.fsm.range(codec.from_plain(RangeRequest, payload)))
        if method == Method.LEASE_TIME_TO_LIVE:
            req = codec.from_plain(LeaseTimeToLiveRequest, payload)
            return codec.to_plain(sh.fsm.time_to_live(req, 0.0))
        if method == Method.LEASE_LEASES:
            return codec.to_plain(
                LeaseLeasesResponse(self._header(), tuple(sh.fsm.lessor.leases()))
            )
        if method == Method.STATUS:
            codec.from_plain(api.StatusRequest, payload)
            return codec.to_plain(
                api.StatusResponse(
                    header=self._header(),
                    id=self.id,
                    name=self.name,
                    cluster_id=7,
                    leader=sh.leader.id if sh.leader else 0,
                    term=3,
                    raft_index=sh.index + 10,
                    raft_applied_index=sh.index + 10,
                    commit_index=sh.index + 10,
                    revision=sh.fsm.revision,
                    compact_revision=sh.fsm.compact_revision,
                    db_size=4096,
                    hash=api.Hash64(sh.fsm.hash()),
                    is_learner=False,
                    role="leader" if self.is_leader else "follower",
                    version="0.1.0",
                )
            )
        if method == Method.HEALTH:
            ok = sh.leader is not None
            return codec.to_plain(api.HealthResponse(ok, "" if ok else "no leader"))
        if method == Method.HASH_KV:
            f = sh.fsm
            return codec.to_plain(
                api.HashKVResponse(self._header(), api.Hash64(f.hash()), f.revision, 0)
            )
        if method == Method.MEMBER_LIST:
            members = tuple(m.as_member() for m in sh.members)
            return codec.to_plain(api.MemberListResponse(self._header(), members))
        if method == Method.MEMBER_ADD:
            add = codec.from_plain(api.MemberAddRequest, payload)
            m = FakeMember(add.name, sh)
            m.addr = add.client_addr
            sh.members.append(m)
            header = replace(self._header(), cluster_id=7)
            members = tuple(x.as_member() for x in sh.members)
            return codec.to_plain(
                api.MemberAddResponse(header, m.as_member(learner=add.is_learner), members)
            )
        if method in (Method.MEMBER_REMOVE, Method.MEMBER_PROMOTE):
            cls = (
                api.MemberRemoveRequest
                if method == Method.MEMBER_REMOVE
                else api.MemberPromoteRequest
            )
            mid = codec.from_plain(cls, payload).id
            if not any(m.id == mid for m in sh.members):
                raise MemberNotFound(f"member {mid:x} not found")
            if method == Method.MEMBER_REMOVE:
                sh.members = [m for m in sh.members if m.id != mid]
            members = tuple(m.as_member() for m in sh.members)
            return codec.to_plain(api.MembersResponse(self._header(), members))
        if method == Method.MEMBER_UPDATE:
            upd = codec.from_plain(api.MemberUpdateRequest, payload)
            if not any(m.id == upd.id for m in sh.members):
                raise MemberNotFound(f"member {upd.id:x} not found")
            members = tuple(m.as_member() for m in sh.members)
            return codec.to_plain(api.MembersResponse(self._header(), members))
        if method == Method.ALARM:
            req = codec.from_plain(api.AlarmRequest, payload)
            alarms = tuple(api.AlarmMember(self.id, api.AlarmType.CORRUPT) for _ in self.alarms)
            if req.action != api.AlarmAction.GET:
                alarms = ()
            return codec.to_plain(api.AlarmResponse(self._header(), alarms))
        if method == Method.DEFRAGMENT:
            codec.from_plain(api.DefragmentRequest, payload)
            return codec.to_plain(api.DefragmentResponse(self._header(), 8192, 4096))
        if method == Method.MOVE_LEADER:
            want = codec.from_plain(api.MoveLeaderRequest, payload).target_id
            target = next((m for m in sh.members if m.id == want), None)
            if target is None:
                raise MemberNotFound("no such member")
            sh.leader = target
            return codec.to_plain(api.MoveLeaderResponse(self._header(), target.id))
        if method == Method.LEASE_KEEP_ALIVE:
            raise InvalidArgument("the fake has no lease clock")
        raise InvalidArgument(f"unknown method {method!r}")

    def as_member(self, learner: bool = False) -> api.Member:
        return api.Member(
            id=self.id,
            name=self.name,
            peer_addr=f"127.0.0.1:{10000 + len(self.name)}",
            client_addr=self.addr,
            is_learner=learner,
        )

    async def _watch(self, writer: asyncio.StreamWriter, req_id: int, payload: Any) -> None:
        spec = WatchSpec.from_plain(payload)

        def send(d: dict[str, Any]) -> None:
            if not writer.is_closing():
                writer.write(wire.encode_frame([req_id, int(Reply.STREAM), d]))

        rev = self.shared.fsm.revision
        send({"created": True, "revision": rev, "compact_revision": 0})
        if spec.start_revision and spec.start_revision <= rev:
            for r, events in self.shared.history:  # replay, one item per revision
                evs = [codec.to_plain(e) for e in events if spec.wants(e)]
                if r >= spec.start_revision and evs:
                    send({"revision": r, "events": evs})
        entry = (spec, send)
        self.shared.watchers.append(entry)
        try:
            await asyncio.Event().wait()
        finally:
            with contextlib.suppress(ValueError):
                self.shared.watchers.remove(entry)

    async def _snapshot(self, writer: asyncio.StreamWriter, req_id: int) -> None:
        data = self.snapshot_data
        for off in range(0, len(data), 1000):
            chunk = codec.to_plain(api.SnapshotChunk(data=data[off : off + 1000]))
            writer.write(wire.encode_frame([req_id, int(Reply.STREAM), chunk]))
        digest = hashlib.sha256(data + (b"x" if self.corrupt_snapshot else b"")).hexdigest()
        trailer = codec.to_plain(api.SnapshotChunk(sha256=digest, size=len(data), revision=5))
        writer.write(wire.encode_frame([req_id, int(Reply.STREAM), trailer]))
        writer.write(wire.encode_frame([req_id, int(Reply.END), None]))


class FakeCluster:
    """``async with FakeCluster(3) as fc:`` — members on free 127.0.0.1 ports, n1 leads."""

    def __init__(self, size: int = 3) -> None:
        self.shared = SharedState()
        self.members = [FakeMember(f"n{i}", self.shared) for i in range(1, size + 1)]
        self.shared.members = list(self.members)
        self.shared.leader = self.members[0]

    @property
    def endpoints(self) -> list[str]:
        return [m.addr for m in self.members]

    @property
    def leader(self) -> FakeMember | None:
        return self.shared.leader

    def set_leader(self, m: FakeMember | None) -> None:
        self.shared.leader = m

    async def __aenter__(self) -> FakeCluster:
        for m in self.members:
            await m.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for m in self.members:
            await m.stop()

    def count(self, method: str) -> int:
        return sum(1 for _, meth, _ in self.shared.requests if meth == method)
