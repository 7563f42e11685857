"""Several processes increment one counter under a fenced distributed lock.

    python examples/fenced_counter.py --workers 3 --increments 20

starts 3 worker processes (this file with ``--worker ID``); each one, 20 times: acquires the
lock ``/locks/<key>`` (raftkv.recipes.Mutex), reads the counter, and writes ``value+1`` with a
txn guarded by the lock's fencing token (the lock key must still exist with our create
revision).  A worker whose lock was lost (its lease expired during a pause, say) has its write
refused instead of overwriting a newer holder's.  At the end the parent checks the counter's
whole history: every write added exactly one, and every write carried a larger fencing token
than the one before it (no stale holder got through).

Endpoints: ``--endpoints`` or ``RAFTKV_ENDPOINTS`` (default 127.0.0.1:2379).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys

from raftkv.api import PutRequest
from raftkv.client import Client
from raftkv.errors import LockLost
from raftkv.recipes import Mutex, Session


async def worker(
    endpoints: list[str], key: str, wid: int, increments: int, ttl: int, hold: float = 0.0
) -> dict[str, int]:
    ok = refused = 0
    async with Client(endpoints, command_timeout=30.0) as c:
        while ok < increments:
            async with Session(c, ttl=ttl) as s:
                m = Mutex(s, f"/locks/{key}")
                while ok < increments and not s.done.is_set():
                    try:
                        token = await m.acquire()
                        cur = (await c.get(key)).kvs
                        n = int(cur[0].value.split(b":")[0]) if cur else 0
                        if hold:
                            # Work while holding the lock (a pause here outlives the lease).
                            await asyncio.sleep(hold)
                        value = f"{n + 1}:{token}:{wid}".encode()
                        await m.guarded_txn(success=[PutRequest(key.encode(), value)])
                        ok += 1
                    except LockLost:
                        refused += 1
                        break  # a new session, a new lock key
                    finally:
                        if m.is_held:
                            await m.release()
    return {"worker": wid, "ok": ok, "refused": refused}


async def reset(endpoints: list[str], key: str) -> int:
    """Delete the counter; returns the revision the run starts after."""
    async with Client(endpoints, command_timeout=30.0) as c:
        return (await c.delete(key)).header.revision


async def check(endpoints: list[str], key: str, start_rev: int) -> dict[str, object]:
    """Read the counter's whole history since ``start_rev`` (a watch) and check it."""
    async with Client(endpoints, command_timeout=30.0) as c:
        last = await c.get(key)
        final = int(last.kvs[0].value.split(b":")[0]) if last.kvs else 0
        history: list[tuple[int, int]] = []
        if last.kvs:
            end_rev = last.kvs[0].mod_revision
            async with c.watch(key, start_revision=start_rev + 1) as w:
                async for wr in w:
                    for ev in wr.events:
                        n, token, _ = ev.kv.value.split(b":")
                        history.append((int(n), int(token)))
                    if wr.revision >= end_rev:
                        break
        steps_ok = [n for n, _ in history] == list(range(1, len(history) + 1))
        tokens = [t for _, t in history]
        tokens_ok = all(a < b for a, b in itertools.pairwise(tokens))
        return {
            "final": final,
            "writes": len(history),
            "steps_ok": steps_ok,
            "tokens_ok": tokens_ok,
        }


async def parent(args: argparse.Namespace, endpoints: list[str]) -> int:
    start_rev = await reset(endpoints, args.key)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            str(i),
            "--increments",
            str(args.increments),
            "--key",
            args.key,
            "--ttl",
            str(args.ttl),
            "--endpoints",
            ",".join(endpoints),
            stdout=asyncio.subprocess.PIPE,
        )
        for i in range(args.workers)
    ]
    total = 0
    for p in procs:
        out, _ = await p.communicate()
        res = json.loads(out.decode().strip().splitlines()[-1])
        print(f"worker {res['worker']}: {res['ok']} increments, {res['refused']} refused")
        total += res["ok"]
    result = await check(endpoints, args.key, start_rev)
    print(
        f"counter = {result['final']}, acknowledged increments = {total}, "
        f"history: +1 steps {result['steps_ok']}, fencing tokens increasing {result['tokens_ok']}"
    )
    good = result["final"] == total and result["steps_ok"] and result["tokens_ok"]
    return 0 if good else 1


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--endpoints", default=os.environ.get("RAFTKV_ENDPOINTS", "127.0.0.1:2379"))
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--increments", type=int, default=20)
    ap.add_argument("--key", default="fenced-counter")
    ap.add_argument("--ttl", type=int, default=5)
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--hold", type=float, default=0.0, help="Seconds of work under the lock.")
    args = ap.parse_args()
    endpoints = [e for e in args.endpoints.split(",") if e]
    if args.worker is not None:
        res = asyncio.run(
            worker(endpoints, args.key, args.worker, args.increments, args.ttl, args.hold)
        )
        print(json.dumps(res), flush=True)
        return 0
    return asyncio.run(parent(args, endpoints))


if __name__ == "__main__":
    sys.exit(main())
