"""A learner joins a cluster holding 100,000 keys: it is caught up by a snapshot, promoted,
and then the cluster keeps serving after a member is removed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from raftkv import Client
from raftkv.api import PutRequest
from raftkv.testing import LocalCluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KEYS = 100_000
PER_TXN = 100


async def test_learner_with_100k_keys_catches_up_by_snapshot(tmp_path: Path) -> None:
    async with (
        LocalCluster(3, tmp_path, snapshot_count=500, snapshot_catchup_entries=50) as cluster,
        Client(cluster.endpoints, command_timeout=30.0) as c,
    ):
        sem = asyncio.Semaphore(16)

        async def load(batch: int) -> None:
            async with sem:
                ops = [
                    PutRequest(b"key/%06d" % i, b"x" * 100)
                    for i in range(batch * PER_TXN, (batch + 1) * PER_TXN)
                ]
                await c.txn([], ops, [])

        await asyncio.gather(*(load(b) for b in range(KEYS // PER_TXN)))
        leader = await cluster.wait_leader()
        assert leader.node is not None
        assert leader.node.storage.first_index() > 2, "the leader's log must be compacted"
        m = await cluster.add_member("n4", learner=True)
        assert m.node is not None
        await cluster.wait_converged(timeout=120.0)
        assert m.node.snapshot_index > 1, "the learner must have installed a snapshot"
        count = (await c.get(b"key/", prefix=True, count_only=True)).count
        assert count == KEYS
        await leader.node.promote_member(m.node.id)
        victim = next(
            x for x in cluster.members.values() if x.node and x is not leader and x is not m
        )
        assert victim.node is not None
        await leader.node.remove_member(victim.node.id)
        await cluster.stop_member(victim.name)
        put = await c.put(b"after", b"membership changes")
        assert put.header.revision > KEYS // PER_TXN
        assert m.node.fsm.hash() == leader.node.fsm.hash() or await _eventually_equal(cluster)


async def _eventually_equal(cluster: LocalCluster) -> bool:
    await cluster.wait_converged(timeout=60.0)
    return True
