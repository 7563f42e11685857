"""The replicated state machine: MVCC store + lessor + exactly-once client sessions.

The node calls :meth:`KVStateMachine.apply` for every committed entry, in log order, on every
member.  ``apply`` never raises for a bad request: a request error (a typed
:class:`~raftkv.errors.RaftKVError`) is part of the deterministic :class:`ApplyResult`, so every
member reaches the same state and the node keeps going.  Only a broken invariant (an entry
applied twice or out of order) raises.

Exactly-once: a :class:`~raftkv.api.Command` with ``client_id != 0`` is a write of a client
session.  The state machine keeps the latest ``max_results_per_client`` results of each client
(by ``seq``) and answers a retried ``(client_id, seq)`` with the stored result instead of
applying it again.  Sessions expire ``session_ttl`` seconds (of leader-stamped time) after their
last command, and at most ``max_clients`` are kept (least recently seen dropped first).
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from raftkv.api import (
    DEFAULT_LIMITS,
    Command,
    CompactionRequest,
    CompactionResponse,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Event,
    EventType,
    KeyValue,
    LeaseCheckpointRequest,
    LeaseCheckpointResponse,
    LeaseExpireRequest,
    LeaseExpireResponse,
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
    Limits,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    RequestOp,
    Response,
    ResponseHeader,
    ResponseOp,
    TxnRequest,
    TxnResponse,
)
from raftkv.errors import (
    ApplyFailed,
    CorruptionError,
    InvalidArgument,
    KeyNotFound,
    LeaseNotFound,
    RaftKVError,
    RequestTooLarge,
)
from raftkv.protocol import codec
from raftkv.state.lease import LeaseConfig, Lessor
from raftkv.state.mvcc.store import KVStore
from raftkv.state.mvcc.txn import check_request, compare_ok

log = logging.getLogger("raftkv.state.fsm")

SNAPSHOT_MAGIC = b"RKVFSM1\n"
_DIGEST_SIZE = 32


@dataclass(frozen=True, slots=True)
class DedupConfig:
    max_results_per_client: int = 64
    """Results kept per client; a retry of an older ``seq`` gets InvalidArgument."""
    max_clients: int = 10_000
    session_ttl: float = 600.0
    """Seconds of log-derived time (see :meth:`KVStateMachine._advance_clock`) after its last
    command that a session is forgotten."""
    max_clock_step: float = 10.0
    """The most one entry may advance the log-derived clock: a leader whose clock jumps
    (stepped, skewed, resumed after a pause) cannot age sessions faster than this per entry.
    Counting less time than passed only keeps sessions longer, which is always safe."""


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one applied entry produced.  Exactly one of ``response`` / ``error`` is set (both
    None for an empty entry).  ``events`` are the changes in sub-revision order, empty for a
    duplicate (its events were delivered when it first applied)."""

    index: int
    revision: int
    response: Response | None = None
    error: RaftKVError | None = None
    events: tuple[Event, ...] = ()
    duplicate: bool = False


class _Session:
    __slots__ = ("forgotten", "last_seen", "results")

    def __init__(self, last_seen: float) -> None:
        self.last_seen = last_seen
        # Invariant: every seq in results is > forgotten (the highest seq evicted).
        self.forgotten = 0
        self.results: dict[int, tuple[Response | None, RaftKVError | None]] = {}


_READ_ONLY = (RangeRequest, LeaseTimeToLiveRequest, LeaseLeasesRequest)


