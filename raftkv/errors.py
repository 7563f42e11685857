"""The one exception hierarchy of raftkv.

Errors are translated only at boundaries: the server turns an exception into a wire error
code, and the client turns the code back into the same exception class.  A user of raftkv
sees one of these, never a bare ``KeyError`` from deep inside.

::

    RaftKVError
    ├── RaftError                    consensus-level conditions (raftkv.raft)
    │   ├── ProposalDropped          the proposal was not appended (no leader, transfer, ...)
    │   ├── NotLeader(leader_hint)   this member is not the leader; retry at the hint
    │   ├── Compacted(revision)      the log entry / revision was compacted away
    │   ├── Unavailable              the log entry is not available yet
    │   ├── SnapshotTemporarilyUnavailable
    │   └── ConfChangeRefused        one membership change at a time, or invalid change
    ├── StorageError                 the disk said something we cannot trust
    │   └── CorruptionError          a checksum mismatch, a torn or truncated file
    ├── ProtocolError                a frame or message that breaks the wire protocol
    │   ├── LocalProtocolError       we were about to break it (a bug on our side)
    │   ├── RemoteProtocolError      the peer broke it; that connection is closed
    │   ├── FrameTooLarge            a frame over the configured limit
    │   └── HandshakeRefused         wrong protocol version or cluster id
    ├── RequestError                 a well-formed request that cannot be served
    │   ├── RequestTooLarge          request, value or txn over a configured limit
    │   ├── ReplyTooLarge            the answer would exceed the reply limit; page it
    │   ├── ApplyFailed              an entry's apply raised a bug; its deterministic result
    │   ├── TooManyOps               a txn with more operations than allowed
    │   ├── DuplicateKey             a key written twice in one txn
    │   ├── KeyNotFound
    │   ├── LeaseNotFound(lease_id)
    │   ├── LeaseExists(lease_id)
    │   ├── InvalidArgument
    │   ├── TooManyWatches
    │   ├── MemberNotFound / MemberExists
    │   ├── FutureRevision           a read at a revision that does not exist yet
    │   └── LockLost                 a recipe's lock or leadership is gone (raftkv.recipes)
    ├── TransientError               safe to retry after a pause
    │   ├── Timeout
    │   ├── TooManyRequests(retry_after)
    │   ├── ConnectionLost
    │   └── NoLeader
    └── WatchCancelled(reason)       the server cancelled a watch (compacted, slow)

``NotLeader`` and ``Compacted`` carry data (the leader hint, the compact revision);
``TooManyRequests`` carries ``retry_after`` in seconds.

Each class also says what a client may do about it, in four class attributes that the
client's retry loop reads and nothing else (docs/client.md, "Retries"):

* ``retryable``: the request may be sent again and may then succeed;
* ``retry_unapplied``: the error proves the request took no effect, so even a request that
  is not idempotent (a membership change, ``move_leader``) may be sent again;
* ``retry_elsewhere``: the answering member is the problem, so the retry goes to another
  member (a call pinned to one member is not retried);
* ``member_unhealthy``: the member is down or cut off from the leader, so the error counts
  against that member's circuit breaker.

Retryable: ``NotLeader`` (at the hint; proves nothing was applied), ``ProposalDropped``,
``Unavailable``, ``StorageError`` and ``CorruptionError`` (at another member), and every
``TransientError``: ``Timeout``, ``TooManyRequests`` and ``NoLeader`` (the latter two prove
nothing was applied), ``ConnectionLost`` (at another member).  Everything else is an answer
that a retry would only repeat.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ERRORS_BY_CODE",
    "ApplyFailed",
    "Compacted",
    "ConfChangeRefused",
    "ConnectionLost",
    "CorruptionError",
    "DuplicateKey",
    "FrameTooLarge",
    "FutureRevision",
    "HandshakeRefused",
    "InvalidArgument",
    "KeyNotFound",
    "LeaseExists",
    "LeaseNotFound",
    "LocalProtocolError",
    "LockLost",
    "MemberExists",
    "MemberNotFound",
    "NoLeader",
    "NotLeader",
    "ProposalDropped",
    "ProtocolError",
    "RaftError",
    "RaftKVError",
    "RemoteProtocolError",
    "ReplyTooLarge",
    "RequestError",
    "RequestTooLarge",
    "SnapshotTemporarilyUnavailable",
    "StorageError",
    "Timeout",
    "TooManyOps",
    "TooManyRequests",
    "TooManyWatches",
    "TransientError",
    "Unavailable",
    "WatchCancelled",
    "error_from_code",
]


class RaftKVError(Exception):
    """Base class of every error raftkv raises on purpose."""

    code: str = "unknown"
    retryable: ClassVar[bool] = False
    """May a request that failed with this error be sent again (after a pause, to the leader
    or to another member) with a chance of success?  Subclasses inherit it unless they say."""
    retry_unapplied: ClassVar[bool] = False
    """Does the error prove that the request took no effect?  Then even a request that is
    not idempotent may be sent again (only meaningful when ``retryable``)."""
    retry_elsewhere: ClassVar[bool] = False
    """Is the answering member itself the problem, so that the retry must go to another
    member?  A call pinned to one member is then not retried."""
    member_unhealthy: ClassVar[bool] = False
    """Does the error show the member down or cut off from the leader?  It then counts
    against that member's circuit breaker; any other error is an answer from a live member."""

    def details(self) -> dict[str, object]:
        """Fields that survive the trip over the wire (see :func:`error_from_code`)."""
        return {}


# --- consensus -----------------------------------------------------------------------------


class RaftError(RaftKVError):
    code = "raft"


class ProposalDropped(RaftError):
    code = "proposal_dropped"
    retryable = True


