"""The etcd v3 gRPC front end driven with the generated stubs: KV, Lease, Cluster, Maintenance."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from raftkv.server.etcd.proto import kv_pb2, rpc_pb2, rpc_pb2_grpc
from tests.etcd.conftest import EtcdCluster

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def follower(etcd: EtcdCluster) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to a follower: writes are forwarded to the leader inside the service."""
    async with grpc.aio.insecure_channel(etcd.addr(etcd.follower_name())) as ch:
        yield ch


async def _code_and_message(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await call  # type: ignore[misc]
    return ei.value.code(), ei.value.details() or ""


async def test_headers_name_cluster_member_revision_and_term(
    etcd: EtcdCluster, follower: grpc.aio.Channel
) -> None:
    kv = rpc_pb2_grpc.KVStub(follower)
    put = await kv.Put(rpc_pb2.PutRequest(key=b"h", value=b"1"))
    name = etcd.follower_name()
    node = etcd.cluster.members[name].node
    assert node is not None
    for h in (put.header, (await kv.Range(rpc_pb2.RangeRequest(key=b"h"))).header):
        assert h.cluster_id == node.cluster_id
        assert h.member_id == node.id
        assert h.raft_term == node.term and h.raft_term > 0
        assert h.revision == put.header.revision and h.revision > 1


async def test_put_range_delete_with_options(follower: grpc.aio.Channel) -> None:
    kv = rpc_pb2_grpc.KVStub(follower)
    r1 = await kv.Put(rpc_pb2.PutRequest(key=b"a/1", value=b"x"))
    r2 = await kv.Put(rpc_pb2.PutRequest(key=b"a/2", value=b"yy"))
    await kv.Put(rpc_pb2.PutRequest(key=b"a/3", value=b"z"))
    p = await kv.Put(rpc_pb2.PutRequest(key=b"a/1", value=b"x2", prev_kv=True))
    assert p.prev_kv.value == b"x" and p.prev_kv.mod_revision == r1.header.revision
    # ignore_value keeps the value; the lease stays as it was
    await kv.Put(rpc_pb2.PutRequest(key=b"a/1", ignore_value=True))
    got = await kv.Range(rpc_pb2.RangeRequest(key=b"a/1"))
    assert got.kvs[0].value == b"x2" and got.kvs[0].version == 3 and got.count == 1

    everything = rpc_pb2.RangeRequest(key=b"a/", range_end=b"a0")
    r = await kv.Range(everything)
    assert [k.key for k in r.kvs] == [b"a/1", b"a/2", b"a/3"] and r.count == 3
    r = await kv.Range(rpc_pb2.RangeRequest(key=b"a/", range_end=b"a0", limit=2))
    assert len(r.kvs) == 2 and r.more and r.count == 3
    r = await kv.Range(
        rpc_pb2.RangeRequest(
            key=b"a/",
            range_end=b"a0",
            sort_order=rpc_pb2.RangeRequest.DESCEND,
            sort_target=rpc_pb2.RangeRequest.VALUE,
        )
    )
    assert [k.value for k in r.kvs] == [b"z", b"yy", b"x2"]
    r = await kv.Range(rpc_pb2.RangeRequest(key=b"a/", range_end=b"a0", keys_only=True))
    assert [k.value for k in r.kvs] == [b"", b"", b""]
    r = await kv.Range(rpc_pb2.RangeRequest(key=b"a/", range_end=b"a0", count_only=True))
    assert r.count == 3 and not r.kvs
    r = await kv.Range(rpc_pb2.RangeRequest(key=b"a/", range_end=b"a0", serializable=True))
    assert r.count <= 3
    r = await kv.Range(
        rpc_pb2.RangeRequest(key=b"a/", range_end=b"a0", min_mod_revision=r2.header.revision + 1)
    )
    assert [k.key for k in r.kvs] == [b"a/1", b"a/3"]
    r = await kv.Range(
        rpc_pb2.RangeRequest(key=b"a/", range_end=b"a0", max_create_revision=r2.header.revision)
    )
    assert [k.key for k in r.kvs] == [b"a/1", b"a/2"]
    r = await kv.Range(rpc_pb2.RangeRequest(key=b"a/1", revision=r1.header.revision))
    assert r.kvs[0].value == b"x"

    d = await kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"a/2", range_end=b"a0", prev_kv=True))
    assert d.deleted == 2 and sorted(k.key for k in d.prev_kvs) == [b"a/2", b"a/3"]
    assert (await kv.Range(everything)).count == 1


