"""The sans-IO wire codec: length-prefixed msgpack frames, the handshake, raft messages.

No I/O happens here (model: h11).  A frame is a 4-byte big-endian body length followed by a
msgpack body.  :class:`FrameDecoder` turns bytes into objects and raises only
:class:`FrameTooLarge` or :class:`RemoteProtocolError` on bad input, so a transport can close
that one connection and carry on.  Encoding something we cannot send raises
:class:`LocalProtocolError` (a bug on our side).

Hot types (messages, entries) travel as plain msgpack *lists* in a fixed field order, not as
maps, which keeps frames small and encoding fast.  ``message_from_wire`` validates every field
and raises :class:`RemoteProtocolError` on anything malformed, so a bad peer can never hand
the core a half-built message.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from raftkv.errors import (
    FrameTooLarge,
    HandshakeRefused,
    LocalProtocolError,
    RemoteProtocolError,
)
from raftkv.raft.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

PROTOCOL_VERSION: Final = 1
"""Bumped on any incompatible change of the frame layout or of a hot type's field order."""

MAX_CLIENT_FRAME: Final = 4 * 1024 * 1024
MAX_PEER_FRAME: Final = 64 * 1024 * 1024

MAX_PRE_HANDSHAKE_FRAME: Final = 64 * 1024
"""The largest frame accepted before a connection's handshake has completed (a handshake is
a few dozen bytes): an unauthenticated connection can never make a server buffer more."""

_LEN = struct.Struct(">I")
HEADER_SIZE: Final = _LEN.size
_U64_MAX: Final = (1 << 64) - 1

MAX_RAFT_INT: Final = (1 << 63) - 1
"""Every integer of a raft message (ids, terms, indexes) must fit SQLite's signed 64 bits."""
MAX_SANE_RAFT_INT: Final = 1 << 62
"""No legitimate term, index or commit gets this large (2^62 elections or entries), and what
is below it can still be incremented without overflowing int64: larger values are refused."""

ROLE_PEER: Final = "peer"
ROLE_CLIENT: Final = "client"
_ROLES: Final = frozenset({ROLE_PEER, ROLE_CLIENT})

_HELLO: Final = "raftkv-hello"
_WELCOME: Final = "raftkv-welcome"
_REFUSED: Final = "raftkv-refused"

# Peer frame kinds (first element of every frame after the handshake).
FRAME_MSGS: Final = 1
"""``[FRAME_MSGS, [message, ...]]`` — a batch of raft messages."""
FRAME_SNAP_BEGIN: Final = 2
"""``[FRAME_SNAP_BEGIN, stream_id, message_without_data, total_size, crc32]``."""
FRAME_SNAP_CHUNK: Final = 3
"""``[FRAME_SNAP_CHUNK, stream_id, offset, data]``."""
FRAME_SNAP_END: Final = 4
"""``[FRAME_SNAP_END, stream_id]`` — the receiver verifies size and crc32, then delivers."""


# --- frames --------------------------------------------------------------------------------


