"""The client protocol: what travels on a client connection, shared by server and client.

Transport: the frames of :mod:`raftkv.protocol.wire` (4-byte length + msgpack body) on TCP.  The
first frame each way is the handshake (:class:`raftkv.protocol.wire.Handshake` with role
``"client"``; a client that does not know the cluster id sends 0 and the server accepts it; a
non-zero cluster id must match).

After the handshake, every frame is a list:

* request:   ``[req_id, method, payload]`` — ``req_id`` is a client-chosen int, unique among
  the requests in flight on that connection, so many requests are multiplexed on one
  connection; ``method`` is one of :class:`Method`; ``payload`` is the plain (msgpack) form of
  the request (:func:`raftkv.protocol.codec.to_plain`) or a dict for the admin methods below.
* response:  ``[req_id, Reply.OK, payload]`` or ``[req_id, Reply.ERROR, [code, message,
  details]]`` (:func:`raftkv.protocol.codec.encode_error`); the client rebuilds the same exception.
* stream item: ``[req_id, Reply.STREAM, payload]`` for watch events and lease keep-alive
  answers; a stream ends with ``[req_id, Reply.END, error_or_None]``.
* cancel:    ``[req_id, "cancel", None]`` ends the stream ``req_id``.

Writes carry exactly-once tags: the payload of PUT / DELETE_RANGE / TXN / COMPACT /
LEASE_GRANT / LEASE_REVOKE is the plain form of :class:`raftkv.api.Command` (``client_id``,
``seq``; the server stamps ``now``).  A retried ``(client_id, seq)`` gets its original answer.

Writes go to the leader.  A member that is not the leader answers ``NotLeader`` with
``leader_hint`` (the leader's id) and ``leader_addr`` (its client address, ``host:port``), and
the client retries there.  Reads: a linearizable RANGE is served by any member (a follower
asks the leader for a read index, then serves locally); ``serializable=True`` is served from
local state at once.
"""

from __future__ import annotations

import hashlib
from enum import IntEnum, StrEnum
from typing import Any, Final


class Reply(IntEnum):
    OK = 0
    ERROR = 1
    STREAM = 2
    END = 3


class Method(StrEnum):
    # KV (payloads: raftkv.api requests; writes wrapped in raftkv.api.Command)
    RANGE = "range"
    PUT = "put"
    DELETE_RANGE = "delete_range"
    TXN = "txn"
    COMPACT = "compact"
    # leases
    LEASE_GRANT = "lease_grant"
    LEASE_REVOKE = "lease_revoke"
    LEASE_TIME_TO_LIVE = "lease_time_to_live"
    LEASE_LEASES = "lease_leases"
    LEASE_KEEP_ALIVE = "lease_keep_alive"  # stream: one request item per keep-alive
    # watch (stream)
    WATCH = "watch"
    WATCH_PROGRESS = "watch_progress"  # progress on this connection's watches (below)
    # cluster / maintenance (payload: dict, answer: dict)
    STATUS = "status"
    HEALTH = "health"
    HASH_KV = "hash_kv"
    MEMBER_LIST = "member_list"
    MEMBER_ADD = "member_add"
    MEMBER_REMOVE = "member_remove"
    MEMBER_PROMOTE = "member_promote"
    MEMBER_UPDATE = "member_update"
    MOVE_LEADER = "move_leader"
    ALARM = "alarm"
    DEFRAGMENT = "defragment"
    SNAPSHOT = "snapshot"  # stream of SnapshotChunk values (below)
    CANCEL = "cancel"