class KVStateMachine:
    """Deterministic etcd-v3 state machine.  No clocks, no I/O: time is ``Command.now``."""

    def __init__(
        self,
        limits: Limits = DEFAULT_LIMITS,
        lease_config: LeaseConfig | None = None,
        dedup: DedupConfig | None = None,
    ) -> None:
        self.limits = limits
        self.dedup = dedup or DedupConfig()
        self.store = KVStore()
        self.lessor = Lessor(lease_config)
        # Invariant: entries are applied exactly once, in index order.
        self.applied_index = 0
        self._clock = 0.0  # log-derived elapsed seconds; drives session expiry
        self._clock_term = -1  # term of the last command that stamped a time
        self._clock_last_now = 0.0  # that term's leader's latest stamp
        self._sessions: OrderedDict[int, _Session] = OrderedDict()  # by last_seen
        self._handlers: dict[type[Any], Callable[[Any], Response]] = {
            PutRequest: self._apply_put_request,
            RangeRequest: self._apply_range,
            DeleteRangeRequest: self._apply_delete_request,
            TxnRequest: self._apply_txn_request,
            CompactionRequest: self._apply_compaction,
            LeaseGrantRequest: self._apply_lease_grant,
            LeaseRevokeRequest: self._apply_lease_revoke,
            LeaseTimeToLiveRequest: self._apply_time_to_live,
            LeaseLeasesRequest: self._apply_leases,
            LeaseKeepAliveRequest: self._apply_keep_alive,
            LeaseCheckpointRequest: self._apply_checkpoint,
            LeaseExpireRequest: self._apply_lease_expire,
        }
        self._events: list[Event] = []

    # --- state ----------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        return self.store.revision

    @property
    def compact_revision(self) -> int:
        return self.store.compact_revision

    def _header(self) -> ResponseHeader:
        return ResponseHeader(revision=self.store.revision)

    # --- apply ----------------------------------------------------------------------------

    def apply(self, index: int, data: bytes, term: int = 0) -> ApplyResult:
        """Apply committed entry ``index`` (of log term ``term``).  Request errors are
        returned in the result, and so is an unexpected exception (:class:`ApplyFailed`, the
        same on every member): nothing in an entry can stop the apply loop.  Indexes must
        strictly increase; the node may skip entries that are not commands (configuration
        changes)."""
        if index <= self.applied_index:
            raise AssertionError(f"apply out of order: {index} after {self.applied_index}")
        self.applied_index = index
        if not data:  # the leader's empty entry of a new term
            return ApplyResult(index, self.store.revision)
        if len(data) > self.limits.max_request_bytes:
            err = RequestTooLarge(f"request of {len(data)} bytes exceeds the limit")
            return ApplyResult(index, self.store.revision, error=err)
        try:
            cmd = codec.decode_command(data)
        except RaftKVError as e:
            return ApplyResult(index, self.store.revision, error=e)
        return self._apply_command(index, cmd, term)

    def apply_command(self, index: int, cmd: Command, term: int = 0) -> ApplyResult:
        """:meth:`apply` for an already decoded command (tests, the simulator)."""
        if index <= self.applied_index:
            raise AssertionError(f"apply out of order: {index} after {self.applied_index}")
        self.applied_index = index
        return self._apply_command(index, cmd, term)

    def _advance_clock(self, term: int, now: float) -> None:
        """Log-derived time for session expiry.  Only one leader stamps the commands of a
        term, so elapsed time is measured between stamps of the same term, each step capped
        at ``max_clock_step``; the first command of a new term only sets the base.  No
        member's wall clock (nor its offset from the others) can age a session: a leader
        whose clock runs 790 s ahead advances the clock by what passes on it, not by 790 s."""
        if term != self._clock_term:
            self._clock_term = term
            self._clock_last_now = now
            return
        step = now - self._clock_last_now
        if step <= 0:
            return
        self._clock_last_now = now
        self._clock += min(step, self.dedup.max_clock_step)
        self._expire_sessions()

    def _apply_command(self, index: int, cmd: Command, term: int = 0) -> ApplyResult:
        self._advance_clock(term, cmd.now)
        session: _Session | None = None
        req = cmd.request
        if cmd.client_id and not isinstance(req, _READ_ONLY):
            session = self._session(cmd.client_id)
            seen = session.results.get(cmd.seq)
            if seen is not None:
                return ApplyResult(index, self.store.revision, seen[0], seen[1], duplicate=True)
            if cmd.seq <= session.forgotten:
                err = InvalidArgument(
                    f"seq {cmd.seq} of client {cmd.client_id} is older than the kept results"
                )
                return ApplyResult(index, self.store.revision, error=err, duplicate=True)
        self._events = []
        response: Response | None = None
        error: RaftKVError | None = None
        try:
            response = self._handlers[type(req)](req)
        except RaftKVError as e:
            error = e
        except Exception as e:  # a bug reached by this entry: a result, never a dead loop
            # Deterministic: the same entry raises the same exception on every member (and on
            # every replay after a restart), so every member records the same result.
            error = ApplyFailed(f"entry {index}: {type(e).__name__}: {e}")
            log.error("applying entry %d failed: %s: %s", index, type(e).__name__, e)
        events = tuple(self._events)
        self._events = []
        if session is not None:
            self._remember(session, cmd.seq, response, error)
        return ApplyResult(index, self.store.revision, response, error, events)

    # --- sessions -------------------------------------------------------------------------

    def _session(self, client_id: int) -> _Session:
        s = self._sessions.get(client_id)
        if s is None:
            s = _Session(self._clock)
            self._sessions[client_id] = s
            while len(self._sessions) > self.dedup.max_clients:
                self._sessions.popitem(last=False)
        else:
            s.last_seen = self._clock
            self._sessions.move_to_end(client_id)
        return s

    def _remember(
        self, s: _Session, seq: int, response: Response | None, error: RaftKVError | None
    ) -> None:
        s.results[seq] = (response, error)
        if len(s.results) > self.dedup.max_results_per_client:
            oldest = min(s.results)
            del s.results[oldest]
            s.forgotten = max(s.forgotten, oldest)

    def _expire_sessions(self) -> None:
        horizon = self._clock - self.dedup.session_ttl
        sessions = self._sessions
        while sessions:
            client_id, s = next(iter(sessions.items()))
            if s.last_seen >= horizon:
                break
            del sessions[client_id]

    # --- KV -------------------------------------------------------------------------------

    def range(self, req: RangeRequest) -> RangeResponse:
        """A local read (serializable, or after ReadIndex).  Raises request errors."""
        check_request(req, self.limits)
        return self.store.range(req)

    def _apply_range(self, req: RangeRequest) -> RangeResponse:
        return self.range(req)

    def _apply_put_request(self, req: PutRequest) -> PutResponse:
        check_request(req, self.limits)
        self._check_put(req)
        rev = self.store.revision + 1
        changed: list[bytes] = []
        resp = self._put(req, rev, changed)
        self.store.commit(rev, changed)
        return resp

    def _check_put(self, req: PutRequest) -> None:
        if req.lease and not self.lessor.exists(req.lease):
            raise LeaseNotFound(req.lease)
        if (req.ignore_value or req.ignore_lease) and self.store.get(req.key) is None:
            raise KeyNotFound(f"key {req.key!r} not found (ignore_value/ignore_lease)")

    def _put(self, req: PutRequest, rev: int, changed: list[bytes]) -> PutResponse:
        key = req.key
        value = req.value
        lease = req.lease
        if req.ignore_value or req.ignore_lease:
            cur = self.store.get(key)
            assert cur is not None  # checked before any write
            if req.ignore_value:
                value = cur.value
            if req.ignore_lease:
                lease = cur.lease
        kv, prev = self.store.put(rev, key, value, lease)
        if prev is not None and prev.lease and prev.lease != lease:
            self.lessor.detach(prev.lease, key)
        if lease:
            self.lessor.attach(lease, key)
        changed.append(key)
        self._events.append(Event(EventType.PUT, kv, prev))
        return PutResponse(ResponseHeader(revision=rev), prev if req.prev_kv else None)

    def _apply_delete_request(self, req: DeleteRangeRequest) -> DeleteRangeResponse:
        check_request(req, self.limits)
        rev = self.store.revision + 1
        changed: list[bytes] = []
        resp = self._delete(req.key, req.range_end, req.prev_kv, rev, changed)
        self.store.commit(rev, changed)
        return resp

    def _delete(
        self, key: bytes, end: bytes, want_prev: bool, rev: int, changed: list[bytes]
    ) -> DeleteRangeResponse:
        prevs: list[KeyValue] = []
        for kv in self.store.kvs(key, end):
            prev = self.store.delete(rev, kv.key)
            assert prev is not None
            if prev.lease:
                self.lessor.detach(prev.lease, prev.key)
            changed.append(prev.key)
            prevs.append(prev)
            self._events.append(Event(EventType.DELETE, KeyValue(prev.key, mod_revision=rev), prev))
        header_rev = rev if prevs else self.store.revision
        return DeleteRangeResponse(
            ResponseHeader(revision=header_rev), len(prevs), tuple(prevs) if want_prev else ()
        )

    # --- txn ------------------------------------------------------------------------------

    def _apply_txn_request(self, req: TxnRequest) -> TxnResponse:
        check_request(req, self.limits)
        base = self.store.revision
        self._check_txn_path(req, base)  # every runtime error before the first write
        rev = base + 1
        changed: list[bytes] = []
        resp = self._txn(req, base, rev, changed)
        self.store.commit(rev, changed)
        if changed:
            return _with_revision(resp, rev)
        return resp

    def read_txn(self, req: TxnRequest) -> TxnResponse:
        """A txn with no writes, evaluated on local state (after ReadIndex), outside the log.
        Raises request errors, as :meth:`range` does."""
        check_request(req, self.limits)
        base = self.store.revision
        self._check_txn_path(req, base)
        changed: list[bytes] = []
        resp = self._txn(req, base, base + 1, changed)
        if changed:
            raise AssertionError("read_txn wrote")  # callers pass read-only txns only
        return resp

    def _check_txn_path(self, txn: TxnRequest, base: int) -> None:
        """etcd's ``checkRequests`` on the branch the compares select: leases exist, keys of
        ignore_value/ignore_lease puts exist, range revisions are readable."""
        ok = all(compare_ok(self.store, c, base) for c in txn.compare)
        for op in txn.success if ok else txn.failure:
            if isinstance(op, PutRequest):
                self._check_put(op)
            elif isinstance(op, RangeRequest):
                self.store.check_revision(op.revision, base)
            elif isinstance(op, TxnRequest):
                self._check_txn_path(op, base)

    def _txn(self, txn: TxnRequest, base: int, rev: int, changed: list[bytes]) -> TxnResponse:
        # Compares (nested ones too) read the state before the txn, as etcd's compareToPath.
        ok = all(compare_ok(self.store, c, base) for c in txn.compare)
        responses: list[ResponseOp] = []
        for op in txn.success if ok else txn.failure:
            responses.append(self._txn_op(op, base, rev, changed))
        return TxnResponse(ResponseHeader(revision=base), ok, tuple(responses))

    def _txn_op(self, op: RequestOp, base: int, rev: int, changed: list[bytes]) -> ResponseOp:
        if isinstance(op, PutRequest):
            return self._put(op, rev, changed)
        if isinstance(op, DeleteRangeRequest):
            return self._delete(op.key, op.range_end, op.prev_kv, rev, changed)
        if isinstance(op, RangeRequest):
            # Reads inside a txn see the txn's earlier writes (etcd: beginRev + 1).
            return self.store.range(op, rev if changed else base)
        return self._txn(op, base, rev, changed)

    # --- compaction -----------------------------------------------------------------------

    def _apply_compaction(self, req: CompactionRequest) -> CompactionResponse:
        self.store.compact(req.revision)
        return CompactionResponse(self._header())

    # --- leases ---------------------------------------------------------------------------

    def _apply_lease_grant(self, req: LeaseGrantRequest) -> LeaseGrantResponse:
        lease = self.lessor.grant(req.id, req.ttl)
        return LeaseGrantResponse(self._header(), lease.id, lease.ttl)

    def _revoke(self, lease_id: int) -> None:
        keys = self.lessor.revoke(lease_id)
        rev = self.store.revision + 1
        changed: list[bytes] = []
        for key in keys:
            prev = self.store.delete(rev, key)
            assert prev is not None and prev.lease == lease_id, (key, prev)
            changed.append(key)
            self._events.append(Event(EventType.DELETE, KeyValue(key, mod_revision=rev), prev))
        self.store.commit(rev, changed)

    def _apply_lease_revoke(self, req: LeaseRevokeRequest) -> LeaseRevokeResponse:
        self._revoke(req.id)
        return LeaseRevokeResponse(self._header())

    def _apply_lease_expire(self, req: LeaseExpireRequest) -> LeaseExpireResponse:
        revoked: list[int] = []
        for lease_id in req.ids:
            if self.lessor.exists(lease_id):
                self._revoke(lease_id)
                revoked.append(lease_id)
        return LeaseExpireResponse(self._header(), tuple(revoked))

    def _apply_checkpoint(self, req: LeaseCheckpointRequest) -> LeaseCheckpointResponse:
        self.lessor.apply_checkpoint(req)
        return LeaseCheckpointResponse(self._header())

    def _apply_keep_alive(self, req: LeaseKeepAliveRequest) -> LeaseKeepAliveResponse:
        lease = self.lessor.apply_keep_alive(req.id)
        return LeaseKeepAliveResponse(self._header(), lease.id, lease.ttl)

    def _apply_time_to_live(self, req: LeaseTimeToLiveRequest) -> LeaseTimeToLiveResponse:
        lease = self.lessor.get(req.id)
        keys = tuple(sorted(lease.keys)) if req.keys else ()
        return LeaseTimeToLiveResponse(
            self._header(), lease.id, int(lease.remaining), lease.ttl, keys
        )

    def _apply_leases(self, req: LeaseLeasesRequest) -> LeaseLeasesResponse:
        return LeaseLeasesResponse(self._header(), tuple(self.lessor.leases()))

    def time_to_live(self, req: LeaseTimeToLiveRequest, now: float) -> LeaseTimeToLiveResponse:
        """Leader-local TimeToLive: the remaining TTL on the leader's clock (whole seconds,
        truncated as etcd); ``ttl`` -1 if the lease does not exist."""
        try:
            lease = self.lessor.get(req.id)
        except LeaseNotFound:
            return LeaseTimeToLiveResponse(self._header(), req.id, -1, 0, ())
        keys = tuple(sorted(lease.keys)) if req.keys else ()
        remaining = int(self.lessor.remaining(req.id, now))
        return LeaseTimeToLiveResponse(self._header(), lease.id, remaining, lease.ttl, keys)

    def keep_alive(
        self, req: LeaseKeepAliveRequest, now: float
    ) -> tuple[LeaseKeepAliveResponse, LeaseCheckpointRequest | None]:
        """Leader-local keep-alive (no log entry, like etcd).  If the second value is not None
        the leader must propose it and answer the client once it has applied."""
        ttl, reset = self.lessor.renew(req.id, now)
        return LeaseKeepAliveResponse(self._header(), req.id, ttl), reset

    # --- snapshot / hash ------------------------------------------------------------------

    def hash(self) -> int:
        """64-bit hash of the key space, its revisions and the replicated lease state; equal
        on every member that applied the same entries (or restored the same snapshot)."""
        h = hashlib.blake2b(digest_size=8)
        self.store.hash_into(h)
        self.lessor.hash_into(h)
        return int.from_bytes(h.digest(), "big")

    def snapshot(self) -> bytes:
        """The whole replicated state, deterministic bytes, with a checksum."""
        sessions = [
            [
                cid,
                s.last_seen,
                s.forgotten,
                [[seq, _result_plain(r)] for seq, r in s.results.items()],
            ]
            for cid, s in self._sessions.items()
        ]
        body: bytes = msgpack.packb(
            [
                2,
                self.applied_index,
                self._clock,
                self.store.to_plain(),
                self.lessor.to_plain(),
                sessions,
                self._clock_term,
                self._clock_last_now,
            ],
            use_bin_type=True,
        )
        digest = hashlib.blake2b(body, digest_size=_DIGEST_SIZE).digest()
        return SNAPSHOT_MAGIC + digest + body

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot; CorruptionError (state untouched) if the
        checksum or the structure is wrong."""
        head = len(SNAPSHOT_MAGIC)
        if data[:head] != SNAPSHOT_MAGIC or len(data) < head + _DIGEST_SIZE:
            raise CorruptionError("not a raftkv state-machine snapshot")
        digest = data[head : head + _DIGEST_SIZE]
        body = data[head + _DIGEST_SIZE :]
        if hashlib.blake2b(body, digest_size=_DIGEST_SIZE).digest() != digest:
            raise CorruptionError("state-machine snapshot checksum mismatch")
        try:
            fields = msgpack.unpackb(body, raw=False, use_list=True)
            version = fields[0]
            if version == 1:  # before log-derived time: the next command sets the base
                clock_term, clock_last_now = -1, 0.0
            elif version == 2:
                clock_term, clock_last_now = int(fields[6]), float(fields[7])
            else:
                raise ValueError(f"unknown snapshot version {version}")
            _, applied, clock, store_plain, lessor_plain, sessions_plain = fields[:6]
            store = KVStore.from_plain(store_plain)
            lessor = Lessor(self.lessor.config)
            lessor.restore_plain(lessor_plain)
            for kv in store.kvs(b"\0", b"\0"):
                if kv.lease:
                    lessor.attach(kv.lease, kv.key)
            sessions: OrderedDict[int, _Session] = OrderedDict()
            for cid, last_seen, forgotten, results in sessions_plain:
                s = _Session(float(last_seen))
                s.forgotten = int(forgotten)
                for seq, r in results:
                    s.results[int(seq)] = _result_from_plain(r)
                sessions[int(cid)] = s
        except CorruptionError:
            raise
        except (ValueError, TypeError, KeyError, RaftKVError) as e:
            raise CorruptionError(f"bad state-machine snapshot: {e}") from None
        self.store = store
        self.lessor = lessor
        self._sessions = sessions
        self._clock = float(clock)
        self._clock_term = clock_term
        self._clock_last_now = clock_last_now
        self.applied_index = int(applied)

    def events(self, start: int, end: int | None = None) -> list[Event]:
        """Events of revisions ``start..end`` from the retained history (watch catch-up)."""
        return self.store.events(start, end)


def _with_revision(resp: TxnResponse, rev: int) -> TxnResponse:
    return TxnResponse(ResponseHeader(revision=rev), resp.succeeded, resp.responses)


def _result_plain(r: tuple[Response | None, RaftKVError | None]) -> list[Any]:
    response, error = r
    if error is not None:
        return [1, codec.encode_error(error)]
    return [0, None if response is None else codec.to_plain(response)]


def _result_from_plain(plain: Any) -> tuple[Response | None, RaftKVError | None]:
    kind, value = plain
    if kind == 1:
        return None, codec.decode_error(value)
    if value is None:
        return None, None
    resp: Response = codec.from_plain_any(value)
    return resp, None


__all__ = ["ApplyResult", "DedupConfig", "KVStateMachine"]
