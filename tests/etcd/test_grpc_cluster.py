"""Membership changes, leader moves and a member that stops serving, over the etcd front end."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from raftkv.errors import StorageError
from raftkv.server.etcd.proto import rpc_pb2, rpc_pb2_grpc
from raftkv.testing import free_port
from tests.etcd.conftest import EtcdCluster

pytestmark = pytest.mark.timeout(120)


async def test_member_add_promote_remove_through_a_follower(etcd: EtcdCluster) -> None:
    async with grpc.aio.insecure_channel(etcd.addr(etcd.follower_name())) as ch:
        cluster = rpc_pb2_grpc.ClusterStub(ch)
        peer = f"127.0.0.1:{free_port()}"
        added = await cluster.MemberAdd(
            rpc_pb2.MemberAddRequest(peerURLs=[f"http://{peer}"], isLearner=True)
        )
        assert added.member.isLearner and list(added.member.peerURLs) == [f"http://{peer}"]
        assert added.member.ID in {m.ID for m in added.members} and len(added.members) == 4
        assert added.header.cluster_id != 0

        promoted = await cluster.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=added.member.ID))
        assert [m.isLearner for m in promoted.members if m.ID == added.member.ID] == [False]
        with pytest.raises(grpc.aio.AioRpcError) as ei:  # a voter cannot be promoted
            await cluster.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=added.member.ID))
        assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await cluster.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[f"http://{peer}"]))
        assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert ei.value.details() == "etcdserver: member ID already exist"

        removed = await cluster.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=added.member.ID))
        assert added.member.ID not in {m.ID for m in removed.members}
        listed = await cluster.MemberList(rpc_pb2.MemberListRequest())
        assert len(listed.members) == 3

        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await cluster.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=added.member.ID))
        assert ei.value.code() == grpc.StatusCode.NOT_FOUND
        assert ei.value.details() == "etcdserver: member not found"


async def test_move_leader(etcd: EtcdCluster) -> None:
    target = etcd.cluster.members[etcd.follower_name()].node
    assert target is not None
    async with grpc.aio.insecure_channel(etcd.addr(etcd.leader_name())) as ch:
        mt = rpc_pb2_grpc.MaintenanceStub(ch)
        await mt.MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=target.id))
    assert target.is_leader


async def test_a_member_that_stops_serving_ends_its_watch_streams(etcd: EtcdCluster) -> None:
    name = etcd.follower_name()
    member = etcd.cluster.members[name]
    assert member.node is not None
    async with grpc.aio.insecure_channel(etcd.addr(name)) as ch:
        stream = rpc_pb2_grpc.WatchStub(ch).Watch()
        await stream.write(
            rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"w"))
        )
        assert (await asyncio.wait_for(stream.read(), 10.0)).created
        member.node.stop_serving(StorageError("injected: the disk is gone"))
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await asyncio.wait_for(stream.read(), 10.0)
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
        assert ei.value.details() == "etcdserver: server stopped"
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"w", serializable=True))
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_rate_limits_per_connection(etcd: EtcdCluster) -> None:
    from raftkv.server.admission import AdmissionConfig, AdmissionControl
    from raftkv.server.etcd.server import start_etcd_server

    m = etcd.cluster.members[etcd.leader_name()]
    assert m.node is not None and m.server is not None
    admission = AdmissionControl(AdmissionConfig(per_conn=0.001, burst=2))
    limited = await start_etcd_server(
        m.node, m.server.service, f"127.0.0.1:{free_port()}", admission=admission
    )
    try:
        req = rpc_pb2.RangeRequest(key=b"r")
        async with grpc.aio.insecure_channel(limited.address) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            await kv.Range(req)
            await kv.Range(req)
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await kv.Range(req)
            assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert ei.value.details() == "etcdserver: too many requests"
            stream = rpc_pb2_grpc.WatchStub(ch).Watch()
            await stream.write(
                rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"r"))
            )
            refused = await asyncio.wait_for(stream.read(), 10.0)
            assert refused.created and refused.canceled
            assert refused.cancel_reason == "etcdserver: too many requests"
            stream.cancel()
        # a new connection (channels to one address share theirs unless told not to)
        fresh = [("grpc.use_local_subchannel_pool", 1)]
        async with grpc.aio.insecure_channel(limited.address, options=fresh) as ch:
            await rpc_pb2_grpc.KVStub(ch).Range(req)
        assert admission.refused == 2
    finally:
        await limited.stop()


async def test_hasleader_metadata_fails_fast_on_a_member_without_a_leader(
    etcd: EtcdCluster,
) -> None:
    """clientv3's WithRequireLeader (``hasleader=true``): a member that has no leader says
    ``etcdserver: no leader`` at once; without the metadata it still serves local reads."""
    name = etcd.follower_name()
    for other in [n for n in etcd.cluster.members if n != name]:
        await etcd.cluster.stop_member(other)
    node = etcd.cluster.members[name].node
    assert node is not None
    async with asyncio.timeout(20):
        while node.leader_id != 0:  # it times out its lost leader and campaigns alone
            await asyncio.sleep(0.05)
    async with grpc.aio.insecure_channel(etcd.addr(name)) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        req = rpc_pb2.RangeRequest(key=b"k", serializable=True)
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await kv.Range(req, metadata=(("hasleader", "true"),), timeout=2)
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
        assert ei.value.details() == "etcdserver: no leader"
        assert (await kv.Range(req, timeout=5)).header.member_id == node.id