# Cluster and maintenance calls carry typed values of raftkv.api, encoded by the codec like
# every other request and answer:
#
# STATUS         StatusRequest(with_hash)          -> StatusResponse
# HEALTH         HealthRequest()                   -> HealthResponse(health, reason)
# HASH_KV        HashKVRequest(revision)           -> HashKVResponse
# MEMBER_LIST    MemberListRequest()               -> MemberListResponse(header, members)
# MEMBER_ADD     MemberAddRequest(name, peer_addr, client_addr, is_learner)
#                                                  -> MemberAddResponse(header, member, members)
# MEMBER_REMOVE  MemberRemoveRequest(id)           -> MembersResponse(header, members)
# MEMBER_PROMOTE MemberPromoteRequest(id)          -> MembersResponse(header, members)
# MEMBER_UPDATE  MemberUpdateRequest(id, peer_addr) -> MembersResponse(header, members)
# MOVE_LEADER    MoveLeaderRequest(target_id)      -> MoveLeaderResponse(header, leader)
# ALARM          AlarmRequest(action, member_id, alarm) -> AlarmResponse(header, alarms)
# DEFRAGMENT     DefragmentRequest()               -> DefragmentResponse(size_before, size_after)
# SNAPSHOT       SnapshotRequest() -> a stream of SnapshotChunk(data); the last chunk carries
#                sha256 (of all data), size, revision and index instead of data.
# WATCH_PROGRESS WatchProgressRequest()            -> WatchProgressResponse(watches)

# WATCH (stream).  Request payload: {"key": bytes, "range_end": bytes, "start_revision": int
#   (0 = from now), "prev_kv": bool, "no_put": bool, "no_delete": bool,
#   "progress_notify": bool}.  Stream items: first {"created": True, "revision": current,
#   "compact_revision": int}; then one item per revision: {"revision": R, "events":
#   [plain raftkv.api.Event, ...]}; progress notifications {"revision": R, "events": [],
#   "progress": True}.  Cancel with [req_id, "cancel", None]; the stream ends with END.  A
#   start_revision at or below the compact revision ends at once with WatchCancelled
#   (reason "compacted", compact_revision).  Resuming after a disconnect: start_revision =
#   last revision seen + 1 (no gap, no duplicate).
# WATCH_PROGRESS: every watch open on this connection sends a progress item {"revision": R,
#   "events": [], "progress": True} once it has sent every event at or below R (etcd's
#   progress request); the answer says how many watches were asked.
# LEASE_KEEP_ALIVE is unary on the wire (LeaseKeepAliveRequest -> LeaseKeepAliveResponse);
#   the client's keep_alive() stream sends one every TTL/3.  Keep-alive and
#   LEASE_TIME_TO_LIVE are served by the leader only (NotLeader elsewhere): lease clocks
#   live on the leader.

PROTOCOL_NAME: Final = "raftkv-client"

MAX_REPLY_BYTES: Final = 64 * 1024 * 1024
"""The largest reply a member sends (its default ``max_reply_bytes``), and so the largest
frame the client accepts.  A range or txn whose answer would be larger fails with
:class:`~raftkv.errors.ReplyTooLarge` before the answer is built into a frame."""


def member_id(name: str, cluster_token: str = "") -> int:
    """A member's 64-bit id, derived from its name (and the cluster token), never 0."""
    digest = hashlib.blake2b(f"{cluster_token}/{name}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") & ((1 << 63) - 1)) or 1


def cluster_id(initial_cluster: dict[str, str], cluster_token: str = "") -> int:
    """The cluster id: a hash of the initial members (name=peer address) and the token."""
    text = ",".join(f"{n}={a}" for n, a in sorted(initial_cluster.items()))
    digest = hashlib.blake2b(f"{cluster_token}|{text}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") & ((1 << 63) - 1)) or 1


def parse_initial_cluster(spec: str) -> dict[str, str]:
    """``"n1=127.0.0.1:2380,n2=127.0.0.1:2381"`` -> ``{"n1": "127.0.0.1:2380", ...}``."""
    out: dict[str, str] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, addr = part.partition("=")
        if not sep or not name or not addr:
            raise ValueError(f"bad --initial-cluster entry {part!r}: expected NAME=HOST:PORT")
        out[name] = addr
    if not out:
        raise ValueError("--initial-cluster is empty")
    return out


def split_addr(addr: str) -> tuple[str, int]:
    """``"host:port"`` -> ``("host", port)``."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"bad address {addr!r}: expected HOST:PORT")
    return host, int(port)


def request_frame(req_id: int, method: Method | str, payload: Any) -> list[Any]:
    return [req_id, str(method), payload]