def encode_frame(obj: Any, max_frame: int | None = None) -> bytes:
    """Encode ``obj`` as one length-prefixed msgpack frame."""
    try:
        body: bytes = msgpack.packb(obj, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode frame: {exc}") from exc
    if max_frame is not None and len(body) > max_frame:
        raise FrameTooLarge(f"frame of {len(body)} bytes exceeds the limit of {max_frame}")
    if len(body) > 0xFFFFFFFF:
        raise FrameTooLarge(f"frame of {len(body)} bytes cannot be length-prefixed")
    return _LEN.pack(len(body)) + body


class FrameDecoder:
    """Incremental decoder: ``feed(bytes)`` returns every complete frame's object.

    After it has raised once the decoder is broken and raises the same error again: the
    stream is out of sync and the connection must be closed.

    ``max_frame`` may be changed at any time; a frame's length is checked against it when the
    frame's header is parsed.  A server starts a connection with a small limit
    (:data:`MAX_PRE_HANDSHAKE_FRAME`), reads the handshake with ``feed(data, max_frames=1)``
    (what follows it stays buffered, unchecked), then raises the limit and calls ``feed(b"")``.
    """

    __slots__ = ("_buf", "_error", "max_frame")

    def __init__(self, max_frame: int = MAX_CLIENT_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._error: FrameTooLarge | RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buf)

    def feed(
        self, data: bytes | bytearray | memoryview, max_frames: int | None = None
    ) -> list[Any]:
        """Buffer ``data``; return the complete frames (at most ``max_frames`` of them)."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        buf += data
        out: list[Any] = []
        pos = 0
        n = len(buf)
        try:
            while n - pos >= HEADER_SIZE and (max_frames is None or len(out) < max_frames):
                (length,) = _LEN.unpack_from(buf, pos)
                if length > self.max_frame:
                    raise FrameTooLarge(
                        f"frame of {length} bytes exceeds the limit of {self.max_frame}"
                    )
                end = pos + HEADER_SIZE + length
                if end > n:
                    break
                out.append(_unpack(bytes(buf[pos + HEADER_SIZE : end])))
                pos = end
        except (FrameTooLarge, RemoteProtocolError) as exc:
            self._error = exc
            raise
        finally:
            if pos:
                del buf[:pos]
        return out


def _unpack(body: bytes) -> Any:
    if not body:
        raise RemoteProtocolError("empty frame body")
    try:
        return msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises many types; all mean "the peer sent garbage"
        raise RemoteProtocolError(f"malformed msgpack frame: {type(exc).__name__}: {exc}") from exc


# --- handshake -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handshake:
    """The first frame on every connection, sent by the dialling side."""

    protocol_version: int
    cluster_id: int
    node_id: int
    role: str

    def to_wire(self) -> list[Any]:
        return [_HELLO, self.protocol_version, self.cluster_id, self.node_id, self.role]

    @classmethod
    def from_wire(cls, obj: Any) -> Handshake:
        if not isinstance(obj, list) or len(obj) != 5 or obj[0] != _HELLO:
            raise RemoteProtocolError(f"expected a handshake, got {_short(obj)}")
        _, version, cluster_id, node_id, role = obj
        _check_u64(version, "protocol_version")
        _check_u64(cluster_id, "cluster_id")
        _check_u64(node_id, "node_id")
        if role not in _ROLES:
            raise RemoteProtocolError(f"handshake: unknown role {role!r}")
        return cls(version, cluster_id, node_id, role)


def check_handshake(
    hs: Handshake,
    *,
    cluster_id: int,
    role: str,
    allowed_node_ids: frozenset[int] | None = None,
    own_node_id: int | None = None,
) -> None:
    """Refuse a handshake of another protocol version, cluster, role or an unknown node."""
    if hs.protocol_version != PROTOCOL_VERSION:
        raise HandshakeRefused(
            f"protocol version {hs.protocol_version} is not supported (we speak {PROTOCOL_VERSION})"
        )
    if hs.cluster_id != cluster_id:
        raise HandshakeRefused(
            f"cluster id mismatch: peer is in cluster {hs.cluster_id:#x}, we are in {cluster_id:#x}"
        )
    if hs.role != role:
        raise HandshakeRefused(f"role {hs.role!r} not accepted here (expected {role!r})")
    if role == ROLE_PEER:
        if own_node_id is not None and hs.node_id == own_node_id:
            raise HandshakeRefused(f"peer claims our own node id {own_node_id}")
        if allowed_node_ids is not None and hs.node_id not in allowed_node_ids:
            raise HandshakeRefused(f"node {hs.node_id} is not a member of this cluster")


def handshake_reply(refused_reason: str | None = None) -> list[Any]:
    """The answer to a handshake: a welcome, or a refusal with a human-readable reason."""
    if refused_reason is None:
        return [_WELCOME, PROTOCOL_VERSION]
    return [_REFUSED, refused_reason]


def check_handshake_reply(obj: Any) -> None:
    """Raise :class:`HandshakeRefused` (with the peer's reason) unless ``obj`` is a welcome."""
    if isinstance(obj, list) and len(obj) == 2:
        if obj[0] == _WELCOME and obj[1] == PROTOCOL_VERSION:
            return
        if obj[0] == _REFUSED and isinstance(obj[1], str):
            raise HandshakeRefused(f"refused by peer: {obj[1]}")
    raise RemoteProtocolError(f"expected a handshake reply, got {_short(obj)}")


# --- raft values ---------------------------------------------------------------------------

_MESSAGE_TYPES: Final = {int(t): t for t in MessageType}
_ENTRY_TYPES: Final = {int(t): t for t in EntryType}


def entry_to_wire(e: Entry) -> list[Any]:
    return [e.term, e.index, int(e.type), e.data]


def entry_from_wire(obj: Any) -> Entry:
    if type(obj) is not list or len(obj) != 4:
        raise RemoteProtocolError(f"entry: expected a list of 4, got {_short(obj)}")
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
        raise RemoteProtocolError(f"conf state: expected a list of 2, got {_short(obj)}")
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
        raise RemoteProtocolError(f"snapshot meta: expected a list of 3, got {_short(obj)}")
    index, term, cs = obj
    _check_i64(index, "snapshot.index")
    _check_i64(term, "snapshot.term")
    return SnapshotMeta(index, term, conf_state_from_wire(cs))


def snapshot_to_wire(s: Snapshot) -> list[Any]:
    return [snapshot_meta_to_wire(s.meta), s.data]


def snapshot_from_wire(obj: Any) -> Snapshot:
    if type(obj) is not list or len(obj) != 2:
        raise RemoteProtocolError(f"snapshot: expected a list of 2, got {_short(obj)}")
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
            f"message: expected a list of {_MESSAGE_FIELDS}, got {_short(obj)}"
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
        raise RemoteProtocolError(f"peer frame: expected [kind, ...], got {_short(obj)}")
    kind: int = obj[0]
    if kind not in (FRAME_MSGS, FRAME_SNAP_BEGIN, FRAME_SNAP_CHUNK, FRAME_SNAP_END):
        raise RemoteProtocolError(f"peer frame: unknown kind {kind}")
    return kind


# --- helpers -------------------------------------------------------------------------------


def _check_i64(v: Any, what: str) -> None:
    if type(v) is not int or v < 0 or v > MAX_RAFT_INT:
        raise RemoteProtocolError(f"{what}: expected an int in 0..2^63-1, got {_short(v)}")


def _check_u64(v: Any, what: str) -> None:
    if type(v) is not int or v < 0 or v > _U64_MAX:
        raise RemoteProtocolError(f"{what}: expected an unsigned 64-bit int, got {_short(v)}")


def _short(obj: Any) -> str:
    r = repr(obj)
    return r if len(r) <= 80 else r[:77] + "..."
