"""Real nodes over the in-process peer network (raftkv.server.peers.MemoryNetwork): the
transport seam's second implementation, with links a test cuts and heals."""

from __future__ import annotations

import asyncio
from pathlib import Path

from raftkv.api import PutRequest, RangeRequest
from raftkv.server.peers import MemoryNetwork, MemoryTransport
from raftkv.testing import LocalCluster


async def test_a_cluster_replicates_fails_over_and_heals_in_memory(tmp_path: Path) -> None:
    net = MemoryNetwork()
    async with LocalCluster(3, tmp_path, network=net) as cluster:
        assert all(isinstance(n.transport, MemoryTransport) for n in cluster.nodes())
        leader = await cluster.wait_leader()
        assert leader.node is not None
        for i in range(10):
            assert (await leader.node.propose(PutRequest(b"a%d" % i, b"x"))).error is None
        await cluster.wait_converged()
        assert net.delivered > 0

        old_term = leader.node.term
        cluster.isolate(leader.name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while True:  # the other two elect a leader of a newer term
            new = next(
                (
                    m
                    for m in cluster.members.values()
                    if m is not leader and m.node is not None and m.node.is_leader
                ),
                None,
            )
            if new is not None and new.node is not None and new.node.term > old_term:
                break
            assert loop.time() < deadline, "no new leader behind the cut"
            await asyncio.sleep(cluster.tick_interval)
        for i in range(10):
            assert (await new.node.propose(PutRequest(b"b%d" % i, b"y"))).error is None

        net.heal()
        await cluster.wait_leader()
        await cluster.wait_converged()
        for n in cluster.nodes():
            assert n.fsm.range(RangeRequest(b"\0", b"\0", count_only=True)).count == 20
