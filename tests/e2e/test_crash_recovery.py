"""End to end: real `raftkv serve` processes, real sockets, real fsync, SIGKILL.

Every acknowledged write must survive a leader kill and restart, and every member must end
with the same revision and content hash.  Crash points inside storage (before and after the
SQLite commit, while writing a snapshot, while installing one) must lose no acknowledged write.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from raftkv import Client
from raftkv.errors import RaftKVError
from raftkv.testing import ProcessCluster

pytestmark = pytest.mark.e2e


async def _write(c: Client, keys: list[bytes], acked: dict[bytes, bytes], width: int = 32) -> None:
    sem = asyncio.Semaphore(width)

    async def one(k: bytes) -> None:
        async with sem:
            v = b"v-" + k
            try:
                await c.put(k, v)
            except RaftKVError:
                return  # not acknowledged: it may or may not be there
            acked[k] = v

    await asyncio.gather(*(one(k) for k in keys))


async def _converged(pc: ProcessCluster, c: Client, timeout: float = 30.0) -> list[tuple[int, int]]:
    """Every member's (revision, hash), once they all agree."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen: list[tuple[int, int]] = []
    while loop.time() < deadline:
        try:
            sts = [await c.status(endpoint=e, hash=True, timeout=2.0) for e in pc.endpoints]
            seen = [(s.revision, s.hash) for s in sts]
            if len(set(seen)) == 1 and len({s.raft_applied_index for s in sts}) == 1:
                return seen
        except RaftKVError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"members did not converge: {seen}")


async def _all_readable(c: Client, acked: dict[bytes, bytes]) -> None:
    resp = await c.get(b"k", prefix=True, timeout=10.0)
    got = {kv.key: kv.value for kv in resp.kvs}
    missing = [k for k, v in acked.items() if got.get(k) != v]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"


async def test_sigkill_leader_loses_no_acknowledged_write(tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path) as pc:
        leader = await asyncio.to_thread(pc.wait_healthy)
        acked: dict[bytes, bytes] = {}
        async with Client(pc.endpoints, command_timeout=10.0) as c:
            await _write(c, [b"k1-%04d" % i for i in range(1000)], acked)
            pc.kill(leader)
            await _write(c, [b"k2-%04d" % i for i in range(1000)], acked)
            pc.start_member(leader)
            states = await _converged(pc, c)
            await _all_readable(c, acked)
        assert len(acked) >= 1900, "the cluster should accept nearly every write"
        assert states[0][0] >= len(acked) + 1


@pytest.mark.parametrize(
    "failpoint",
    [
        "before_commit=crash@40",
        "after_commit=crash@40",
        "snapshot_write=crash@1",
        "before_apply=crash@40",
        "after_apply=crash@40",
    ],
)
async def test_crash_at_storage_points_loses_nothing(tmp_path: Path, failpoint: str) -> None:
    with ProcessCluster(3, tmp_path, snapshot_count=300, snapshot_catchup_entries=50) as pc:
        await asyncio.to_thread(pc.wait_healthy)
        acked: dict[bytes, bytes] = {}
        async with Client(pc.endpoints, command_timeout=10.0) as c:
            # Arm the failpoint on every member in turn: the first to hit it dies there.
            victim = "n1"
            pc.stop_member(victim)
            pc.procs[victim].extra_env = {"RAFTKV_FAILPOINTS": failpoint}
            pc.start_member(victim)
            await asyncio.to_thread(pc.wait_healthy)
            await _write(c, [b"k-%04d" % i for i in range(800)], acked)
            p = pc.procs[victim]
            for _ in range(100):
                if not p.alive:
                    break
                await asyncio.sleep(0.1)
            assert not p.alive, f"{victim} should have crashed at {failpoint}"
            assert p.popen.returncode == 77  # failpoints.CRASH_EXIT_CODE
            p.extra_env = {}
            pc.start_member(victim)
            await _converged(pc, c)
            await _all_readable(c, acked)


async def test_crash_while_installing_a_snapshot_loses_nothing(tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path, snapshot_count=200, snapshot_catchup_entries=20) as pc:
        await asyncio.to_thread(pc.wait_healthy)
        acked: dict[bytes, bytes] = {}
        async with Client(pc.endpoints, command_timeout=10.0) as c:
            leader = await asyncio.to_thread(pc.wait_healthy)
            victim = next(n for n in pc.procs if n != leader)
            pc.stop_member(victim)
            await _write(c, [b"k-%04d" % i for i in range(600)], acked)
            # The victim is now behind the leader's compaction: it must get a snapshot.
            pc.procs[victim].extra_env = {"RAFTKV_FAILPOINTS": "snapshot_install=crash@1"}
            pc.start_member(victim)
            p = pc.procs[victim]
            for _ in range(150):
                if not p.alive:
                    break
                await asyncio.sleep(0.1)
            assert not p.alive and p.popen.returncode == 77
            p.extra_env = {}
            pc.start_member(victim)
            await _converged(pc, c)
            await _all_readable(c, acked)
