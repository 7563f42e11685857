"""The etcd API under faults, with real processes: watch, leases, CAS with retries."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from raftkv import Client
from raftkv.api import Compare, CompareResult, CompareTarget, PutRequest
from raftkv.errors import RaftKVError
from raftkv.testing import ProcessCluster

pytestmark = pytest.mark.e2e


async def test_watch_sees_every_event_once_in_order_across_leader_kill(tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path) as pc:
        leader = await asyncio.to_thread(pc.wait_healthy)
        lead_ep = pc.procs[leader].client_addr
        others = [e for e in pc.endpoints if e != lead_ep]
        async with (
            Client(pc.endpoints, command_timeout=10.0) as w,
            Client([lead_ep, *others], command_timeout=10.0) as watcher_client,
        ):
            start = (await w.put(b"w/start", b"0")).header.revision + 1
            seen: list[tuple[int, bytes]] = []
            done = asyncio.Event()

            async def watch() -> None:
                async for resp in watcher_client.watch(b"w/", prefix=True, start_revision=start):
                    for ev in resp.events:
                        seen.append((ev.kv.mod_revision, ev.kv.key))
                    if done.is_set() and resp.events and resp.events[-1].kv.key == b"w/zz-end":
                        return

            task = asyncio.create_task(watch())
            for i in range(150):
                with contextlib.suppress(RaftKVError):
                    await w.put(b"w/k%03d" % i, b"v")
                if i == 60:
                    pc.kill(leader)  # the watcher's connection dies with it
                if i == 100:
                    pc.start_member(leader)
            done.set()
            await w.put(b"w/zz-end", b"end")
            await asyncio.wait_for(task, 30.0)
            final = await w.get(b"w/", prefix=True)
        revs = [r for r, _ in seen]
        assert revs == sorted(revs) and len(revs) == len(set(revs)), "ordered and unique"
        expected = sorted((kv.mod_revision, kv.key) for kv in final.kvs if kv.mod_revision >= start)
        assert seen == expected, "reliable: exactly the revisions the store holds after start"


@pytest.mark.parametrize("kill_leader", [False, True], ids=["steady", "leader-killed"])
async def test_lease_expires_within_ttl_plus_one_second(tmp_path: Path, kill_leader: bool) -> None:
    with ProcessCluster(3, tmp_path) as pc:
        leader = await asyncio.to_thread(pc.wait_healthy)
        async with Client(pc.endpoints, command_timeout=10.0) as c:
            lease = await c.lease_grant(3)
            t0 = time.monotonic()
            await c.put(b"leased", b"x", lease=lease.id)
            killed = False
            gone_at = None
            while time.monotonic() - t0 < 8.0:
                if kill_leader and not killed and time.monotonic() - t0 > 1.5:
                    pc.kill(leader)
                    killed = True
                try:
                    resp = await c.get(b"leased", timeout=2.0)
                except RaftKVError:
                    await asyncio.sleep(0.05)
                    continue
                if not resp.kvs:
                    gone_at = time.monotonic() - t0
                    break
                assert time.monotonic() - t0 < 4.0, "still there after TTL + 1 s"
                await asyncio.sleep(0.05)
        assert gone_at is not None, "the key was never deleted"
        assert 2.5 <= gone_at <= 4.0, f"deleted after {gone_at:.2f} s (TTL 3 s)"


async def test_cas_counter_with_retries_through_leader_kills(tmp_path: Path) -> None:
    """10 clients increment a counter with compare-and-swap; the leader is killed twice.
    Exactly-once retries mean the counter ends at exactly the acknowledged increments."""
    with ProcessCluster(3, tmp_path) as pc:
        await asyncio.to_thread(pc.wait_healthy)
        acked = 0
        stop = asyncio.Event()

        async def worker(n: int) -> None:
            nonlocal acked
            async with Client(pc.endpoints, command_timeout=10.0) as c:
                while not stop.is_set():
                    try:
                        cur = await c.get(b"counter")
                        old = cur.kvs[0].value if cur.kvs else b"0"
                        mod = cur.kvs[0].mod_revision if cur.kvs else 0
                        r = await c.txn(
                            [Compare(b"counter", CompareTarget.MOD, CompareResult.EQUAL, mod)],
                            [PutRequest(b"counter", str(int(old) + 1).encode())],
                            [],
                        )
                    except RaftKVError:
                        continue  # unknown outcome is fine: the final value tells the truth
                    if r.succeeded:
                        acked += 1

        async with Client(pc.endpoints, command_timeout=10.0) as c:
            await c.put(b"counter", b"0")
            tasks = [asyncio.create_task(worker(i)) for i in range(10)]
            for _ in range(2):
                await asyncio.sleep(2.0)
                lead = await asyncio.to_thread(pc.wait_healthy)
                pc.kill(lead)
                await asyncio.sleep(1.0)
                pc.start_member(lead)
            await asyncio.sleep(1.5)
            stop.set()
            await asyncio.gather(*tasks)
            final = int((await c.get(b"counter")).kvs[0].value)
        assert acked > 20
        assert final == acked, f"counter {final} != acknowledged increments {acked}"
