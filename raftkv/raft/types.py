"""Messages, entries, snapshots and the Ready batch of the sans-IO Raft core.

Everything here is an immutable value (``frozen=True, slots=True``); kinds are ``IntEnum``s.
Names follow etcd-io/raft (``raftpb``) in snake_case so the code can be read against the Go
code and the Raft paper side by side.  Nothing here does I/O; the wire layer
(:mod:`raftkv.protocol.wire`) turns these values into msgpack frames and back.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

NONE = 0
"""The id that means "no node" (no vote, no leader).  Real node ids are >= 1."""


class MessageType(IntEnum):
    # local messages: never sent over the network
    HUP = 0  # start an election (campaign)
    BEAT = 1  # leader: broadcast heartbeats
    PROP = 2  # a proposal
    # network messages
    APP = 3
    APP_RESP = 4
    VOTE = 5
    VOTE_RESP = 6
    SNAP = 7
    HEARTBEAT = 8
    HEARTBEAT_RESP = 9
    UNREACHABLE = 10  # local: transport reports a peer unreachable
    SNAP_STATUS = 11  # local: transport reports snapshot send finished / failed
    CHECK_QUORUM = 12  # local
    TRANSFER_LEADER = 13
    TIMEOUT_NOW = 14
    READ_INDEX = 15
    READ_INDEX_RESP = 16
    PRE_VOTE = 17
    PRE_VOTE_RESP = 18


LOCAL_MESSAGES = frozenset(
    {
        MessageType.HUP,
        MessageType.BEAT,
        MessageType.UNREACHABLE,
        MessageType.SNAP_STATUS,
        MessageType.CHECK_QUORUM,
    }
)

RESPONSE_MESSAGES = frozenset(
    {
        MessageType.APP_RESP,
        MessageType.VOTE_RESP,
        MessageType.HEARTBEAT_RESP,
        MessageType.UNREACHABLE,
        MessageType.READ_INDEX_RESP,
        MessageType.PRE_VOTE_RESP,
    }
)


def vote_resp_type(t: MessageType) -> MessageType:
    if t == MessageType.VOTE:
        return MessageType.VOTE_RESP
    if t == MessageType.PRE_VOTE:
        return MessageType.PRE_VOTE_RESP
    raise ValueError(f"not a vote message type: {t!r}")


class EntryType(IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""

    def size(self) -> int:
        """Approximate encoded size, used for flow control and batching limits."""
        return len(self.data) + 24


class ConfChangeType(IntEnum):
    ADD_VOTER = 0
    REMOVE_NODE = 1
    ADD_LEARNER = 2
    PROMOTE_LEARNER = 3


_CC_HEADER = struct.Struct(">BQ")


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A single-server membership change (Raft thesis section 4.1)."""

    type: ConfChangeType
    node_id: int
    context: bytes = b""

    def encode(self) -> bytes:
        return _CC_HEADER.pack(int(self.type), self.node_id) + self.context

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        if len(data) < _CC_HEADER.size:
            raise ValueError("conf change payload too short")
        t, node_id = _CC_HEADER.unpack_from(data)
        return cls(ConfChangeType(t), node_id, bytes(data[_CC_HEADER.size :]))


@dataclass(frozen=True, slots=True)
class ConfState:
    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()

    def all_ids(self) -> tuple[int, ...]:
        return tuple(sorted({*self.voters, *self.learners}))


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""

    def is_empty(self) -> bool:
        return self.meta.index == 0


EMPTY_SNAPSHOT = Snapshot()


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message that depends on it leaves the node."""

    term: int = 0
    vote: int = NONE
    commit: int = 0

    def is_empty(self) -> bool:
        return self.term == 0 and self.vote == NONE and self.commit == 0


EMPTY_HARD_STATE = HardState()


@dataclass(frozen=True, slots=True)
class Message:
    type: MessageType
    to: int = NONE
    frm: int = NONE
    term: int = 0
    log_term: int = 0  # term of the entry at ``index`` (APP) / of the last entry (VOTE)
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0  # on APP_RESP reject: the follower's hint index
    snapshot: Snapshot | None = None
    context: bytes = b""  # ReadIndex request context; "transfer" tag on campaign votes


class StateRole(IntEnum):
    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    PRE_CANDIDATE = 3


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state that need not be persisted; reported when it changes."""

    leader_id: int = NONE
    role: StateRole = StateRole.FOLLOWER


@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex answer: once ``applied >= index`` a read tagged ``request_ctx`` may run."""

    index: int
    request_ctx: bytes


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work the application must do, in this order:

    0. ``early_messages`` may be sent at once, before or while step 1 runs;
    1. persist ``hard_state``, ``entries`` and ``snapshot`` (one transaction, fsynced);
    2. only then send ``messages``;
    3. apply ``snapshot`` (if any) and then ``committed_entries`` in order, exactly once;
    4. call ``advance(ready)``.

    The core decides which messages are early (thesis 10.2.1): a leader's appends and
    heartbeats of its current term, once that term is durable.  They promise nothing about
    the leader's own disk; the commit index that counts the leader's own new entries leaves
    only in a later Ready, and the application must not ask for the next Ready before this
    one is persisted.  Everything else (votes, acknowledgements, snapshots, read answers)
    is in ``messages`` and waits for step 1.  Sending both after step 1 is always correct.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None  # None: unchanged since the last Ready
    entries: tuple[Entry, ...] = ()  # to append to stable storage
    snapshot: Snapshot | None = None  # to persist and apply (follower restore)
    committed_entries: tuple[Entry, ...] = ()
    messages: tuple[Message, ...] = ()  # only once the Ready is durable (step 2)
    early_messages: tuple[Message, ...] = ()  # may leave before the Ready is durable
    read_states: tuple[ReadState, ...] = ()
    must_sync: bool = False

    def contains_updates(self) -> bool:
        return bool(
            self.soft_state is not None
            or self.hard_state is not None
            or self.entries
            or self.snapshot is not None
            or self.committed_entries
            or self.messages
            or self.early_messages
            or self.read_states
        )
