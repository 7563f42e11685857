"""The Raft message codec of the peer transport: peer frame kinds, and raft values (messages,
entries, snapshots) to and from msgpack, validated.

Hot types (messages, entries) travel as plain msgpack *lists* in a fixed field order, not as
maps, which keeps frames small and encoding fast.  ``message_from_wire`` validates every field
and raises :class:`RemoteProtocolError` on anything malformed, so a bad peer can never hand
the core a half-built message; :func:`check_message` refuses values no real peer sends.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from raftkv.errors import LocalProtocolError, RemoteProtocolError
from raftkv.protocol.wire import short_repr
from raftkv.raft.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

# Peer frame kinds (first element of every frame after the handshake).
FRAME_MSGS: Final = 1
"""``[FRAME_MSGS, [message, ...]]`` — a batch of raft messages."""
FRAME_SNAP_BEGIN: Final = 2
"""``[FRAME_SNAP_BEGIN, stream_id, message_without_data, total_size, crc32]``."""
FRAME_SNAP_CHUNK: Final = 3
"""``[FRAME_SNAP_CHUNK, stream_id, offset, data]``."""
FRAME_SNAP_END: Final = 4
"""``[FRAME_SNAP_END, stream_id]`` — the receiver verifies size and crc32, then delivers."""

MAX_RAFT_INT: Final = (1 << 63) - 1
"""Every integer of a raft message (ids, terms, indexes) must fit SQLite's signed 64 bits."""
MAX_SANE_RAFT_INT: Final = 1 << 62
"""No legitimate term, index or commit gets this large (2^62 elections or entries), and what
is below it can still be incremented without overflowing int64: larger values are refused."""

# --- raft values ---------------------------------------------------------------------------

_MESSAGE_TYPES: Final = {int(t): t for t in MessageType}
_ENTRY_TYPES: Final = {int(t): t for t in EntryType}


def entry_to_wire(e: Entry) -> list[Any]:
    return [e.term, e.index, int(e.type), e.data]


def entry_from_wire(obj: Any) -> Entry:
    if type(obj) is not list or len(obj) != 4:
        raise RemoteProtocolError(f"entry: expected a list of 4, got {short_repr(obj)}")
    term, index, etype, data = obj
    _check_i64(term, "entry.term")
    _check_i64(index, "entry.index")
    et = _ENTRY_TYPES.get(etype) if type(etype) is int else None
    if et is None:
        raise RemoteProtocolError(f"entry: unknown type {etype!r}")
    if type(data) is not bytes:
        raise RemoteProtocolError("entry: data must be bytes")
    return Entry(term, index, et, data)


def conf_state_to_wire(cs: ConfState) -> list[Any]:
    return [list(cs.voters), list(cs.learners)]


def conf_state_from_wire(obj: Any) -> ConfState:
    if type(obj) is not list or len(obj) != 2:
        raise RemoteProtocolError(f"conf state: expected a list of 2, got {short_repr(obj)}")
    voters, learners = obj
    for name, ids in (("voters", voters), ("learners", learners)):
        if type(ids) is not list:
            raise RemoteProtocolError(f"conf state: {name} must be a list")
        for i in ids:
            _check_i64(i, f"conf state {name}")
    return ConfState(tuple(voters), tuple(learners))


def snapshot_meta_to_wire(m: SnapshotMeta) -> list[Any]:
    return [m.index, m.term, conf_state_to_wire(m.conf_state)]


def snapshot_meta_from_wire(obj: Any) -> SnapshotMeta:
    if type(obj) is not list or len(obj) != 3:
        raise RemoteProtocolError(f"snapshot meta: expected a list of 3, got {short_repr(obj)}")
    index, term, cs = obj
    _check_i64(index, "snapshot.index")
    _check_i64(term, "snapshot.term")
    return SnapshotMeta(index, term, conf_state_from_wire(cs))


def snapshot_to_wire(s: Snapshot) -> list[Any]:
    return [snapshot_meta_to_wire(s.meta), s.data]


def snapshot_from_wire(obj: Any) -> Snapshot:
    if type(obj) is not list or len(obj) != 2:
        raise RemoteProtocolError(f"snapshot: expected a list of 2, got {short_repr(obj)}")
    meta, data = obj
    if type(data) is not bytes:
        raise RemoteProtocolError("snapshot: data must be bytes")
    return Snapshot(snapshot_meta_from_wire(meta), data)


_MESSAGE_FIELDS: Final = 12


def message_to_wire(m: Message) -> list[Any]:
    """A :class:`Message` as a flat list in field order (see ``message_from_wire``)."""
    return [
        int(m.type),
        m.to,
        m.frm,
        m.term,
        m.log_term,
        m.index,
        [[e.term, e.index, int(e.type), e.data] for e in m.entries],
        m.commit,
        m.reject,
        m.reject_hint,
        None if m.snapshot is None else snapshot_to_wire(m.snapshot),
        m.context,
    ]


