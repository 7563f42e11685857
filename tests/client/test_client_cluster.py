"""The client against a real in-process cluster (raftkv.testing.LocalCluster)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from raftkv import Client, SyncClient
from raftkv.api import Compare, CompareResult, CompareTarget
from raftkv.client import op_get, op_put
from raftkv.errors import Compacted, LeaseNotFound, RaftKVError, WatchCancelled
from raftkv.testing import LocalCluster


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with LocalCluster(3, tmp_path / "c") as c:
        yield c


def _followers(cluster: LocalCluster) -> list[str]:
    lead = cluster.leader()
    return [m.client_addr for m in cluster.members.values() if m is not lead and m.running]


async def test_kv_txn_and_watch_through_a_follower(cluster: LocalCluster) -> None:
    lead = cluster.leader()
    assert lead is not None
    # followers first: reads are served there, writes find the leader
    async with Client([*_followers(cluster), lead.client_addr], command_timeout=10.0) as c:
        w = c.watch("k", prefix=True, prev_kv=True)
        await w.start()
        await c.put("k1", "v1")
        assert c.leader_endpoint in (lead.client_addr, None)
        r = await c.txn(
            [Compare(b"k1", CompareTarget.VALUE, CompareResult.EQUAL, b"v1")],
            [op_put("k1", "v2"), op_get("k1")],
            [op_put("k1", "never")],
        )
        assert r.succeeded
        assert (await c.get("k1")).kvs[0].value == b"v2"
        assert (await c.get("k1", serializable=True)).count <= 1
        first, second = await w.__anext__(), await w.__anext__()
        assert [e.kv.value for e in first.events] == [b"v1"]
        ev = second.events[0]
        assert ev.kv.value == b"v2" and ev.prev_kv is not None and ev.prev_kv.value == b"v1"
        assert second.revision == first.revision + 1
        w.cancel()


async def test_writes_survive_a_leader_crash_exactly_once(cluster: LocalCluster) -> None:
    async with Client(cluster.endpoints, command_timeout=15.0) as c:
        await c.put("warm", "up")
        results: list[int] = []

        async def writer(start: int) -> None:
            for i in range(start, start + 20):
                r = await c.put(f"key{i:03d}", f"v{i}")
                results.append(r.header.revision)

        tasks = [asyncio.create_task(writer(n * 20)) for n in range(4)]
        await asyncio.sleep(0.2)
        lead = cluster.leader()
        assert lead is not None
        await cluster.stop_member(lead.name)
        await asyncio.gather(*tasks)
        r = await c.get("key", prefix=True)
        assert r.count == 80
        # a put applied twice would show version 2 and take two revisions
        assert all(kv.version == 1 for kv in r.kvs)
        assert len(set(results)) == 80
        assert c.leader_endpoint != lead.client_addr


async def test_leases_and_keep_alive(cluster: LocalCluster) -> None:
    async with Client(cluster.endpoints, command_timeout=10.0) as c:
        g = await c.lease_grant(5)
        await c.put("lk", "v", lease=g.id)
        ttl = await c.lease_time_to_live(g.id, keys=True)
        assert ttl.granted_ttl == 5 and ttl.keys == (b"lk",) and 0 < ttl.ttl <= 5
        assert g.id in (await c.lease_leases()).leases
        n = 0
        async for resp in c.lease_keep_alive(g.id, interval=0.05):
            assert resp.id == g.id and resp.ttl == 5
            n += 1
            if n == 3:
                break
        await c.lease_revoke(g.id)
        assert (await c.get("lk")).kvs == ()
        with pytest.raises(LeaseNotFound):
            await c.lease_keep_alive_once(g.id)


async def test_admin_calls(cluster: LocalCluster, tmp_path: Path) -> None:
    async with Client(cluster.endpoints, command_timeout=10.0) as c:
        await c.put("a", "1")
        members = await c.member_list()
        assert sorted(m.name for m in members) == ["n1", "n2", "n3"]
        statuses = [await c.status(ep) for ep in cluster.endpoints]
        assert sum(st.is_leader for st in statuses) == 1
        assert all([(await c.health(ep)).health for ep in cluster.endpoints])
        target = next(m for m in members if not any(s.is_leader and s.id == m.id for s in statuses))
        assert await c.move_leader(target.id) == target.id
        await c.put("a", "2")  # the client follows the move
        info = await c.snapshot_save(tmp_path / "snap.db")
        assert info.size == (tmp_path / "snap.db").stat().st_size > 0
        rev = (await c.put("a", "3")).header.revision
        await c.compact(rev)
        with pytest.raises(Compacted):
            await c.get("a", revision=rev - 1)
        w = c.watch("a", start_revision=rev - 1)
        with pytest.raises(WatchCancelled):
            await w.__anext__()


def test_sync_client(tmp_path: Path) -> None:
    async def start() -> LocalCluster:
        c = LocalCluster(1, tmp_path / "s")
        await c.start()
        return c

    loop = asyncio.new_event_loop()
    import threading

    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    cl = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        with SyncClient(cl.endpoints, command_timeout=10.0) as c:
            w = c.watch("s")
            c.put("s", "1")
            assert c.get("s").kvs[0].value == b"1"
            assert [e.kv.value for e in next(iter(w)).events] == [b"1"]
            w.cancel()
            g = c.lease_grant(10)
            ka = c.lease_keep_alive(g.id, interval=0.01)
            assert next(ka).ttl == 10
            ka.close()
    finally:
        asyncio.run_coroutine_threadsafe(cl.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        loop.close()


async def _synced(c: Client, n: int) -> tuple[str, ...]:
    """Sync until ``n`` endpoints are known: members publish their client address through
    the log just after they start, so the first answers may list fewer."""

    async def go() -> tuple[str, ...]:
        while len(eps := await c.sync_endpoints()) < n:
            await asyncio.sleep(0.02)
        return eps

    return await asyncio.wait_for(go(), 10.0)


async def test_sync_endpoints_learns_every_voting_member(cluster: LocalCluster) -> None:
    first = cluster.members["n1"].client_addr
    async with Client([first], command_timeout=10.0) as c:
        assert c.endpoints == (first,)
        eps = await _synced(c, 3)
        assert set(eps) == set(cluster.endpoints) and len(eps) == 3
        m4 = await cluster.add_member("n4", learner=True)
        await c.put("k", "v")
        # a learner serves no linearizable calls: it is not an endpoint
        assert m4.client_addr not in await c.sync_endpoints()


async def test_auto_sync_keeps_a_client_alive_after_its_only_endpoint_leaves(
    cluster: LocalCluster,
) -> None:
    first = cluster.members["n1"].client_addr
    async with (
        Client([first], command_timeout=10.0, auto_sync_interval=0.05) as synced,
        Client([first], command_timeout=2.0, attempt_timeout=0.5) as fixed,
    ):
        await synced.put("a", "1")  # the first connection starts the sync task
        await fixed.put("a", "1")

        async def learnt() -> None:
            while len(synced.endpoints) < 3:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(learnt(), 10.0)
        await cluster.stop_member("n1")
        # serializable reads are served by the client's endpoints, never by a redirect
        assert (await synced.get("a", serializable=True)).kvs[0].value == b"1"
        await synced.put("b", "2")
        assert (await synced.get("b")).kvs[0].value == b"2"
        # the control: a client that only knows n1 has nowhere to go
        with pytest.raises(RaftKVError):
            await fixed.get("a", serializable=True)


async def test_sync_client_syncs_endpoints(cluster: LocalCluster) -> None:
    first = cluster.members["n1"].client_addr

    def blocking() -> tuple[str, ...]:
        with SyncClient([first], command_timeout=10.0) as c:
            for _ in range(500):  # members publish their address just after they start
                if len(eps := c.sync_endpoints()) == 3:
                    return eps
            return c.endpoints

    assert set(await asyncio.to_thread(blocking)) == set(cluster.endpoints)


async def test_lease_calls_wait_for_a_new_leader_to_take_over_the_leases(
    cluster: LocalCluster,
) -> None:
    """Right after an election the leader serves leases only once its lessor is promoted; a
    TTL or keep-alive arriving in between waits instead of being refused.  Refusals counted
    against the leader's circuit breaker: under load a client once backed off for the 5 s
    cooldown and its TTL-5 lease expired meanwhile (seen in CI)."""
    lead = cluster.leader()
    assert lead is not None and lead.node is not None
    async with Client([lead.client_addr], command_timeout=10.0) as c:
        g = await c.lease_grant(5)
        failed: list[str] = []
        real_failed = c.router.failed

        def spy(addr: str) -> None:
            failed.append(addr)
            real_failed(addr)

        c.router.failed = spy  # type: ignore[method-assign]
        lead.node.fsm.lessor.demote()  # the state of a leader just elected
        ttl = await c.lease_time_to_live(g.id)
        assert ttl.granted_ttl == 5 and 0 < ttl.ttl <= 5
        lead.node.fsm.lessor.demote()
        assert (await c.lease_keep_alive_once(g.id)).ttl == 5
        assert failed == [], "a lease call was refused by the leader"
