"""The API service: what each etcd v3 call means on this member, whatever wire it came on.

One :class:`ApiService` per member, one typed async method per call.  Each takes the
:mod:`raftkv.api` request value (and a :class:`CallContext` saying who asks and how) and
returns the response value.  Every API rule lives here, not in a front end:

* **Leader checks and forwarding.**  Writes, lease calls (their clocks live on the leader) and
  membership changes are decided by the leader.  On a follower the service forwards the call
  to the leader (:mod:`raftkv.server.forward`) and returns its answer, so a client that knows
  one member can do everything.  A call that was itself forwarded is never forwarded again: a
  member that lost leadership in between answers ``NotLeader`` and the first member passes that
  on (its client retries).  Forwarded writes keep their exactly-once tag ``(client_id, seq)``,
  so a retried forward is applied once.
* **Reads.**  Linearizable reads are served by any member after a read barrier (ReadIndex);
  serializable reads from local state at once.
* **Limits.**  A reply over ``max_reply_bytes`` is refused with ``ReplyTooLarge`` before it is
  built; the proposal queue bound is the node's (``TooManyRequests``).
* **Lease authority.**  Keep-alive and time-to-live are answered by the leader once it serves
  the leases (a new leader takes them over a moment after its election).
* **Authorization.**  Every call passes :meth:`Authorizer.check` first, with the key range it
  touches; the default lets everything through.

* **Admission.**  Rate limits per caller and per member (:meth:`admit`); a front end keeps
  one bucket per connection or stream and asks before it queues any work.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from raftkv import api
from raftkv.api import (
    CompactionRequest,
    CompactionResponse,
    DeleteRangeRequest,
    DeleteRangeResponse,
    KeyValue,
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
    ResponseHeader,
    TxnRequest,
    TxnResponse,
)
from raftkv.errors import InvalidArgument, NoLeader, NotLeader, RaftKVError, ReplyTooLarge
from raftkv.protocol import codec
from raftkv.protocol.methods import Method
from raftkv.server.admission import AdmissionControl, TokenBucket
from raftkv.server.membership import MemberRecord, node_snapshot
from raftkv.server.node import Node
from raftkv.server.watch import Sender, WatchHub, WatchSpec

__all__ = [
    "AllowAll",
    "ApiService",
    "Authorizer",
    "CallContext",
    "Forwarder",
    "Permission",
    "is_read_only",
    "reply_bytes",
]

R = TypeVar("R")

SNAPSHOT_CHUNK = 1 << 20
"""Bytes per snapshot chunk."""


class Permission(StrEnum):
    """What a call does to the key range it names (etcd's read / write permissions), or that
    it is a cluster administration call."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who makes a call, and how it arrived."""

    client_id: int = 0
    """The exactly-once tag of a write: the client's id (0: none)."""
    seq: int = 0
    """The exactly-once tag of a write: the client's sequence number."""
    user: str = ""
    """The authenticated user, once a front end authenticates ("": anonymous)."""
    forwarded: bool = False
    """The call was forwarded here by another member: never forward it again."""


ANONYMOUS = CallContext()


class Authorizer(Protocol):
    """Decides whether ``ctx`` may do ``perm`` on ``[key, range_end)``; raises a
    :class:`~raftkv.errors.RaftKVError` (``PermissionDenied`` and the like) if not."""

    def check(self, ctx: CallContext, perm: Permission, key: bytes, range_end: bytes) -> None: ...


class AllowAll:
    """The authorizer while authentication is off: everyone may do everything."""

    def check(self, ctx: CallContext, perm: Permission, key: bytes, range_end: bytes) -> None:
        return None


class Forwarder(Protocol):
    """Sends a call to the leader and returns its answer (the plain payload of the native
    protocol), raising the leader's error."""

    async def call(self, leader_addr: str, method: Method, payload: Any) -> Any: ...

    async def close(self) -> None: ...


class ApiService:
    """The etcd v3 API of one member."""

    def __init__(
        self,
        node: Node,
        hub: WatchHub,
        *,
        max_reply_bytes: int | None = None,
        forwarder: Forwarder | None = None,
        authorizer: Authorizer | None = None,
        admission: AdmissionControl | None = None,
    ) -> None:
        self.node = node
        self.hub = hub
        self.max_reply_bytes = (
            node.cfg.max_reply_bytes if max_reply_bytes is None else max_reply_bytes
        )
        """The largest reply this member builds (ranges and txns beyond it: ReplyTooLarge)."""
        self.forwarder = forwarder
        """How a follower reaches the leader (None: it answers NotLeader instead)."""
        self.authorizer: Authorizer = authorizer or AllowAll()
        self.admission = admission
        """Rate limits per caller and per member (None: off); see raftkv.server.admission."""
        self.forwarded = 0
        """Calls this member forwarded to the leader."""

    # --- admission -------------------------------------------------------------------------

    def caller_bucket(self) -> TokenBucket | None:
        """A rate bucket for a new caller (a connection, a stream); None when per-caller
        limits are off.  The front end keeps it and passes it to :meth:`admit`."""
        return self.admission.conn_bucket() if self.admission is not None else None

    def admit(self, bucket: TokenBucket | None) -> None:
        """Admission, before any work is queued: one token from the caller's bucket and one
        from the member's, or TooManyRequests(retry_after) taking none."""
        if self.admission is not None:
            self.admission.admit(bucket)

    # --- shared rules ----------------------------------------------------------------------

    def header(self, revision: int | None = None) -> ResponseHeader:
        n = self.node
        return ResponseHeader(
            cluster_id=n.cluster_id,
            member_id=n.id,
            revision=n.fsm.revision if revision is None else revision,
            raft_term=n.term,
            leader_id=n.leader_id,
        )

    def _with_header(self, resp: R) -> R:
        h = getattr(resp, "header", None)
        if isinstance(h, ResponseHeader):
            return replace(resp, header=self.header(h.revision))  # type: ignore[type-var]
        return resp

    def _check_reply(self, resp: object) -> None:
        """ReplyTooLarge before a reply over ``max_reply_bytes`` is encoded."""
        size = reply_bytes(resp)
        if size > self.max_reply_bytes:
            raise ReplyTooLarge(
                f"the reply of about {size} bytes exceeds this member's reply limit of "
                f"{self.max_reply_bytes} bytes (max_reply_bytes): read fewer keys per request "
                "(set a limit, e.g. `raftkv get --limit N`, and continue from the last key "
                "returned plus a zero byte), or ask for keys_only or count_only"
            )

    async def _barrier(self) -> None:
        if "stale_reads" not in self.node.cfg.unsafe:
            await self.node.read_barrier()

    def _leads(self) -> bool:
        return self.node.is_leader

    async def _may_forward(self, ctx: CallContext) -> str | None:
        """The leader's client address if this call should go there, else None (the
        caller then runs it here, and a follower raises NotLeader).  During an election, and
        just after one while the new leader's client address reaches the followers through
        the log, a follower waits up to two election timeouts (as etcd waits for a leader)
        rather than answer at once: etcd clients do not retry a write on "no leader" or
        "leader changed"."""
        node = self.node
        if self.forwarder is None or ctx.forwarded:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * node.election_timeout()
        while True:
            node.check_serving()
            if node.is_leader:
                return None
            try:
                addr = node.not_leader().leader_addr
            except NoLeader:
                if loop.time() >= deadline:
                    raise
            else:
                if addr or loop.time() >= deadline:
                    return addr or None
            await asyncio.sleep(node.cfg.tick_interval)

    async def _on_leader(
        self,
        ctx: CallContext,
        method: Method,
        payload: Callable[[], Any],
        decode: Callable[[Any], R],
        local: Callable[[], Awaitable[R]],
    ) -> R:
        """Run ``local`` if this member leads; otherwise forward to the leader.  A leader
        that steps down during ``local`` raises NotLeader, and the call is forwarded to the
        new leader once (a write that raced the step-down was not applied: NotLeader is
        raised before anything enters the log)."""
        addr = await self._may_forward(ctx)
        if addr is None:
            try:
                return await local()
            except NotLeader as e:
                if self.forwarder is None or ctx.forwarded or not e.leader_addr:
                    raise
                addr = e.leader_addr
        assert self.forwarder is not None
        self.forwarded += 1
        return self._with_header(decode(await self.forwarder.call(addr, method, payload())))

    # --- KV --------------------------------------------------------------------------------

    async def range(self, req: RangeRequest, ctx: CallContext = ANONYMOUS) -> RangeResponse:
        """Keys in ``[key, range_end)``: linearizable after a read barrier, or serializable
        from local state."""
        self.authorizer.check(ctx, Permission.READ, req.key, req.range_end)
        self.node.check_serving()  # a member that lost state or storage serves no reads
        if not req.serializable:
            await self._barrier()
        resp = self.node.fsm.range(req)
        self._check_reply(resp)
        return self._with_header(resp)

    async def put(self, req: PutRequest, ctx: CallContext = ANONYMOUS) -> PutResponse:
        self.authorizer.check(ctx, Permission.WRITE, req.key, b"")
        return await self._write(Method.PUT, req, PutResponse, ctx)

    async def delete_range(
        self, req: DeleteRangeRequest, ctx: CallContext = ANONYMOUS
    ) -> DeleteRangeResponse:
        self.authorizer.check(ctx, Permission.WRITE, req.key, req.range_end)
        return await self._write(Method.DELETE_RANGE, req, DeleteRangeResponse, ctx)

    async def txn(self, req: TxnRequest, ctx: CallContext = ANONYMOUS) -> TxnResponse:
        """A transaction.  A read-only one is served like a range (read barrier, then local
        state) and never enters the log, as etcd does."""
        for perm, key, end in txn_permissions(req):
            self.authorizer.check(ctx, perm, key, end)
        if is_read_only(req):
            self.node.check_serving()
            await self._barrier()
            resp = self.node.fsm.read_txn(req)
            self._check_reply(resp)
            return self._with_header(resp)
        return await self._write(Method.TXN, req, TxnResponse, ctx)

    async def compact(
        self, req: CompactionRequest, ctx: CallContext = ANONYMOUS
    ) -> CompactionResponse:
        self.authorizer.check(ctx, Permission.ADMIN, b"", b"")
        return await self._write(Method.COMPACT, req, CompactionResponse, ctx)

    async def _write(self, method: Method, req: Any, resp_cls: type[R], ctx: CallContext) -> R:
        """Propose a client write through the log (on the leader) and wait for its answer."""

        async def local() -> R:
            result = await self.node.propose_client(req, ctx.client_id, ctx.seq)
            if result.error is not None:
                raise result.error
            resp = result.response
            self._check_reply(resp)
            if not isinstance(resp, resp_cls):
                raise RaftKVError(f"internal error: {method} answered {type(resp).__name__}")
            return self._with_header(resp)

        if self._leads():  # the common case, without the forwarding machinery
            try:
                return await local()
            except NotLeader:
                if self.forwarder is None or ctx.forwarded:
                    raise

        def payload() -> Any:
            return codec.to_plain(api.Command(request=req, client_id=ctx.client_id, seq=ctx.seq))

        return await self._on_leader(
            ctx, method, payload, lambda p: codec.from_plain(resp_cls, p), local
        )

    # --- leases ----------------------------------------------------------------------------

    async def lease_grant(
        self, req: LeaseGrantRequest, ctx: CallContext = ANONYMOUS
    ) -> LeaseGrantResponse:
        return await self._write(Method.LEASE_GRANT, req, LeaseGrantResponse, ctx)

    async def lease_revoke(
        self, req: LeaseRevokeRequest, ctx: CallContext = ANONYMOUS
    ) -> LeaseRevokeResponse:
        return await self._write(Method.LEASE_REVOKE, req, LeaseRevokeResponse, ctx)

    async def lease_keep_alive(
        self, req: LeaseKeepAliveRequest, ctx: CallContext = ANONYMOUS
    ) -> LeaseKeepAliveResponse:
        """Renew a lease (the leader's clock restarts its TTL)."""

        async def local() -> LeaseKeepAliveResponse:
            await self._lease_authority()
            resp, reset = self.node.fsm.keep_alive(req, self.node.lease_now())
            if reset is not None:
                # The budget in the log is below the TTL: record the renewal before
                # answering, so a new leader does not fall back to the old budget.
                await self.node.propose(reset)
            return self._with_header(resp)

        return await self._on_leader(
            ctx,
            Method.LEASE_KEEP_ALIVE,
            lambda: codec.to_plain(req),
            lambda p: codec.from_plain(LeaseKeepAliveResponse, p),
            local,
        )

    async def lease_time_to_live(
        self, req: LeaseTimeToLiveRequest, ctx: CallContext = ANONYMOUS
    ) -> LeaseTimeToLiveResponse:
        """A lease's remaining TTL, by the leader's clock (and its keys, if asked)."""

        async def local() -> LeaseTimeToLiveResponse:
            await self._lease_authority()
            await self.node.read_barrier()
            return self._with_header(self.node.fsm.time_to_live(req, self.node.lease_now()))

        return await self._on_leader(
            ctx,
            Method.LEASE_TIME_TO_LIVE,
            lambda: codec.to_plain(req),
            lambda p: codec.from_plain(LeaseTimeToLiveResponse, p),
            local,
        )

    async def lease_leases(
        self, req: LeaseLeasesRequest, ctx: CallContext = ANONYMOUS
    ) -> LeaseLeasesResponse:
        """Every live lease id (linearizable)."""
        self.node.check_serving()
        await self.node.read_barrier()
        return LeaseLeasesResponse(self.header(), tuple(self.node.fsm.lessor.leases()))

    async def _lease_authority(self) -> None:
        """Lease clocks live on the leader only.  A new leader takes over the leases a moment
        after its election (once its own term's entry is applied): a call arriving in between
        waits for that, briefly, rather than being refused (refusals trip the client's circuit
        breaker on the one member that can answer, and a short lease could expire while the
        client backs off)."""
        node = self.node
        if not node.is_leader:
            raise node.not_leader()
        if not node.fsm.lessor.is_primary:
            await node.wait_lease_primary(node.election_timeout())
        if not node.is_leader:
            raise node.not_leader()
        if not node.fsm.lessor.is_primary:
            raise NoLeader("the new leader is not yet serving leases; retry")

    # --- watch -----------------------------------------------------------------------------

    async def watch(
        self,
        spec: WatchSpec,
        send: Sender,
        drain: Callable[[], Awaitable[None]],
        open_watches: int,
        ctx: CallContext = ANONYMOUS,
        progress_interval: float = 10.0,
        group: object = None,
    ) -> None:
        """Run one watch until the caller cancels it (watch create; cancelling the task is
        watch cancel): the created notice, history from ``start_revision``, then live events
        through ``send``; progress notifications on a quiet watch that asked for them.
        ``open_watches`` counts this caller's watches, this one included; ``group`` names
        the caller (a connection, a stream) for :meth:`watch_progress`."""
        self.authorizer.check(ctx, Permission.READ, spec.key, spec.range_end)
        self.node.check_serving()
        await self.hub.serve(spec, send, drain, open_watches, progress_interval, group)

    def watch_progress(self, group: object, ctx: CallContext = ANONYMOUS) -> int:
        """etcd's progress request: every watch of ``group`` sends a progress notification
        at the revision it has fully delivered.  Returns how many watches were asked."""
        self.node.check_serving()
        return self.hub.request_progress(group)

    def watch_synced_revision(self, group: object, ctx: CallContext = ANONYMOUS) -> int | None:
        """etcd's stream-wide progress request: the revision up to which every watch of
        ``group`` has been sent every event, or None while one of them is still catching up
        (etcd then sends nothing)."""
        self.node.check_serving()
        return self.hub.synced_revision(group)

    # --- cluster ---------------------------------------------------------------------------

    def _members(self) -> tuple[api.Member, ...]:
        return tuple(
            api.Member(
                id=int(d["id"]),
                name=str(d["name"]),
                peer_addr=str(d["peer_addr"]),
                client_addr=str(d["client_addr"]),
                is_learner=bool(d["is_learner"]),
            )
            for d in self.node.member_list()
        )

    async def member_list(
        self, req: api.MemberListRequest, ctx: CallContext = ANONYMOUS
    ) -> api.MemberListResponse:
        """The members, after a read barrier (so a change this client saw is listed)."""
        self.authorizer.check(ctx, Permission.READ, b"", b"")
        await self.node.read_barrier()
        return api.MemberListResponse(self.header(), self._members())

    async def member_add(
        self, req: api.MemberAddRequest, ctx: CallContext = ANONYMOUS
    ) -> api.MemberAddResponse:
        self.authorizer.check(ctx, Permission.ADMIN, b"", b"")

        async def local() -> api.MemberAddResponse:
            m = await self.node.add_member(req.name, req.peer_addr, req.client_addr, req.is_learner)
            return api.MemberAddResponse(self.header(), _member(m), self._members())

        return await self._on_leader(
            ctx,
            Method.MEMBER_ADD,
            lambda: codec.to_plain(req),
            lambda p: codec.from_plain(api.MemberAddResponse, p),
            local,
        )

    async def member_remove(
        self, req: api.MemberRemoveRequest, ctx: CallContext = ANONYMOUS
    ) -> api.MembersResponse:
        """Remove a member (through the log, on the leader)."""
        return await self._change_members(
            ctx, Method.MEMBER_REMOVE, req, lambda: self.node.remove_member(req.id)
        )

    async def member_promote(
        self, req: api.MemberPromoteRequest, ctx: CallContext = ANONYMOUS
    ) -> api.MembersResponse:
        """Make a learner a voter (through the log, on the leader)."""
        return await self._change_members(
            ctx, Method.MEMBER_PROMOTE, req, lambda: self.node.promote_member(req.id)
        )

    async def member_update(
        self, req: api.MemberUpdateRequest, ctx: CallContext = ANONYMOUS
    ) -> api.MembersResponse:
        """Change a member's advertised peer address (through the log, on the leader)."""
        return await self._change_members(
            ctx,
            Method.MEMBER_UPDATE,
            req,
            lambda: self.node.update_member(req.id, req.peer_addr),
        )

    async def _change_members(
        self,
        ctx: CallContext,
        method: Method,
        req: object,
        change: Callable[[], Awaitable[None]],
    ) -> api.MembersResponse:
        """One membership change on the leader (forwarded there from a follower); the
        answer lists the members after it."""
        self.authorizer.check(ctx, Permission.ADMIN, b"", b"")

        async def local() -> api.MembersResponse:
            await change()
            return api.MembersResponse(self.header(), self._members())

        return await self._on_leader(
            ctx, method, lambda: codec.to_plain(req), _members_response, local
        )

    async def move_leader(
        self, req: api.MoveLeaderRequest, ctx: CallContext = ANONYMOUS
    ) -> api.MoveLeaderResponse:
        """Hand leadership to ``target_id`` and wait until it leads."""
        self.authorizer.check(ctx, Permission.ADMIN, b"", b"")

        async def local() -> api.MoveLeaderResponse:
            await self.node.transfer_leadership(req.target_id)
            return api.MoveLeaderResponse(self.header(), self.node.leader_id)

        def decode(p: Any) -> api.MoveLeaderResponse:
            return codec.from_plain(api.MoveLeaderResponse, p)

        return await self._on_leader(
            ctx, Method.MOVE_LEADER, lambda: codec.to_plain(req), decode, local
        )

    # --- maintenance -----------------------------------------------------------------------

    async def status(
        self, req: api.StatusRequest, ctx: CallContext = ANONYMOUS
    ) -> api.StatusResponse:
        """This member's own status (no barrier: it answers even without a leader)."""
        d = self.node.status(with_hash=req.with_hash)
        return api.StatusResponse(
            header=self.header(),
            id=d["id"],
            name=d["name"],
            cluster_id=d["cluster_id"],
            leader=d["leader"],
            term=d["term"],
            raft_index=d["raft_index"],
            raft_applied_index=d["raft_applied_index"],
            commit_index=d["commit_index"],
            revision=d["revision"],
            compact_revision=d["compact_revision"],
            db_size=d["db_size"],
            hash=api.Hash64(d["hash"]),
            is_learner=d["is_learner"],
            role=d["role"],
            version=d["version"],
        )

    async def health(
        self, req: api.HealthRequest, ctx: CallContext = ANONYMOUS
    ) -> api.HealthResponse:
        """Healthy: the member can serve and a linearizable read goes through in 2 s."""
        ok, reason = self.node.health()
        if ok:
            try:
                await self.node.read_barrier(timeout=2.0)
            except RaftKVError as e:
                ok, reason = False, f"linearizable read failed: {e}"
        return api.HealthResponse(ok, reason)

    async def hash_kv(
        self, req: api.HashKVRequest, ctx: CallContext = ANONYMOUS
    ) -> api.HashKVResponse:
        """The hash of this member's key space at its current revision (the answer says
        which revision that is; members at the same revision must agree)."""
        self.authorizer.check(ctx, Permission.ADMIN, b"", b"")
        f = self.node.fsm
        return api.HashKVResponse(
            self.header(), api.Hash64(f.hash()), f.revision, f.compact_revision
        )

    async def alarm(self, req: api.AlarmRequest, ctx: CallContext = ANONYMOUS) -> api.AlarmResponse:
        """This member's alarms.  raftkv has no space quota, so NOSPACE is never raised; a
        member that lost acknowledged state or whose storage failed reports CORRUPT for
        itself, and clearing that takes the recovery its log line gives (remove the member,
        empty its data dir, add it back), not a DEACTIVATE.  Alarms belong to the member
        that raised them: ask each member."""
        self.authorizer.check(ctx, Permission.ADMIN, b"", b"")
        node = self.node
        ok, _ = node.health()
        corrupt = node.fatal is not None or node.storage.failed is not None
        mine = (api.AlarmMember(node.id, api.AlarmType.CORRUPT),) if corrupt and not ok else ()
        if req.action == api.AlarmAction.GET:
            return api.AlarmResponse(self.header(), mine)
        if req.action == api.AlarmAction.ACTIVATE:
            raise InvalidArgument("alarms are raised by the member that detects the condition")
        if (
            mine
            and req.member_id in (0, node.id)
            and req.alarm
            in (
                api.AlarmType.NONE,
                api.AlarmType.CORRUPT,
            )
        ):
            raise InvalidArgument(
                f"member {node.id:x} lost acknowledged state or its storage failed: remove it, "
                "empty its data dir and add it back; the alarm cannot be cleared in place"
            )
        return api.AlarmResponse(self.header(), ())  # nothing raised: nothing to clear

    async def defragment(
        self, req: api.DefragmentRequest, ctx: CallContext = ANONYMOUS
    ) -> api.DefragmentResponse:
        """Give this member's free store pages back to the file system (after a compaction
        this shrinks the file); the member keeps serving meanwhile."""
        self.authorizer.check(ctx, Permission.ADMIN, b"", b"")
        self.node.check_serving()
        before, after = await self.node.defragment()
        return api.DefragmentResponse(self.header(), before, after)

    async def snapshot(
        self, req: api.SnapshotRequest, ctx: CallContext = ANONYMOUS
    ) -> AsyncIterator[api.SnapshotChunk]:
        """The member's state after a read barrier, in chunks; the last chunk carries the
        SHA-256 of the whole, its size, revision and Raft index."""
        self.authorizer.check(ctx, Permission.ADMIN, b"", b"")
        await self.node.read_barrier()
        data = node_snapshot(self.node.fsm, self.node.members)
        revision, index = self.node.fsm.revision, self.node.applied_index
        for off in range(0, len(data), SNAPSHOT_CHUNK):
            yield api.SnapshotChunk(data=data[off : off + SNAPSHOT_CHUNK])
        yield api.SnapshotChunk(
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            revision=revision,
            index=index,
        )


# --- request classification ------------------------------------------------------------------


def is_read_only(txn: TxnRequest) -> bool:
    """True if no branch of ``txn`` (nested txns included) writes."""
    stack = [txn]
    while stack:
        t = stack.pop()
        for op in (*t.success, *t.failure):
            if isinstance(op, TxnRequest):
                stack.append(op)
            elif not isinstance(op, RangeRequest):
                return False
    return True


def txn_permissions(txn: TxnRequest) -> list[tuple[Permission, bytes, bytes]]:
    """Every (permission, key, range_end) a txn needs: its compares read, its operations
    read or write (both branches: which runs is only known when it applies)."""
    out: list[tuple[Permission, bytes, bytes]] = []
    stack = [txn]
    while stack:
        t = stack.pop()
        out.extend((Permission.READ, c.key, c.range_end) for c in t.compare)
        for op in (*t.success, *t.failure):
            if isinstance(op, TxnRequest):
                stack.append(op)
            elif isinstance(op, RangeRequest):
                out.append((Permission.READ, op.key, op.range_end))
            elif isinstance(op, PutRequest):
                out.append((Permission.WRITE, op.key, b""))
            else:
                out.append((Permission.WRITE, op.key, op.range_end))
    return out


_KV_OVERHEAD = 40
"""Bytes a KeyValue costs on the wire beyond its key and value (tag, four revisions, lease)."""


def reply_bytes(resp: object) -> int:
    """About how many bytes ``resp`` takes encoded (keys and values dominate); 0 if not a
    KV response."""
    total = 0
    stack = [resp]
    while stack:
        r = stack.pop()
        kvs: tuple[KeyValue, ...] = ()
        if isinstance(r, RangeResponse):
            kvs = r.kvs
        elif isinstance(r, TxnResponse):
            stack.extend(r.responses)
        elif isinstance(r, DeleteRangeResponse):
            kvs = r.prev_kvs
        elif isinstance(r, PutResponse) and r.prev_kv is not None:
            kvs = (r.prev_kv,)
        total += sum(len(kv.key) + len(kv.value) + _KV_OVERHEAD for kv in kvs)
    return total


def _member(m: MemberRecord) -> api.Member:
    return api.Member(m.id, m.name, m.peer_addr, m.client_addr, m.is_learner)


def _members_response(p: Any) -> api.MembersResponse:
    return codec.from_plain(api.MembersResponse, p)