class NotLeader(RaftError):
    """This member is not the leader. ``leader_hint`` is the leader's id, or 0 if unknown."""

    code = "not_leader"
    retryable = True
    retry_unapplied = True
    retry_elsewhere = True

    def __init__(self, leader_hint: int = 0, leader_addr: str = "") -> None:
        super().__init__(f"not the leader (leader hint: {leader_hint or 'unknown'})")
        self.leader_hint = leader_hint
        self.leader_addr = leader_addr

    def details(self) -> dict[str, object]:
        return {"leader_hint": self.leader_hint, "leader_addr": self.leader_addr}


class Compacted(RaftError):
    """The requested index or revision was compacted; ``revision`` is the compaction point."""

    code = "compacted"

    def __init__(self, revision: int = 0) -> None:
        super().__init__(f"required revision has been compacted (compact revision {revision})")
        self.revision = revision

    def details(self) -> dict[str, object]:
        return {"revision": self.revision}


class Unavailable(RaftError):
    code = "unavailable"
    retryable = True


class SnapshotTemporarilyUnavailable(RaftError):
    code = "snapshot_unavailable"


class ConfChangeRefused(RaftError):
    code = "conf_change_refused"


# --- storage --------------------------------------------------------------------------------


class StorageError(RaftKVError):
    code = "storage"
    retryable = True
    retry_elsewhere = True
    member_unhealthy = True


class CorruptionError(StorageError):
    code = "corruption"


# --- wire -----------------------------------------------------------------------------------


class ProtocolError(RaftKVError):
    code = "protocol"


class LocalProtocolError(ProtocolError):
    code = "local_protocol"


class RemoteProtocolError(ProtocolError):
    code = "remote_protocol"


class FrameTooLarge(ProtocolError):
    code = "frame_too_large"


class HandshakeRefused(ProtocolError):
    code = "handshake_refused"


# --- requests -------------------------------------------------------------------------------


class RequestError(RaftKVError):
    code = "request"


class RequestTooLarge(RequestError):
    code = "request_too_large"


class ReplyTooLarge(RequestError):
    """The answer would exceed the member's reply limit: page the read (``limit`` and a
    start key after the last one returned) or narrow it."""

    code = "reply_too_large"


class ApplyFailed(RequestError):
    """Applying a committed entry raised an unexpected exception.  The entry's result is
    this error, identical on every member; the state machine keeps applying."""

    code = "apply_failed"


class TooManyOps(RequestError):
    code = "too_many_ops"


class DuplicateKey(RequestError):
    code = "duplicate_key"


class KeyNotFound(RequestError):
    code = "key_not_found"


class LeaseNotFound(RequestError):
    code = "lease_not_found"

    def __init__(self, lease_id: int = 0) -> None:
        super().__init__(f"lease {lease_id:#x} not found")
        self.lease_id = lease_id

    def details(self) -> dict[str, object]:
        return {"lease_id": self.lease_id}


class LeaseExists(RequestError):
    code = "lease_exists"

    def __init__(self, lease_id: int = 0) -> None:
        super().__init__(f"lease {lease_id:#x} already exists")
        self.lease_id = lease_id

    def details(self) -> dict[str, object]:
        return {"lease_id": self.lease_id}


class InvalidArgument(RequestError):
    code = "invalid_argument"


class TooManyWatches(RequestError):
    code = "too_many_watches"


class MemberNotFound(RequestError):
    code = "member_not_found"


class MemberExists(RequestError):
    code = "member_exists"


class FutureRevision(RequestError):
    code = "future_revision"


class LockLost(RequestError):
    """A lock or leadership held through :mod:`raftkv.recipes` is gone (its key was deleted or
    its session's lease lost), so a write fenced by it was refused."""

    code = "lock_lost"


# --- transient ------------------------------------------------------------------------------


class TransientError(RaftKVError):
    code = "transient"
    retryable = True


class Timeout(TransientError, TimeoutError):
    """A deadline passed.  Also a builtin :class:`TimeoutError`, so ``except TimeoutError``
    catches raftkv's timeouts with asyncio's."""

    code = "timeout"
    member_unhealthy = True


class TooManyRequests(TransientError):
    code = "too_many_requests"
    retry_unapplied = True

    def __init__(self, retry_after: float = 0.1) -> None:
        super().__init__(f"too many requests, retry after {retry_after:.3f}s")
        self.retry_after = retry_after

    def details(self) -> dict[str, object]:
        return {"retry_after": self.retry_after}


class ConnectionLost(TransientError):
    code = "connection_lost"
    retry_elsewhere = True
    member_unhealthy = True


class NoLeader(TransientError):
    code = "no_leader"
    retry_unapplied = True
    member_unhealthy = True


class WatchCancelled(RaftKVError):
    code = "watch_cancelled"

    def __init__(self, reason: str = "", compact_revision: int = 0) -> None:
        super().__init__(f"watch cancelled: {reason}")
        self.reason = reason
        self.compact_revision = compact_revision

    def details(self) -> dict[str, object]:
        return {"reason": self.reason, "compact_revision": self.compact_revision}


def _all_subclasses(cls: type[RaftKVError]) -> list[type[RaftKVError]]:
    out: list[type[RaftKVError]] = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


_ALL_ERRORS: list[type[RaftKVError]] = [RaftKVError, *_all_subclasses(RaftKVError)]
ERRORS_BY_CODE: dict[str, type[RaftKVError]] = {c.code: c for c in _ALL_ERRORS}


def error_from_code(code: str, message: str, details: dict[str, object]) -> RaftKVError:
    """Rebuild the exception a server sent as ``(code, message, details)``."""
    cls = ERRORS_BY_CODE.get(code, RaftKVError)
    try:
        err = cls(**details)
    except TypeError:
        err = cls(message)
    if not details:
        err.args = (message,)
    return err
