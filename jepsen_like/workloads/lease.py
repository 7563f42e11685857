"""Lease workload: keys attached to leases, under faults (Jepsen etcd's lease checks, etcd's
lease robustness tests).

Each client process loops: grant a lease (TTL ``TTL``), put ``l/<lease id>`` with it, keep it
alive for a while (``keepalive`` ops every TTL/4), then revoke it or abandon it.  Besides,
every process owns one *live* lease (``l/live-<p>``) that a keeper renews until the final
read.  After healing, the runner waits ``2 * TTL`` (leader changes may extend leases) and
reads every ``l/`` key.

Checked (``lease``):

* ``zombie``: a key is still there although its lease was revoked, or abandoned with its last
  possible renewal more than ``2 * TTL + slack`` before the final read;
* ``lost``: a live lease's key is gone (or a keep-alive said LeaseNotFound) although every
  gap between its keeper's successful renewals stayed under ``TTL / 2``: the lease expired
  early.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from functools import partial
from typing import Any

import raftkv
from jepsen_like.workloads.base import Definite, Event, RunContext, pairs, result
from raftkv.errors import LeaseNotFound

TTL = 4
SLACK = 3.0
KEEPER_BASE = 500


async def _grant_put(c: raftkv.Client, key_prefix: str) -> list[Any]:
    lease = (await c.lease_grant(TTL)).id
    key = f"{key_prefix}{lease}" if key_prefix.endswith("/") else key_prefix
    await c.put(key, str(lease), lease=lease)
    return [lease, key]


async def _keepalive(c: raftkv.Client, lease: int) -> int:
    try:
        return (await c.lease_keep_alive_once(lease)).ttl
    except LeaseNotFound:
        raise Definite(lease, "lease-not-found") from None


async def _revoke(c: raftkv.Client, lease: int) -> int:
    await c.lease_revoke(lease)
    return lease


async def _abandon(lease: int) -> int:
    return lease


async def _read_all(c: raftkv.Client) -> dict[str, str]:
    resp = await c.get(b"l/", prefix=True)
    return {kv.key.decode(): kv.value.decode() for kv in resp.kvs}


class LeaseWorkload:
    name = "lease"

    def __init__(self) -> None:
        self.keepers: list[asyncio.Task[None]] = []
        self.final_done = asyncio.Event()

    async def setup(self, ctx: RunContext) -> None:
        for p in range(ctx.clients):
            self.keepers.append(asyncio.create_task(self._keeper(ctx, KEEPER_BASE + p)))

    async def _keeper(self, ctx: RunContext, process: int) -> None:
        rec = ctx.recorder
        key = f"l/live-{process}"
        async with ctx.client(ctx.control.endpoints()) as c:
            ev = await rec.run(process, "grant", key, None, partial(_grant_put, c, key))
            if ev["type"] != "ok":
                return
            lease = ev["value"][0]
            while not self.final_done.is_set():
                ev = await rec.run(process, "keepalive", key, lease, partial(_keepalive, c, lease))
                if ev["type"] == "info":
                    process += 1000  # keep the one-op-at-a-time rule after an unknown outcome
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.final_done.wait(), TTL / 4)

    async def client(self, ctx: RunContext, process: int) -> None:
        rec = ctx.recorder
        rng = ctx.rng
        proc = process
        async with ctx.client(ctx.endpoints_for(process)) as c:
            while not ctx.stop.is_set():
                ev = await rec.run(proc, "grant", "l/", None, partial(_grant_put, c, "l/"))
                if ev["type"] != "ok":
                    proc += ctx.clients
                    await asyncio.sleep(0.2)
                    continue
                lease, key = ev["value"]
                hold = rng.uniform(0.5, 2 * TTL)
                loop = asyncio.get_running_loop()
                until = loop.time() + hold
                while loop.time() < until and not ctx.stop.is_set():
                    ev = await rec.run(proc, "keepalive", key, lease, partial(_keepalive, c, lease))
                    if ev["type"] == "info":
                        proc += ctx.clients
                    await asyncio.sleep(TTL / 4)
                if rng.random() < 0.5:
                    ev = await rec.run(proc, "revoke", key, lease, partial(_revoke, c, lease))
                else:
                    ev = await rec.run(proc, "abandon", key, lease, partial(_abandon, lease))
                if ev["type"] == "info":
                    proc += ctx.clients

    async def final(self, ctx: RunContext) -> None:
        await asyncio.sleep(2 * TTL + 1)
        async with ctx.client(ctx.control.endpoints(), timeout=10.0) as c:
            for _ in range(3):
                ev = await ctx.recorder.run(
                    ctx.clients * 1000,
                    "final-read",
                    "l/",
                    None,
                    partial(_read_all, c),
                    read_only=True,
                )
                if ev["type"] == "ok":
                    break
        self.final_done.set()
        await asyncio.wait(self.keepers, timeout=ctx.command_timeout * 2)

    def check(self, history: list[Event], aux: dict[str, list[Any]]) -> dict[str, Any]:
        return {"lease": check_lease(history)}


def check_lease(history: list[Event]) -> dict[str, Any]:
    final_at: float | None = None
    final: dict[str, str] = {}
    # per key: lease, how it ended, last possible renewal (ns), renewal gaps
    keys: dict[str, dict[str, Any]] = {}
    for inv, done in pairs(history):
        f = inv["f"]
        if f == "final-read":
            if done is not None and done["type"] == "ok":
                final_at, final = inv["time_ns"], done["value"]
            continue
        if f == "grant":
            if done is not None and done["type"] == "ok":
                lease, key = done["value"]
                keys[key] = {
                    "lease": lease,
                    "live": key.startswith("l/live-"),
                    "last": done["time_ns"],
                    "ok_times": [done["time_ns"]],
                    "ended": None,
                    "not_found": None,
                    "op": inv["index"],
                }
            continue
        k = keys.get(inv["key"])
        if k is None:
            continue
        if f == "keepalive":
            if done is None or done["type"] != "fail":
                k["last"] = max(k["last"], inv["time_ns"] if done is None else done["time_ns"])
            if done is not None and done["type"] == "ok":
                k["ok_times"].append(done["time_ns"])
            if done is not None and done["type"] == "fail" and k["not_found"] is None:
                k["not_found"] = inv["index"]
        elif f in ("revoke", "abandon"):
            k["ended"] = (f, inv["index"], done["type"] if done else "info")
    if final_at is None:
        return result("unknown", error="no successful final read")
    zombies: list[dict[str, Any]] = []
    lost: list[dict[str, Any]] = []
    limit = int((2 * TTL + SLACK) * 1e9)
    for key, k in keys.items():
        present = key in final
        if not k["live"]:
            revoked = k["ended"] is not None and k["ended"][0] == "revoke" and k["ended"][2] == "ok"
            if present and (revoked or final_at - k["last"] > limit):
                zombies.append(
                    {"key": key, "lease": k["lease"], "op": k["op"], "ended": k["ended"]}
                )
            continue
        times = [t for t in k["ok_times"] if t <= final_at] + [final_at]
        steady = all(b - a < TTL / 2 * 1e9 for a, b in itertools.pairwise(times))
        if steady and (not present or k["not_found"] is not None):
            lost.append({"key": key, "lease": k["lease"], "op": k["op"], "present": present})
    return result(
        not (zombies or lost),
        leases=len(keys),
        zombies=zombies[:20],
        lost=lost[:20],
        anomaly_ops=[x["op"] for x in (zombies + lost)[:10]],
    )