def message_from_wire(obj: Any) -> Message:
    """Rebuild and validate a :class:`Message`; :class:`RemoteProtocolError` if malformed."""
    if type(obj) is not list or len(obj) != _MESSAGE_FIELDS:
        raise RemoteProtocolError(
            f"message: expected a list of {_MESSAGE_FIELDS}, got {short_repr(obj)}"
        )
    mtype, to, frm, term, log_term, index, ents, commit, reject, hint, snap, ctx = obj
    mt = _MESSAGE_TYPES.get(mtype) if type(mtype) is int else None
    if mt is None:
        raise RemoteProtocolError(f"message: unknown type {mtype!r}")
    for name, v in (
        ("to", to),
        ("frm", frm),
        ("term", term),
        ("log_term", log_term),
        ("index", index),
        ("commit", commit),
        ("reject_hint", hint),
    ):
        _check_i64(v, f"message.{name}")
    if type(reject) is not bool:
        raise RemoteProtocolError("message.reject must be a bool")
    if type(ents) is not list:
        raise RemoteProtocolError("message.entries must be a list")
    if type(ctx) is not bytes:
        raise RemoteProtocolError("message.context must be bytes")
    return Message(
        type=mt,
        to=to,
        frm=frm,
        term=term,
        log_term=log_term,
        index=index,
        entries=tuple([entry_from_wire(e) for e in ents]),
        commit=commit,
        reject=reject,
        reject_hint=hint,
        snapshot=None if snap is None else snapshot_from_wire(snap),
        context=ctx,
    )


def check_message(m: Message) -> None:
    """Refuse (:class:`RemoteProtocolError`, with the reason) what no correct member sends.

    ``message_from_wire`` already bounds every integer to 0..2^63-1; this adds rules that hold
    for every message raftkv's core sends, so they never refuse a legitimate one:

    - every term, log term, index, commit, reject hint, entry term and index, and snapshot
      index and term is at most :data:`MAX_SANE_RAFT_INT` (2^62);
    - APP: the entries' indexes are ``index + 1, index + 2, ...`` and no entry's term, nor
      ``log_term``, is above the message's term (a leader's log holds no later term);
    - VOTE and PRE_VOTE: the candidate's last log term is not above the term it asks for;
    - SNAP: carries a snapshot, whose term is not above the message's term.

    A heartbeat's commit is ``min(commit, the follower's match)`` on the leader, so nothing in
    the message bounds it but the 2^62 rule (the core checks it against its own log).
    """
    for name, v in (
        ("term", m.term),
        ("log_term", m.log_term),
        ("index", m.index),
        ("commit", m.commit),
        ("reject_hint", m.reject_hint),
    ):
        if v > MAX_SANE_RAFT_INT:
            raise RemoteProtocolError(f"{m.type.name} message: {name} {v} is beyond 2^62")
    snap = m.snapshot
    if snap is not None and max(snap.meta.index, snap.meta.term) > MAX_SANE_RAFT_INT:
        raise RemoteProtocolError(
            f"{m.type.name} message: snapshot index {snap.meta.index} or term "
            f"{snap.meta.term} is beyond 2^62"
        )
    t = m.type
    if t == MessageType.APP:
        if m.log_term > m.term:
            raise RemoteProtocolError(f"APP message: log_term {m.log_term} above term {m.term}")
        for i, e in enumerate(m.entries):
            if e.index != m.index + 1 + i:
                raise RemoteProtocolError(
                    f"APP message: entry {i} has index {e.index}, expected {m.index + 1 + i}"
                )
            if e.term > m.term:
                raise RemoteProtocolError(f"APP message: entry term {e.term} above term {m.term}")
    elif t in (MessageType.VOTE, MessageType.PRE_VOTE):
        if m.log_term > m.term:
            raise RemoteProtocolError(
                f"{t.name} message: last log term {m.log_term} above term {m.term}"
            )
    elif t == MessageType.SNAP:
        if snap is None:
            raise RemoteProtocolError("SNAP message without a snapshot")
        if snap.meta.term > m.term:
            raise RemoteProtocolError(
                f"SNAP message: snapshot term {snap.meta.term} above term {m.term}"
            )
    for e in m.entries:
        if max(e.index, e.term) > MAX_SANE_RAFT_INT:
            raise RemoteProtocolError(
                f"{t.name} message: entry index {e.index} or term {e.term} is beyond 2^62"
            )


# --- peer frames ---------------------------------------------------------------------------


def snapshot_chunk_frames(
    stream_id: int, m: Message, chunk_size: int, crc32: int
) -> Iterator[list[Any]]:
    """Frames that stream ``m`` (a SNAP message) with its data cut into ``chunk_size`` pieces."""
    if m.snapshot is None:
        raise LocalProtocolError("snapshot_chunk_frames needs a message with a snapshot")
    if chunk_size <= 0:
        raise LocalProtocolError("chunk_size must be positive")
    data = memoryview(m.snapshot.data)
    head = message_to_wire(m)
    head[10] = [snapshot_meta_to_wire(m.snapshot.meta), b""]
    yield [FRAME_SNAP_BEGIN, stream_id, head, len(data), crc32]
    for off in range(0, len(data), chunk_size):
        yield [FRAME_SNAP_CHUNK, stream_id, off, bytes(data[off : off + chunk_size])]
    yield [FRAME_SNAP_END, stream_id]


def frame_kind(obj: Any) -> int:
    """The kind of a peer frame, validated to be one we know."""
    if type(obj) is not list or not obj or type(obj[0]) is not int:
        raise RemoteProtocolError(f"peer frame: expected [kind, ...], got {short_repr(obj)}")
    kind: int = obj[0]
    if kind not in (FRAME_MSGS, FRAME_SNAP_BEGIN, FRAME_SNAP_CHUNK, FRAME_SNAP_END):
        raise RemoteProtocolError(f"peer frame: unknown kind {kind}")
    return kind


def _check_i64(v: Any, what: str) -> None:
    if type(v) is not int or v < 0 or v > MAX_RAFT_INT:
        raise RemoteProtocolError(f"{what}: expected an int in 0..2^63-1, got {short_repr(v)}")
