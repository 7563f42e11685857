"""raftkv's errors as etcd's gRPC status codes and exact error strings.

etcd's clients compare the message text (``rpctypes.ErrorDesc``) to recognise an error, so
the strings below are etcd 3.4's (``etcdserver/api/v3rpc/rpctypes/error.go``) letter for
letter.  An error etcd has no name for keeps raftkv's own message, with the closest code.
"""

from __future__ import annotations

import grpc

from raftkv import errors as e

C = grpc.StatusCode

COMPACTED = (C.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
FUTURE_REV = (C.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
LEASE_NOT_FOUND = (C.NOT_FOUND, "etcdserver: requested lease not found")
LEASE_EXIST = (C.FAILED_PRECONDITION, "etcdserver: lease already exists")
LEASE_TTL_TOO_LARGE = (C.OUT_OF_RANGE, "etcdserver: too large lease TTL")
EMPTY_KEY = (C.INVALID_ARGUMENT, "etcdserver: key is not provided")
KEY_NOT_FOUND = (C.INVALID_ARGUMENT, "etcdserver: key not found")
VALUE_PROVIDED = (C.INVALID_ARGUMENT, "etcdserver: value is provided")
LEASE_PROVIDED = (C.INVALID_ARGUMENT, "etcdserver: lease is provided")
TOO_MANY_OPS = (C.INVALID_ARGUMENT, "etcdserver: too many operations in txn request")
DUPLICATE_KEY = (C.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request")
REQUEST_TOO_LARGE = (C.INVALID_ARGUMENT, "etcdserver: request is too large")
TOO_MANY_REQUESTS = (C.RESOURCE_EXHAUSTED, "etcdserver: too many requests")
MEMBER_EXIST = (C.FAILED_PRECONDITION, "etcdserver: member ID already exist")
MEMBER_NOT_FOUND = (C.NOT_FOUND, "etcdserver: member not found")
NO_LEADER = (C.UNAVAILABLE, "etcdserver: no leader")
LEADER_CHANGED = (C.UNAVAILABLE, "etcdserver: leader changed")
TIMEOUT = (C.UNAVAILABLE, "etcdserver: request timed out")
STOPPED = (C.UNAVAILABLE, "etcdserver: server stopped")
CORRUPT = (C.DATA_LOSS, "etcdserver: corrupt cluster")

_BY_CLASS: list[tuple[type[e.RaftKVError], tuple[grpc.StatusCode, str]]] = [
    (e.Compacted, COMPACTED),
    (e.FutureRevision, FUTURE_REV),
    (e.LeaseNotFound, LEASE_NOT_FOUND),
    (e.LeaseExists, LEASE_EXIST),
    (e.KeyNotFound, KEY_NOT_FOUND),
    (e.TooManyOps, TOO_MANY_OPS),
    (e.DuplicateKey, DUPLICATE_KEY),
    (e.RequestTooLarge, REQUEST_TOO_LARGE),
    (e.TooManyRequests, TOO_MANY_REQUESTS),
    (e.MemberExists, MEMBER_EXIST),
    (e.MemberNotFound, MEMBER_NOT_FOUND),
    (e.NoLeader, NO_LEADER),
    (e.ProposalDropped, LEADER_CHANGED),
    (e.Timeout, TIMEOUT),
    (e.ConnectionLost, TIMEOUT),
    (e.CorruptionError, CORRUPT),
    (e.StorageError, STOPPED),
]

_INVALID_BY_TEXT: list[tuple[str, tuple[grpc.StatusCode, str]]] = [
    # the state machine's InvalidArgument messages that etcd has a name for
    ("key is not provided", EMPTY_KEY),
    ("key is empty", EMPTY_KEY),
    ("value is provided", VALUE_PROVIDED),
    ("lease is provided", LEASE_PROVIDED),
    ("too large", LEASE_TTL_TOO_LARGE),
]


def status_of(err: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and message etcd would answer for ``err``."""
    if isinstance(err, e.NotLeader):
        # Forwarding failed or raced a leadership change: clients retry UNAVAILABLE.
        return LEADER_CHANGED if err.leader_hint else NO_LEADER
    for cls, status in _BY_CLASS:
        if isinstance(err, cls):
            return status
    if isinstance(err, e.InvalidArgument):
        text = str(err)
        if text.startswith("etcdserver: "):
            return C.INVALID_ARGUMENT, text
        for needle, status in _INVALID_BY_TEXT:
            if needle in text and (status is not LEASE_TTL_TOO_LARGE or "ttl" in text):
                return status
        return C.INVALID_ARGUMENT, f"etcdserver: {text}"
    if isinstance(err, e.ReplyTooLarge):
        return C.RESOURCE_EXHAUSTED, f"etcdserver: {err}"
    if isinstance(err, e.ConfChangeRefused):
        return C.FAILED_PRECONDITION, f"etcdserver: {err}"
    if isinstance(err, e.TransientError):
        return C.UNAVAILABLE, f"etcdserver: {err}"
    if isinstance(err, e.RaftKVError):
        return C.UNKNOWN, f"etcdserver: {err}"
    return C.INTERNAL, f"etcdserver: internal error: {err}"
