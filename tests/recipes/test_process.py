"""End to end: 3 real worker processes increment a counter under the fenced lock while the
raftkv leader (a real ``raftkv serve`` process) is SIGKILLed.  The counter must equal the
acknowledged increments exactly, and its history must show +1 steps with strictly increasing
fencing tokens (no stale holder's write accepted)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from raftkv.client import Client
from raftkv.testing import ProcessCluster

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "fenced_counter.py"
sys.path.insert(0, str(ROOT / "examples"))
import fenced_counter  # noqa: E402


async def test_fenced_counter_survives_leader_kill(tmp_path: Path) -> None:
    workers, increments = 3, 25
    with ProcessCluster(3, tmp_path / "pc") as pc:
        leader = await asyncio.to_thread(pc.wait_healthy)
        eps = pc.endpoints
        start_rev = await fenced_counter.reset(eps, "c")
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                str(EXAMPLE),
                "--worker",
                str(i),
                "--increments",
                str(increments),
                "--key",
                "c",
                "--endpoints",
                ",".join(eps),
                stdout=asyncio.subprocess.PIPE,
                cwd=ROOT,
            )
            for i in range(workers)
        ]
        try:
            async with Client(eps, command_timeout=20.0) as c:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                at_kill = 0
                while loop.time() < deadline and at_kill < 15:
                    kvs = (await c.get("c")).kvs
                    at_kill = int(kvs[0].value.split(b":")[0]) if kvs else 0
                    await asyncio.sleep(0.05)
                pc.kill(leader)  # SIGKILL the raftkv leader mid-run
                assert 15 <= at_kill < workers * increments
            outs = [await asyncio.wait_for(p.communicate(), 60) for p in procs]
        finally:
            for p in procs:
                if p.returncode is None:
                    p.kill()
                    await p.wait()
        results = [json.loads(o[0].decode().strip().splitlines()[-1]) for o in outs]
        assert all(p.returncode == 0 for p in procs)
        acked = sum(r["ok"] for r in results)
        assert acked == workers * increments
        live = [p.client_addr for n, p in pc.procs.items() if n != leader]
        res = await fenced_counter.check(live, "c", start_rev)
        assert res == {"final": acked, "writes": acked, "steps_ok": True, "tokens_ok": True}


async def test_paused_lock_holder_cannot_write_with_a_stale_token(tmp_path: Path) -> None:
    """Worker 0 does long work under the lock and is SIGSTOPped past its session TTL (three
    times, the raftkv leader SIGKILLed during the second); others take the lock meanwhile.
    When it resumes, its fenced write must be refused, and the counter still ends at exactly
    the acknowledged increments."""
    import signal

    increments, ttl = 12, 2
    with ProcessCluster(3, tmp_path / "pc") as pc:
        raft_leader = await asyncio.to_thread(pc.wait_healthy)
        eps = pc.endpoints
        start_rev = await fenced_counter.reset(eps, "p")

        async def spawn(i: int, hold: float) -> asyncio.subprocess.Process:
            return await asyncio.create_subprocess_exec(
                sys.executable, str(EXAMPLE), "--worker", str(i), "--increments",
                str(increments), "--key", "p", "--ttl", str(ttl), "--hold", str(hold),
                "--endpoints", ",".join(eps), stdout=asyncio.subprocess.PIPE, cwd=ROOT,
            )  # fmt: skip

        procs = [await spawn(0, 1.0), await spawn(1, 0.02), await spawn(2, 0.02)]
        try:
            for round_ in range(3):
                await asyncio.sleep(1.5)
                procs[0].send_signal(signal.SIGSTOP)
                if round_ == 1:
                    pc.kill(raft_leader)  # the raftkv leader dies during this pause too
                await asyncio.sleep(2 * ttl + 1)  # its lease expires meanwhile
                if round_ == 1:
                    pc.start_member(raft_leader)
                procs[0].send_signal(signal.SIGCONT)
            outs = [await asyncio.wait_for(p.communicate(), 90) for p in procs]
        finally:
            for p in procs:
                if p.returncode is None:
                    p.send_signal(signal.SIGCONT)
                    p.kill()
                    await p.wait()
        results = [json.loads(o[0].decode().strip().splitlines()[-1]) for o in outs]
        acked = sum(r["ok"] for r in results)
        assert acked == 3 * increments
        assert results[0]["refused"] >= 1, "a stale holder's write should have been refused"
        res = await fenced_counter.check(eps, "p", start_rev)
        assert res == {"final": acked, "writes": acked, "steps_ok": True, "tokens_ok": True}
