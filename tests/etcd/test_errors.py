"""raftkv errors as etcd's status codes and exact strings (no cluster needed)."""

from __future__ import annotations

import grpc
import pytest

from raftkv import errors as e
from raftkv.server.etcd.errors import status_of

C = grpc.StatusCode


@pytest.mark.parametrize(
    ("err", "want"),
    [
        (
            e.Compacted(5),
            (C.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"),
        ),
        (e.LeaseExists(7), (C.FAILED_PRECONDITION, "etcdserver: lease already exists")),
        (
            e.InvalidArgument("lease ttl 99999999999 too large (max 9000000000)"),
            (C.OUT_OF_RANGE, "etcdserver: too large lease TTL"),
        ),
        (
            e.InvalidArgument("lease is provided with ignore_lease"),
            (C.INVALID_ARGUMENT, "etcdserver: lease is provided"),
        ),
        (
            e.InvalidArgument("range: key is empty"),
            (C.INVALID_ARGUMENT, "etcdserver: key is not provided"),
        ),
        (e.NotLeader(0), (C.UNAVAILABLE, "etcdserver: no leader")),
        (e.NotLeader(3, "127.0.0.1:1"), (C.UNAVAILABLE, "etcdserver: leader changed")),
        (e.NoLeader("x"), (C.UNAVAILABLE, "etcdserver: no leader")),
        (e.TooManyRequests(0.5), (C.RESOURCE_EXHAUSTED, "etcdserver: too many requests")),
        (e.CorruptionError("bad"), (C.DATA_LOSS, "etcdserver: corrupt cluster")),
        (e.StorageError("gone"), (C.UNAVAILABLE, "etcdserver: server stopped")),
        (e.Timeout("slow"), (C.UNAVAILABLE, "etcdserver: request timed out")),
    ],
)
def test_status_of(err: e.RaftKVError, want: tuple[grpc.StatusCode, str]) -> None:
    assert status_of(err) == want