async def test_txn_compares_and_branches(follower: grpc.aio.Channel) -> None:
    kv = rpc_pb2_grpc.KVStub(follower)
    await kv.Put(rpc_pb2.PutRequest(key=b"t", value=b"v1"))
    cmp = rpc_pb2.Compare(
        key=b"t",
        target=rpc_pb2.Compare.VALUE,
        result=rpc_pb2.Compare.EQUAL,
        value=b"v1",
    )
    txn = rpc_pb2.TxnRequest(
        compare=[cmp],
        success=[
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"t", value=b"v2")),
            rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"t")),
        ],
        failure=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"t", value=b"no"))],
    )
    r = await kv.Txn(txn)
    assert r.succeeded and r.responses[1].response_range.kvs[0].value == b"v2"
    assert r.responses[0].WhichOneof("response") == "response_put"
    r = await kv.Txn(txn)  # the value is v2 now: the failure branch runs
    assert not r.succeeded
    got = await kv.Range(rpc_pb2.RangeRequest(key=b"t"))
    assert got.kvs[0].value == b"no"
    version_cmp = rpc_pb2.Compare(
        key=b"t", target=rpc_pb2.Compare.VERSION, result=rpc_pb2.Compare.GREATER, version=2
    )
    read_only = rpc_pb2.TxnRequest(
        compare=[version_cmp],
        success=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"t"))],
    )
    r = await kv.Txn(read_only)
    assert r.succeeded and r.header.revision == got.header.revision


async def test_etcd_error_strings(follower: grpc.aio.Channel) -> None:
    kv = rpc_pb2_grpc.KVStub(follower)
    lease = rpc_pb2_grpc.LeaseStub(follower)
    first = await kv.Put(rpc_pb2.PutRequest(key=b"e", value=b"1"))
    last = await kv.Put(rpc_pb2.PutRequest(key=b"e", value=b"2"))
    await kv.Compact(rpc_pb2.CompactionRequest(revision=last.header.revision))

    C = grpc.StatusCode
    cases = [
        (
            kv.Range(rpc_pb2.RangeRequest(key=b"e", revision=first.header.revision)),
            (C.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"),
        ),
        (
            kv.Range(rpc_pb2.RangeRequest(key=b"e", revision=last.header.revision + 100)),
            (C.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision"),
        ),
        (
            kv.Compact(rpc_pb2.CompactionRequest(revision=first.header.revision)),
            (C.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"),
        ),
        (
            lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=0x1234)),
            (C.NOT_FOUND, "etcdserver: requested lease not found"),
        ),
        (
            kv.Put(rpc_pb2.PutRequest(key=b"e", value=b"x", lease=0x1234)),
            (C.NOT_FOUND, "etcdserver: requested lease not found"),
        ),
        (
            kv.Put(rpc_pb2.PutRequest(key=b"", value=b"x")),
            (C.INVALID_ARGUMENT, "etcdserver: key is not provided"),
        ),
        (
            kv.Put(rpc_pb2.PutRequest(key=b"nope", ignore_value=True)),
            (C.INVALID_ARGUMENT, "etcdserver: key not found"),
        ),
        (
            kv.Put(rpc_pb2.PutRequest(key=b"e", value=b"x", ignore_value=True)),
            (C.INVALID_ARGUMENT, "etcdserver: value is provided"),
        ),
        (
            kv.Txn(
                rpc_pb2.TxnRequest(
                    success=[
                        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"k%d" % i))
                        for i in range(129)
                    ]
                )
            ),
            (C.INVALID_ARGUMENT, "etcdserver: too many operations in txn request"),
        ),
        (
            kv.Txn(
                rpc_pb2.TxnRequest(
                    success=[
                        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"d")),
                        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"d")),
                    ]
                )
            ),
            (C.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request"),
        ),
        (
            kv.Put(rpc_pb2.PutRequest(key=b"big", value=b"x" * (1536 * 1024 + 10))),
            (C.INVALID_ARGUMENT, "etcdserver: request is too large"),
        ),
    ]
    for call, want in cases:
        assert await _code_and_message(call) == want


async def test_leases(follower: grpc.aio.Channel) -> None:
    kv = rpc_pb2_grpc.KVStub(follower)
    lease = rpc_pb2_grpc.LeaseStub(follower)
    g = await lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30))
    assert g.ID > 0 and g.TTL == 30 and g.header.member_id != 0
    await kv.Put(rpc_pb2.PutRequest(key=b"l1", value=b"v", lease=g.ID))
    await kv.Put(rpc_pb2.PutRequest(key=b"l2", value=b"v", lease=g.ID))
    # ignore_lease keeps the key's lease
    await kv.Put(rpc_pb2.PutRequest(key=b"l1", value=b"w", ignore_lease=True))
    assert (await kv.Range(rpc_pb2.RangeRequest(key=b"l1"))).kvs[0].lease == g.ID
    ttl = await lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=g.ID, keys=True))
    assert ttl.ID == g.ID and ttl.grantedTTL == 30 and 0 < ttl.TTL <= 30
    assert sorted(ttl.keys) == [b"l1", b"l2"]
    missing = await lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=0x999))
    assert missing.TTL == -1
    leases = await lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest())
    assert [s.ID for s in leases.leases] == [g.ID]

    stream = lease.LeaseKeepAlive()
    await stream.write(rpc_pb2.LeaseKeepAliveRequest(ID=g.ID))
    ka = await stream.read()
    assert ka.ID == g.ID and ka.TTL == 30
    await stream.write(rpc_pb2.LeaseKeepAliveRequest(ID=0x999))
    gone = await stream.read()
    assert gone.ID == 0x999 and gone.TTL == 0  # etcd: an unknown lease answers TTL 0
    await stream.done_writing()

    await lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=g.ID))
    assert (await kv.Range(rpc_pb2.RangeRequest(key=b"l", range_end=b"m"))).count == 0
    assert not (await lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest())).leases


