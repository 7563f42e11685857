"""Member maintenance on real nodes: changing a member's peer address through the log, and
defragmenting a member's store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from raftkv.api import CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest
from raftkv.errors import InvalidArgument, MemberNotFound, NotLeader
from raftkv.server.node import Node
from raftkv.testing import LocalCluster, free_port


async def _until(cond: object, timeout: float = 10.0) -> None:
    assert callable(cond)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_update_member_moves_a_peer_address_and_replication_follows(
    tmp_path: Path,
) -> None:
    async with LocalCluster(3, tmp_path) as cluster:
        leader = await cluster.wait_leader()
        assert leader.node is not None
        moved = next(m for m in cluster.members.values() if m is not leader)
        assert moved.node is not None
        nid = moved.node.id
        new_addr = f"127.0.0.1:{free_port()}"

        await leader.node.update_member(nid, new_addr)
        # The others dial the new address at once: the moved member itself learns the change
        # only once it listens there (as with etcd's member update, then restart).
        others = [n for n in cluster.nodes() if n.id != nid]
        await _until(lambda: all(n.members[nid].peer_addr == new_addr for n in others))

        # The member comes back listening on the new port only.
        await cluster.stop_member(moved.name)
        moved.peer_addr = new_addr
        await cluster.start_member(moved.name)
        assert moved.node is not None and moved.node.cfg.peer_addr == new_addr
        lead = await cluster.wait_leader()
        assert lead.node is not None
        for i in range(20):
            assert (await lead.node.propose(PutRequest(b"k%02d" % i, b"v"))).error is None
        await cluster.wait_converged()
        resp = moved.node.fsm.range(RangeRequest(b"k", b"l", count_only=True))
        assert resp.count == 20
        assert moved.node.members[nid].peer_addr == new_addr


async def test_update_member_refuses_unknown_members_and_followers(tmp_path: Path) -> None:
    async with LocalCluster(3, tmp_path) as cluster:
        leader = await cluster.wait_leader()
        assert leader.node is not None
        follower = next(m.node for m in cluster.members.values() if m is not leader)
        assert isinstance(follower, Node)
        with pytest.raises(MemberNotFound):
            await leader.node.update_member(0xDEAD, "127.0.0.1:1")
        with pytest.raises(InvalidArgument):
            await leader.node.update_member(follower.id, "no port")
        with pytest.raises(NotLeader):
            await follower.update_member(leader.node.id, "127.0.0.1:1")
        assert leader.node.members[leader.node.id].peer_addr == leader.peer_addr


async def test_defragment_shrinks_the_store_and_the_member_keeps_everything(
    tmp_path: Path,
) -> None:
    async with LocalCluster(3, tmp_path, snapshot_count=100, snapshot_catchup_entries=5) as cluster:
        leader = await cluster.wait_leader()
        assert leader.node is not None
        blob = b"x" * 8192
        for i in range(300):
            await leader.node.propose(PutRequest(b"big%03d" % i, blob))
        await leader.node.propose(DeleteRangeRequest(b"big", b"bih"))
        for i in range(150):  # small writes: the next snapshot lies past the big ones
            await leader.node.propose(PutRequest(b"keep%d" % (i % 10), b"v%d" % i))
        r = await leader.node.propose(CompactionRequest(leader.node.fsm.revision))
        assert r.error is None
        await cluster.wait_converged()
        target = next(m for m in cluster.members.values() if m is not leader)
        node = target.node
        assert node is not None
        # The log rows of the big values are gone once a snapshot compacted the log.
        await _until(lambda: node.storage.first_index() > 310)

        before, after = await node.defragment()
        assert before == node.storage.file_bytes() + (before - after)
        assert after < before / 2, (before, after)

        # Still serving: a write replicates to it and it answers a linearizable read.
        await leader.node.propose(PutRequest(b"after", b"defrag"))
        await node.read_barrier()
        assert node.fsm.range(RangeRequest(b"after")).kvs[0].value == b"defrag"

        await cluster.stop_member(target.name)
        await cluster.start_member(target.name)
        await cluster.wait_converged()
        assert target.node is not None
        keys = target.node.fsm.range(RangeRequest(b"\0", b"\0")).kvs
        assert [kv.key for kv in keys] == [b"after"] + [b"keep%d" % i for i in range(10)]
        assert len({n.fsm.hash() for n in cluster.nodes()}) == 1
