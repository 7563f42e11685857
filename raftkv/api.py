"""The etcd v3 request/response surface of raftkv, as immutable values.

Every request and response is a frozen, slotted dataclass; kinds are ``IntEnum``s with etcd's
numbering.  The codec (:mod:`raftkv.protocol.codec`) turns them into plain msgpack types and back;
the state machine (:mod:`raftkv.state.fsm`) applies the requests; the client protocol reuses both.

Key ranges follow etcd: ``range_end == b""`` means the single key ``key``;
``range_end == b"\\0"`` means every key ``>= key``; otherwise the half-open ``[key, range_end)``.
:func:`prefix_end` gives the ``range_end`` of "every key starting with ``key``".

Besides the client requests there are the internal commands only the leader proposes:
:class:`LeaseCheckpointRequest` (remaining TTLs, so a new leader does not reset leases to their
full TTL) and :class:`LeaseExpireRequest` (leases the leader found expired).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NewType

Hash64 = NewType("Hash64", int)
"""An unsigned 64-bit content hash (0 .. 2**64 - 1); every other integer is signed 64-bit."""

ALL_KEYS = b"\0"
"""As ``range_end``: every key greater than or equal to ``key``."""


def prefix_end(key: bytes) -> bytes:
    """The ``range_end`` that selects every key starting with ``key`` (etcd's
    ``GetPrefixRangeEnd``): the last byte below 0xff is incremented and the rest dropped; a key of
    only 0xff bytes (or empty) has no upper bound, so :data:`ALL_KEYS` is returned."""
    end = bytearray(key)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return ALL_KEYS


# --- kinds ----------------------------------------------------------------------------------


class EventType(IntEnum):
    PUT = 0
    DELETE = 1


class SortOrder(IntEnum):
    NONE = 0
    ASCEND = 1
    DESCEND = 2


class SortTarget(IntEnum):
    KEY = 0
    VERSION = 1
    CREATE = 2
    MOD = 3
    VALUE = 4


class CompareTarget(IntEnum):
    VERSION = 0
    CREATE = 1
    MOD = 2
    VALUE = 3
    LEASE = 4


class CompareResult(IntEnum):
    EQUAL = 0
    GREATER = 1
    LESS = 2
    NOT_EQUAL = 3


# --- values ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One version of a key.  Revisions are main revisions; ``version`` counts the changes of
    the key since its creation (1 on create, reset by a delete); ``lease`` 0 means none."""

    key: bytes
    value: bytes = b""
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    """A change produced by a write.  For DELETE, ``kv`` holds the key and the revision of the
    delete (``mod_revision``), with an empty value and version 0, as etcd reports it."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class ResponseHeader:
    """``revision`` is the store revision when the response was made.  The state machine
    fills only ``revision``; the member fills ``cluster_id``, ``member_id`` (the member that
    answered), ``raft_term`` and ``leader_id`` (the leader it knows, 0: none; not in etcd's
    header: the native client uses it to find the leader)."""

    cluster_id: int = 0
    member_id: int = 0
    revision: int = 0
    raft_term: int = 0
    leader_id: int = 0


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits enforced when a command is applied (and by the wire codec on decode)."""

    max_txn_ops: int = 128
    """Max compares, max success ops and max failure ops of one txn level (as etcd)."""
    max_request_bytes: int = 1536 * 1024
    """Max encoded size of one command (etcd's default ``--max-request-bytes``)."""
    max_key_bytes: int = 32 * 1024
    max_value_bytes: int = 1024 * 1024


DEFAULT_LIMITS = Limits()


# --- KV requests ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RangeRequest:
    key: bytes
    range_end: bytes = b""
    limit: int = 0
    revision: int = 0
    """0 (or negative) means the current revision."""
    sort_order: SortOrder = SortOrder.NONE
    sort_target: SortTarget = SortTarget.KEY
    serializable: bool = False
    keys_only: bool = False
    count_only: bool = False
    min_mod_revision: int = 0
    max_mod_revision: int = 0
    min_create_revision: int = 0
    max_create_revision: int = 0