async def test_cluster_and_maintenance(etcd: EtcdCluster, follower: grpc.aio.Channel) -> None:
    cluster = rpc_pb2_grpc.ClusterStub(follower)
    mt = rpc_pb2_grpc.MaintenanceStub(follower)
    ml = await cluster.MemberList(rpc_pb2.MemberListRequest())
    by_name = {m.name: m for m in ml.members}
    assert set(by_name) == set(etcd.servers)
    for name, m in by_name.items():
        member = etcd.cluster.members[name]
        assert member.node is not None and member.node.id == m.ID
        assert list(m.peerURLs) == [f"http://{member.peer_addr}"]
        assert list(m.clientURLs) == [f"http://{etcd.addr(name)}"]
        assert not m.isLearner

    lead = etcd.cluster.members[etcd.leader_name()].node
    assert lead is not None
    st = await mt.Status(rpc_pb2.StatusRequest())
    assert st.leader == lead.id and st.raftTerm == lead.term
    assert st.raftIndex >= st.raftAppliedIndex > 0 and st.dbSize > 0 and st.version
    assert not st.isLearner and st.header.member_id != lead.id

    h = await mt.HashKV(rpc_pb2.HashKVRequest())
    assert h.header.revision >= 1
    alarms = await mt.Alarm(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET))
    assert not alarms.alarms

    code, _ = await _code_and_message(cluster.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=0x42)))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = await _code_and_message(
        cluster.MemberUpdate(rpc_pb2.MemberUpdateRequest(ID=0x42, peerURLs=["http://127.0.0.1:1"]))
    )
    assert code == grpc.StatusCode.NOT_FOUND
    me = next(m for m in (await cluster.MemberList(rpc_pb2.MemberListRequest())).members)
    upd = await cluster.MemberUpdate(rpc_pb2.MemberUpdateRequest(ID=me.ID, peerURLs=me.peerURLs))
    assert [m.peerURLs for m in upd.members if m.ID == me.ID] == [me.peerURLs]
    d = await mt.Defragment(rpc_pb2.DefragmentRequest())
    assert d.header.member_id == st.header.member_id


async def test_snapshot_stream_ends_with_its_sha256(follower: grpc.aio.Channel) -> None:
    import hashlib

    await rpc_pb2_grpc.KVStub(follower).Put(rpc_pb2.PutRequest(key=b"s", value=b"v"))
    blobs = [
        r async for r in rpc_pb2_grpc.MaintenanceStub(follower).Snapshot(rpc_pb2.SnapshotRequest())
    ]
    data = b"".join(r.blob for r in blobs[:-1])
    assert blobs[-1].remaining_bytes == 0 and blobs[-1].blob == hashlib.sha256(data).digest()
    assert data and len(data) % 512 == 0  # etcd's page-aligned layout
    assert blobs[0].remaining_bytes == len(data) + 32 - len(blobs[0].blob)


def test_event_conversion_keeps_prev_kv() -> None:
    from raftkv import api
    from raftkv.server.etcd import convert

    ev = convert.event(
        api.Event(api.EventType.DELETE, api.KeyValue(b"k", mod_revision=5), api.KeyValue(b"k"))
    )
    assert ev.type == kv_pb2.Event.DELETE and ev.kv.mod_revision == 5 and ev.HasField("prev_kv")


async def test_nested_txn_and_lease_and_range_compares(follower: grpc.aio.Channel) -> None:
    kv = rpc_pb2_grpc.KVStub(follower)
    g = await rpc_pb2_grpc.LeaseStub(follower).LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30))
    await kv.Put(rpc_pb2.PutRequest(key=b"n/1", value=b"a", lease=g.ID))
    await kv.Put(rpc_pb2.PutRequest(key=b"n/2", value=b"b"))
    lease_cmp = rpc_pb2.Compare(
        key=b"n/1", target=rpc_pb2.Compare.LEASE, result=rpc_pb2.Compare.EQUAL, lease=g.ID
    )
    range_cmp = rpc_pb2.Compare(  # every key of the range was created
        key=b"n/",
        range_end=b"n0",
        target=rpc_pb2.Compare.CREATE,
        result=rpc_pb2.Compare.GREATER,
        create_revision=0,
    )
    inner = rpc_pb2.TxnRequest(
        compare=[range_cmp],
        success=[
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"n/3", value=b"c")),
            rpc_pb2.RequestOp(
                request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"n/2", prev_kv=True)
            ),
        ],
    )
    r = await kv.Txn(
        rpc_pb2.TxnRequest(compare=[lease_cmp], success=[rpc_pb2.RequestOp(request_txn=inner)])
    )
    assert r.succeeded
    nested = r.responses[0].response_txn
    assert nested.succeeded
    assert nested.responses[1].response_delete_range.prev_kvs[0].value == b"b"
    got = await kv.Range(rpc_pb2.RangeRequest(key=b"n/", range_end=b"n0"))
    assert [k.key for k in got.kvs] == [b"n/1", b"n/3"]
