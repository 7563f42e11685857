"""End to end: a follower that lost acknowledged writes takes itself out of service.

Two ways to lose them, as a disk does: a ``raft.db-wal`` truncated after a SIGKILL (caught at
start by the high-water mark in ``raft.hwm``), and a data dir replaced by an older copy of
itself (caught by the leader's first heartbeat: its commit index is beyond the member's log).
Either way the member reports unhealthy with the reason, refuses serializable reads, logs one
critical line with the recovery procedure (no traceback spam), and the other two keep serving.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from raftkv import Client
from raftkv.errors import RaftKVError
from raftkv.server.storage.sqlite import DB_NAME
from raftkv.testing import ProcessCluster

pytestmark = pytest.mark.e2e

LOST_LINE = "acknowledged state lost"


async def _write(c: Client, prefix: bytes, n: int) -> None:
    sem = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with sem:
            await c.put(prefix + b"%04d" % i, b"v")

    await asyncio.gather(*(one(i) for i in range(n)))


async def _caught_up(pc: ProcessCluster, c: Client, name: str, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            sts = [await c.status(endpoint=e, timeout=2.0) for e in pc.endpoints]
            if len({s.raft_applied_index for s in sts}) == 1:
                return
        except RaftKVError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} did not catch up")


async def _lost(pc: ProcessCluster, name: str, timeout: float = 30.0) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    h: dict[str, object] | None = None
    while loop.time() < deadline:
        h = await asyncio.to_thread(pc.health, name)
        if h is not None and str(h.get("reason", "")).startswith("log lost"):
            return h
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} was not detected unhealthy: {h}")


async def _out_of_service(pc: ProcessCluster, victim: str, log_from: int) -> None:
    h = await _lost(pc, victim)
    assert h["health"] is False
    p = pc.procs[victim]
    assert p.alive, "the member stays up (unhealthy) so /health can say why"
    async with Client([p.client_addr], command_timeout=2.0) as one:
        with pytest.raises(RaftKVError):
            await one.get(b"a", prefix=True, serializable=True)
    others = [q.client_addr for n, q in pc.procs.items() if n != victim]
    async with Client(others, command_timeout=10.0) as c:
        await c.put(b"after", b"v")
        for e in others:
            async with Client([e], command_timeout=5.0) as each:
                assert (await each.get(b"a0000", serializable=True)).kvs
    # let a few more heartbeats arrive: still one line, no tracebacks
    await asyncio.sleep(1.0)
    text = p.log_path.read_text(errors="replace")[log_from:]
    assert text.count(LOST_LINE) == 1, text[-2000:]
    assert "Traceback" not in text and "out of range" not in text
    assert "raftkv member remove" in text and "raftkv member add" in text


async def test_truncated_wal_member_stops_serving(tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path) as pc:
        leader = await asyncio.to_thread(pc.wait_healthy)
        victim = next(n for n in pc.procs if n != leader)
        async with Client(pc.endpoints, command_timeout=10.0) as c:
            await _write(c, b"a", 200)
            await _caught_up(pc, c, victim)
        pc.kill(victim)
        wal = pc.procs[victim].data_dir / f"{DB_NAME}-wal"
        size = wal.stat().st_size
        assert size > 0
        with wal.open("r+b") as f:
            f.truncate(size // 2)
        log_from = len(pc.procs[victim].log_path.read_text(errors="replace"))
        pc.start_member(victim)
        await _out_of_service(pc, victim, log_from)


async def test_rolled_back_data_dir_member_stops_serving(tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path) as pc:
        leader = await asyncio.to_thread(pc.wait_healthy)
        victim = next(n for n in pc.procs if n != leader)
        data = pc.procs[victim].data_dir
        async with Client(pc.endpoints, command_timeout=10.0) as c:
            await _write(c, b"a", 50)
            await _caught_up(pc, c, victim)
            pc.stop_member(victim)
            await asyncio.to_thread(shutil.copytree, data, tmp_path / "old-copy")
            pc.start_member(victim)
            await _write(c, b"b", 300)
            await _caught_up(pc, c, victim)
        pc.stop_member(victim)
        shutil.rmtree(data)
        await asyncio.to_thread(shutil.copytree, tmp_path / "old-copy", data)
        log_from = len(pc.procs[victim].log_path.read_text(errors="replace"))
        pc.start_member(victim)  # the cluster stays idle from here on
        await _out_of_service(pc, victim, log_from)
