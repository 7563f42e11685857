"""End to end: three real campaigner processes take turns leading while the raftkv leader is
SIGKILLed and one campaigner is SIGSTOPped past its TTL.  Every leader writes its term of
office into a log key with a txn fenced by its election key; the log must show one leader at
a time: fencing tokens never go back, and each leader's entries are contiguous."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from raftkv.client import Client
from raftkv.testing import ProcessCluster

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

CAMPAIGNER = r"""
import asyncio, json, sys
from raftkv.client import Client
from raftkv.api import Compare, CompareResult, CompareTarget, PutRequest
from raftkv.errors import LockLost, RaftKVError
from raftkv.recipes import Election, Session

async def main(wid, eps, terms, hold):
    done = lost = 0
    async with Client(eps, command_timeout=30.0) as c:
        while done < terms:
            try:
                async with Session(c, ttl=2) as s:
                    e = Election(s, "/elect/e")
                    await e.campaign(f"w{wid}")
                    for step in range(3):  # three fenced writes per term of office
                        await asyncio.sleep(hold)
                        r = await c.txn(
                            [Compare(e.key, CompareTarget.CREATE, CompareResult.EQUAL, e.revision)],
                            [PutRequest(b"elog", f"{e.revision}:{wid}:{step}".encode())],
                            [],
                        )
                        if not r.succeeded:
                            raise LockLost("deposed")
                    done += 1
                    await e.resign()
            except (LockLost, RaftKVError):
                lost += 1
    print(json.dumps({"worker": wid, "terms": done, "lost": lost}))

asyncio.run(main(int(sys.argv[1]), sys.argv[2].split(","), int(sys.argv[3]), float(sys.argv[4])))
"""


async def test_one_leader_at_a_time_under_leader_kill_and_pause(tmp_path: Path) -> None:
    with ProcessCluster(3, tmp_path / "pc") as pc:
        leader = await asyncio.to_thread(pc.wait_healthy)
        eps = ",".join(pc.endpoints)
        async with Client(pc.endpoints, command_timeout=20.0) as c:
            start = (await c.put(b"elog", b"0:start:0")).header.revision
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                CAMPAIGNER,
                str(i),
                eps,
                "4",
                str(hold),
                stdout=asyncio.subprocess.PIPE,
                cwd=ROOT,
            )
            for i, hold in ((0, 0.8), (1, 0.05), (2, 0.05))
        ]
        try:
            await asyncio.sleep(2.0)
            procs[0].send_signal(signal.SIGSTOP)  # a leader, most likely, mid-term
            pc.kill(leader)  # and the raftkv leader dies too
            await asyncio.sleep(5.0)
            procs[0].send_signal(signal.SIGCONT)
            pc.start_member(leader)
            outs = [await asyncio.wait_for(p.communicate(), 120) for p in procs]
        finally:
            for p in procs:
                if p.returncode is None:
                    p.send_signal(signal.SIGCONT)
                    p.kill()
                    await p.wait()
        results = [json.loads(o[0].decode().strip().splitlines()[-1]) for o in outs]
        assert all(r["terms"] == 4 for r in results), results
        async with Client(pc.endpoints, command_timeout=20.0) as c:
            end = (await c.get(b"elog")).kvs[0].mod_revision
            log: list[tuple[int, int, int]] = []
            async with c.watch(b"elog", start_revision=start + 1) as w:
                async for wr in w:
                    for ev in wr.events:
                        tok, wid, step = ev.kv.value.split(b":")
                        log.append((int(tok), int(wid), int(step)))
                    if wr.revision >= end:
                        break
        tokens = [t for t, _, _ in log]
        assert tokens == sorted(tokens), "a deposed leader wrote after its successor"
        # Each term of office is one contiguous run of writes by one worker.
        runs: list[int] = []
        for t in tokens:
            if not runs or runs[-1] != t:
                runs.append(t)
        assert len(runs) == len(set(runs)), "two leaders interleaved"
        assert sum(1 for _ in runs) >= 12