@dataclass(frozen=True, slots=True)
class RangeResponse:
    header: ResponseHeader
    kvs: tuple[KeyValue, ...] = ()
    more: bool = False
    count: int = 0


@dataclass(frozen=True, slots=True)
class PutRequest:
    key: bytes
    value: bytes = b""
    lease: int = 0
    prev_kv: bool = False
    ignore_value: bool = False
    ignore_lease: bool = False


@dataclass(frozen=True, slots=True)
class PutResponse:
    header: ResponseHeader
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class DeleteRangeRequest:
    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class DeleteRangeResponse:
    header: ResponseHeader
    deleted: int = 0
    prev_kvs: tuple[KeyValue, ...] = ()


@dataclass(frozen=True, slots=True, init=False)
class Compare:
    """``target(key..range_end) <result> value``.  ``value`` is bytes for VALUE and an int for
    VERSION, CREATE, MOD and LEASE.  Over a range, every key must satisfy it; a missing key
    compares as version/create/mod/lease 0, and a VALUE compare on a missing key is false."""

    key: bytes
    target: CompareTarget
    result: CompareResult
    value: bytes | int
    range_end: bytes = b""

    def __init__(
        self,
        key: bytes | str,
        target: CompareTarget,
        result: CompareResult,
        value: bytes | str | int,
        range_end: bytes | str = b"",
    ) -> None:
        # Keys and a VALUE may be given as str (UTF-8), as the op_* helpers accept them.
        object.__setattr__(self, "key", _utf8(key))
        object.__setattr__(self, "target", target)
        object.__setattr__(self, "result", result)
        object.__setattr__(self, "value", _utf8(value) if isinstance(value, str) else value)
        object.__setattr__(self, "range_end", _utf8(range_end))


def _utf8(v: bytes | str) -> bytes:
    return v.encode() if isinstance(v, str) else v


@dataclass(frozen=True, slots=True)
class TxnRequest:
    compare: tuple[Compare, ...] = ()
    success: tuple[RequestOp, ...] = ()
    failure: tuple[RequestOp, ...] = ()


@dataclass(frozen=True, slots=True)
class TxnResponse:
    header: ResponseHeader
    succeeded: bool = False
    responses: tuple[ResponseOp, ...] = ()


RequestOp = RangeRequest | PutRequest | DeleteRangeRequest | TxnRequest
"""One operation of a txn branch (etcd's ``RequestOp`` one-of)."""
ResponseOp = RangeResponse | PutResponse | DeleteRangeResponse | TxnResponse


@dataclass(frozen=True, slots=True)
class CompactionRequest:
    """Drop history below ``revision`` (see :meth:`raftkv.state.mvcc.KVStore.compact`)."""

    revision: int
    physical: bool = False


@dataclass(frozen=True, slots=True)
class CompactionResponse:
    header: ResponseHeader


# --- leases ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaseGrantRequest:
    """``id`` 0 lets the state machine pick one.  TTLs are whole seconds, as in etcd."""

    ttl: int
    id: int = 0


@dataclass(frozen=True, slots=True)
class LeaseGrantResponse:
    header: ResponseHeader
    id: int = 0
    ttl: int = 0


@dataclass(frozen=True, slots=True)
class LeaseRevokeRequest:
    id: int


@dataclass(frozen=True, slots=True)
class LeaseRevokeResponse:
    header: ResponseHeader


@dataclass(frozen=True, slots=True)
class LeaseTimeToLiveRequest:
    id: int
    keys: bool = False


@dataclass(frozen=True, slots=True)
class LeaseTimeToLiveResponse:
    """``ttl`` is the remaining TTL in whole seconds (-1 if the lease does not exist)."""

    header: ResponseHeader
    id: int = 0
    ttl: int = -1
    granted_ttl: int = 0
    keys: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaseLeasesRequest:
    pass


