"""The values the client takes and returns: key helpers (:func:`to_bytes`,
:func:`key_range`), txn operations (:func:`op_put`, :func:`op_get`, :func:`op_delete`, as
etcd clientv3's ``OpPut`` / ``OpGet`` / ``OpDelete``), the answers of the cluster and
maintenance calls, and the watch items; with the checks that turn a server's plain answer
into them (a malformed answer is :class:`~raftkv.errors.RemoteProtocolError`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, Final, TypeVar

from raftkv import api
from raftkv.api import ALL_KEYS, DeleteRangeRequest, Event, PutRequest, RangeRequest, prefix_end
from raftkv.errors import InvalidArgument, RemoteProtocolError
from raftkv.protocol import codec

__all__ = [
    "DEFAULT_ENDPOINT",
    "Bytesish",
    "EndpointHealth",
    "EndpointStatus",
    "HashKVResponse",
    "Member",
    "MemberAddResponse",
    "SnapshotInfo",
    "WatchFilter",
    "WatchResponse",
    "as_dict",
    "decode",
    "endpoint_status",
    "key_range",
    "op_delete",
    "op_get",
    "op_put",
    "to_bytes",
    "watch_response",
]

T = TypeVar("T")

Bytesish = bytes | str
"""Keys and values may be given as ``str`` (encoded UTF-8) or ``bytes``."""

DEFAULT_ENDPOINT: Final = "127.0.0.1:2379"


def to_bytes(v: Bytesish) -> bytes:
    """``str`` -> UTF-8 bytes; bytes unchanged."""
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v)
    raise InvalidArgument(f"expected bytes or str, got {type(v).__name__}")


def key_range(
    key: Bytesish, *, prefix: bool = False, range_end: Bytesish | None = None
) -> tuple[bytes, bytes]:
    """``(key, range_end)`` as the protocol wants it.  ``prefix`` on an empty key selects every
    key (etcd's ``--prefix ""``)."""
    k = to_bytes(key)
    if prefix and range_end is not None:
        raise InvalidArgument("give either prefix or range_end, not both")
    if prefix:
        if not k:
            return ALL_KEYS, ALL_KEYS
        return k, prefix_end(k)
    if range_end is not None:
        end = to_bytes(range_end)
        return (ALL_KEYS if not k and end == ALL_KEYS else k), end
    return k, b""


# --- values returned by the client ---------------------------------------------------------


class WatchFilter(IntEnum):
    """etcd's ``WatchCreateRequest.FilterType``: drop events of this kind."""

    NOPUT = 0
    NODELETE = 1


@dataclass(frozen=True, slots=True)
class WatchResponse:
    """All events of one revision (atomic), or a progress notification (``events`` empty)."""

    revision: int
    events: tuple[Event, ...] = ()
    progress: bool = False
    compact_revision: int = 0


Member = api.Member
"""One member of the cluster (the api value)."""


MemberAddResponse = api.MemberAddResponse
"""The member just added, the membership after the change, and (``cluster_id``) the
cluster the new member joins (the api value)."""


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """One member's view of itself (etcdctl ``endpoint status``)."""

    endpoint: str
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
    hash: int
    is_learner: bool
    version: str
    role: str

    @property
    def is_leader(self) -> bool:
        """Is this member the leader (by its own view)?"""
        return self.id != 0 and self.id == self.leader


@dataclass(frozen=True, slots=True)
class EndpointHealth:
    """The answer of ``health``: whether the member has a leader and serves a
    linearizable read; ``reason`` says why not."""

    endpoint: str
    health: bool
    took: float
    """Seconds the check took."""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class HashKVResponse:
    """The hash of one member's MVCC history up to ``revision`` (compare members with it)."""

    endpoint: str
    hash: int
    revision: int
    compact_revision: int


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A snapshot file written by ``snapshot_save``: its size, SHA-256, and the revision and
    Raft index it holds."""

    path: Path
    size: int
    sha256: str
    revision: int
    index: int


# --- txn helpers (etcd clientv3's OpPut / OpGet / OpDelete) ----------------------------------


def op_put(key: Bytesish, value: Bytesish, *, lease: int = 0, prev_kv: bool = False) -> PutRequest:
    """A put for a txn's ``success`` / ``failure`` branch."""
    return PutRequest(to_bytes(key), to_bytes(value), lease=lease, prev_kv=prev_kv)


def op_get(
    key: Bytesish, *, prefix: bool = False, range_end: Bytesish | None = None, limit: int = 0
) -> RangeRequest:
    """A range read for a txn branch (``prefix`` / ``range_end`` as in ``Client.get``)."""
    k, end = key_range(key, prefix=prefix, range_end=range_end)
    return RangeRequest(k, end, limit=limit)


def op_delete(
    key: Bytesish, *, prefix: bool = False, range_end: Bytesish | None = None, prev_kv: bool = False
) -> DeleteRangeRequest:
    """A delete for a txn branch (``prefix`` / ``range_end`` as in ``Client.delete``)."""
    k, end = key_range(key, prefix=prefix, range_end=range_end)
    return DeleteRangeRequest(k, end, prev_kv=prev_kv)


# --- decoding the server's answers --------------------------------------------------------


def decode(cls: type[T], plain: Any) -> T:
    """A plain (msgpack) answer as the api value ``cls``; checked by the codec."""
    return codec.from_plain(cls, plain)


def as_dict(v: Any) -> dict[str, Any]:
    """``v`` if it is a map; RemoteProtocolError otherwise."""
    if not isinstance(v, dict):
        raise RemoteProtocolError(f"expected a map, got {type(v).__name__}")
    return v


def endpoint_status(addr: str, st: api.StatusResponse) -> EndpointStatus:
    """A STATUS answer from ``addr`` as an :class:`EndpointStatus`."""
    return EndpointStatus(
        endpoint=addr,
        id=st.id,
        name=st.name,
        cluster_id=st.cluster_id,
        leader=st.leader,
        term=st.term,
        raft_index=st.raft_index,
        raft_applied_index=st.raft_applied_index,
        commit_index=st.commit_index,
        revision=st.revision,
        compact_revision=st.compact_revision,
        db_size=st.db_size,
        hash=st.hash,
        is_learner=st.is_learner,
        version=st.version,
        role=st.role,
    )


def watch_response(item: Any) -> WatchResponse:
    """One item of a watch stream as a :class:`WatchResponse`."""
    d = as_dict(item)
    try:
        events = tuple(codec.from_plain(Event, e) for e in d.get("events") or [])
        return WatchResponse(
            revision=int(d["revision"]),
            events=events,
            progress=bool(d.get("progress", False)),
            compact_revision=int(d.get("compact_revision", 0)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise RemoteProtocolError(f"malformed watch item: {e}") from None
