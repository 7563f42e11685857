"""The sans-IO wire format: length-prefixed msgpack frames and the handshake.

No I/O happens here (model: h11).  A frame is a 4-byte big-endian body length followed by a
msgpack body.  :class:`FrameDecoder` turns bytes into objects and raises only
:class:`FrameTooLarge` or :class:`RemoteProtocolError` on bad input, so a transport can close
that one connection and carry on.  Encoding something we cannot send raises
:class:`LocalProtocolError` (a bug on our side).

Client connections and peer links share this framing and handshake; what a peer frame carries
(raft messages, snapshot streams) is :mod:`raftkv.server.transport.messages`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from raftkv.errors import (
    FrameTooLarge,
    HandshakeRefused,
    LocalProtocolError,
    RemoteProtocolError,
)

PROTOCOL_VERSION: Final = 2
"""Bumped on any incompatible change of the frame layout or of a hot type's field order."""

MAX_CLIENT_FRAME: Final = 4 * 1024 * 1024
MAX_PEER_FRAME: Final = 64 * 1024 * 1024

MAX_PRE_HANDSHAKE_FRAME: Final = 64 * 1024
"""The largest frame accepted before a connection's handshake has completed (a handshake is
a few dozen bytes): an unauthenticated connection can never make a server buffer more."""

_LEN = struct.Struct(">I")
HEADER_SIZE: Final = _LEN.size
_U64_MAX: Final = (1 << 64) - 1

ROLE_PEER: Final = "peer"
ROLE_CLIENT: Final = "client"
_ROLES: Final = frozenset({ROLE_PEER, ROLE_CLIENT})

_HELLO: Final = "raftkv-hello"
_WELCOME: Final = "raftkv-welcome"
_REFUSED: Final = "raftkv-refused"


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
            raise RemoteProtocolError(f"expected a handshake, got {short_repr(obj)}")
        _, version, cluster_id, node_id, role = obj
        check_u64(version, "protocol_version")
        check_u64(cluster_id, "cluster_id")
        check_u64(node_id, "node_id")
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
    raise RemoteProtocolError(f"expected a handshake reply, got {short_repr(obj)}")


# --- helpers -------------------------------------------------------------------------------


def check_u64(v: Any, what: str) -> None:
    """Raise :class:`RemoteProtocolError` unless ``v`` is an int in 0..2^64-1."""
    if type(v) is not int or v < 0 or v > _U64_MAX:
        raise RemoteProtocolError(f"{what}: expected an unsigned 64-bit int, got {short_repr(v)}")


def short_repr(obj: Any) -> str:
    """``repr(obj)`` cut to 80 characters, for error messages about remote input."""
    r = repr(obj)
    return r if len(r) <= 80 else r[:77] + "..."