@dataclass(frozen=True, slots=True)
class LeaseLeasesResponse:
    header: ResponseHeader
    leases: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaseKeepAliveRequest:
    """Served by the leader without a log entry (see docs/api.md, "Leases")."""

    id: int


@dataclass(frozen=True, slots=True)
class LeaseKeepAliveResponse:
    header: ResponseHeader
    id: int = 0
    ttl: int = 0


@dataclass(frozen=True, slots=True)
class LeaseCheckpoint:
    """The remaining TTL (seconds) of one lease, as measured by the leader."""

    id: int
    remaining_ttl: float


@dataclass(frozen=True, slots=True)
class LeaseCheckpointRequest:
    """Internal command: the leader persists remaining TTLs through the log."""

    checkpoints: tuple[LeaseCheckpoint, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaseCheckpointResponse:
    header: ResponseHeader


@dataclass(frozen=True, slots=True)
class LeaseExpireRequest:
    """Internal command: the leader found these leases expired; revoke each of them."""

    ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaseExpireResponse:
    """``revoked`` lists the ids that still existed and were revoked (one revision each)."""

    header: ResponseHeader
    revoked: tuple[int, ...] = ()


Request = (
    RangeRequest
    | PutRequest
    | DeleteRangeRequest
    | TxnRequest
    | CompactionRequest
    | LeaseGrantRequest
    | LeaseRevokeRequest
    | LeaseTimeToLiveRequest
    | LeaseLeasesRequest
    | LeaseKeepAliveRequest
    | LeaseCheckpointRequest
    | LeaseExpireRequest
)
"""Anything a :class:`Command` may carry."""

CLIENT_WRITES = (
    PutRequest,
    DeleteRangeRequest,
    TxnRequest,
    CompactionRequest,
    LeaseGrantRequest,
    LeaseRevokeRequest,
)
"""The requests a client may have proposed through the log.  Everything else a Command can
carry (lease checkpoints and expiry) is internal: only the leader's own duties propose it."""

Response = (
    RangeResponse
    | PutResponse
    | DeleteRangeResponse
    | TxnResponse
    | CompactionResponse
    | LeaseGrantResponse
    | LeaseRevokeResponse
    | LeaseTimeToLiveResponse
    | LeaseLeasesResponse
    | LeaseKeepAliveResponse
    | LeaseCheckpointResponse
    | LeaseExpireResponse
)


@dataclass(frozen=True, slots=True)
class Command:
    """The envelope the leader proposes.  ``(client_id, seq)`` identifies a client write for
    exactly-once application (``client_id`` 0: no deduplication, used for internal commands);
    ``now`` is the leader's clock in seconds when it proposed the command — the only time the
    state machine ever sees."""

    request: Request
    client_id: int = 0
    seq: int = 0
    now: float = 0.0


# --- cluster and maintenance ----------------------------------------------------------------
#
# These never enter the log: the API service (raftkv.server.service) answers them from the
# member's own state, or from the leader's for the membership changes it forwards there.


@dataclass(frozen=True, slots=True)
class Member:
    """One member of the cluster, as the membership lists it."""

    id: int
    name: str
    peer_addr: str
    client_addr: str = ""
    is_learner: bool = False


@dataclass(frozen=True, slots=True)
class MemberListRequest:
    """Members as the cluster's configuration has them (linearizable: a read barrier first)."""


@dataclass(frozen=True, slots=True)
class MemberListResponse:
    header: ResponseHeader
    members: tuple[Member, ...] = ()


@dataclass(frozen=True, slots=True)
class MemberAddRequest:
    """Add a member (a voter, or a learner that replicates but does not vote)."""

    name: str
    peer_addr: str
    client_addr: str = ""
    is_learner: bool = False


@dataclass(frozen=True, slots=True)
class MemberAddResponse:
    header: ResponseHeader
    member: Member
    members: tuple[Member, ...] = ()

    @property
    def cluster_id(self) -> int:
        """The cluster the member joins (what its ``--cluster-id`` must be)."""
        return self.header.cluster_id


@dataclass(frozen=True, slots=True)
class MemberRemoveRequest:
    id: int


@dataclass(frozen=True, slots=True)
class MemberPromoteRequest:
    """Make a learner a voter (refused until it has caught up with the leader's log)."""

    id: int


@dataclass(frozen=True, slots=True)
class MemberUpdateRequest:
    """Change a member's advertised peer address (its id and name stay)."""

    id: int
    peer_addr: str


@dataclass(frozen=True, slots=True)
class MembersResponse:
    """The answer of a remove, promote or update: the members after the change."""

    header: ResponseHeader
    members: tuple[Member, ...] = ()


@dataclass(frozen=True, slots=True)
class StatusRequest:
    """``with_hash``: also compute the content hash (a walk of the whole store)."""

    with_hash: bool = False


@dataclass(frozen=True, slots=True)
class StatusResponse:
    """One member's view of itself and of the cluster."""

    header: ResponseHeader
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
    hash: Hash64
    is_learner: bool
    role: str
    version: str


@dataclass(frozen=True, slots=True)
class HealthRequest:
    """Health: the member can serve, and a linearizable read goes through."""


@dataclass(frozen=True, slots=True)
class HealthResponse:
    health: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class HashKVRequest:
    """The hash of the key space up to ``revision`` (0: the current revision)."""

    revision: int = 0


@dataclass(frozen=True, slots=True)
class HashKVResponse:
    header: ResponseHeader
    hash: Hash64
    revision: int
    compact_revision: int


@dataclass(frozen=True, slots=True)
class MoveLeaderRequest:
    """Hand leadership to the voter ``target_id``."""

    target_id: int


@dataclass(frozen=True, slots=True)
class MoveLeaderResponse:
    header: ResponseHeader
    leader: int


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """A consistent copy of the member's state, as a stream of chunks."""


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """One piece of a snapshot stream; the last one has ``sha256`` set (the hex SHA-256 of
    all ``data`` before it), ``size``, and the ``revision`` and Raft ``index`` it is at."""

    data: bytes = b""
    sha256: str = ""
    size: int = 0
    revision: int = 0
    index: int = 0


@dataclass(frozen=True, slots=True)
class WatchProgressRequest:
    """Ask every watch on this connection for a progress notification (etcd's progress
    request): each sends ``progress`` at the revision it has fully delivered."""


@dataclass(frozen=True, slots=True)
class WatchProgressResponse:
    watches: int
    """How many watches were asked."""


class AlarmType(IntEnum):
    """etcd's alarm kinds (same numbers)."""

    NONE = 0
    NOSPACE = 1
    CORRUPT = 2


class AlarmAction(IntEnum):
    GET = 0
    ACTIVATE = 1
    DEACTIVATE = 2


@dataclass(frozen=True, slots=True)
class AlarmMember:
    """An alarm raised on one member."""

    member_id: int
    alarm: AlarmType


@dataclass(frozen=True, slots=True)
class AlarmRequest:
    """List alarms (GET), or raise / clear one (``member_id`` 0 and ``alarm`` NONE: all)."""

    action: AlarmAction = AlarmAction.GET
    member_id: int = 0
    alarm: AlarmType = AlarmType.NONE


@dataclass(frozen=True, slots=True)
class AlarmResponse:
    header: ResponseHeader
    alarms: tuple[AlarmMember, ...] = ()


@dataclass(frozen=True, slots=True)
class DefragmentRequest:
    """Give the free pages of this member's store back to the file system."""


@dataclass(frozen=True, slots=True)
class DefragmentResponse:
    header: ResponseHeader
    size_before: int = 0
    size_after: int = 0
