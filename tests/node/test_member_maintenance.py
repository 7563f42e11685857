"""Member maintenance on real nodes: changing a member's peer address through the log, and
defragmenting a member's store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from raftkv.api import PutRequest, RangeRequest
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
