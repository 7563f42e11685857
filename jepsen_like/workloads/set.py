"""Set workload: unique elements added with compare-and-set, one final read (Jepsen's set).

The set is spread over a few keys ``s/<k>``; each holds its elements as space-separated
integers.  ``add(e)`` reads the key and its ``mod_revision`` and writes ``value + e`` in a
txn guarded by ``mod_revision == seen``; when the guard fails it reads again and retries (a
guard failure means the write did not happen, so trying again is right).  After healing, the
final read takes every key.

Checked: every acknowledged add is present (``lost``), nothing is present that was never
attempted or that surely failed (``unexpected``), and no element is present twice
(``duplicates``).  A server that applies a retried write twice (``--unsafe apply_twice``)
answers the retry with a failed guard although the first copy committed; the client adds the
element again and the final read holds it twice.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import raftkv
from jepsen_like.workloads.base import Definite, Event, Observed, RunContext, pairs, result
from raftkv.api import Compare, CompareResult, CompareTarget
from raftkv.client import op_put

KEYS = 4
ATTEMPTS = 30


def decode(value: bytes) -> list[int]:
    return [int(x) for x in value.split()] if value else []


async def add(c: raftkv.Client, key: bytes, e: int) -> Observed:
    """Append ``e`` to the list at ``key`` with a mod_revision-guarded txn, retrying on
    conflicts; Definite (fail) if every attempt lost its race."""
    for _ in range(ATTEMPTS):
        resp = await c.get(key)
        cur = resp.kvs[0] if resp.kvs else None
        mod = cur.mod_revision if cur is not None else 0
        old = cur.value if cur is not None else b""
        new = (old + b" " + str(e).encode()).strip()
        cmp = Compare(key, CompareTarget.MOD, CompareResult.EQUAL, mod)
        done = await c.txn([cmp], [op_put(key, new)])
        if done.succeeded:
            return Observed(e, {"revision": done.header.revision})
    raise Definite(e, "contention")


async def read_all(c: raftkv.Client) -> dict[str, list[int]]:
    resp = await c.get(b"s/", prefix=True)
    return {kv.key.decode(): decode(kv.value) for kv in resp.kvs}


class SetWorkload:
    name = "set"

    def __init__(self) -> None:
        self.counter = 0

    async def setup(self, ctx: RunContext) -> None:
        return None

    async def client(self, ctx: RunContext, process: int) -> None:
        proc = process
        async with ctx.client(ctx.endpoints_for(process)) as c:
            while not ctx.stop.is_set():
                self.counter += 1
                e = self.counter
                key = f"s/{e % KEYS}"
                ev = await ctx.recorder.run(proc, "add", key, e, partial(add, c, key.encode(), e))
                if ev["type"] == "info":
                    proc += ctx.clients

    async def final(self, ctx: RunContext) -> None:
        async with ctx.client(ctx.control.endpoints(), timeout=10.0) as c:
            for _ in range(3):
                ev = await ctx.recorder.run(
                    ctx.clients * 1000,
                    "final-read",
                    "s/",
                    None,
                    partial(read_all, c),
                    read_only=True,
                )
                if ev["type"] == "ok":
                    return

    def check(self, history: list[Event], aux: dict[str, list[Any]]) -> dict[str, Any]:
        return {"set": check_set(history)}


def check_set(history: list[Event]) -> dict[str, Any]:
    attempted: set[int] = set()
    acked: set[int] = set()
    failed: set[int] = set()
    final: dict[str, list[int]] | None = None
    for inv, done in pairs(history):
        if inv["f"] == "add":
            attempted.add(inv["value"])
            if done is not None and done["type"] == "ok":
                acked.add(inv["value"])
            elif done is not None and done["type"] == "fail":
                failed.add(inv["value"])
        elif inv["f"] == "final-read" and done is not None and done["type"] == "ok":
            final = done["value"]
    if final is None:
        return result("unknown", error="no successful final read")
    seen: dict[int, int] = {}
    for elems in final.values():
        for e in elems:
            seen[e] = seen.get(e, 0) + 1
    lost = sorted(acked - seen.keys())
    unexpected = sorted(e for e in seen if e not in attempted or e in failed)
    dups = sorted(e for e, n in seen.items() if n > 1)
    return result(
        not (lost or unexpected or dups),
        attempted=len(attempted),
        acknowledged=len(acked),
        present=len(seen),
        lost=lost[:20],
        unexpected=unexpected[:20],
        duplicates=dups[:20],
        anomaly_ops=_ops_of(history, (dups or unexpected or lost)[:5]),
    )


def _ops_of(history: list[Event], elems: list[int]) -> list[int]:
    want = set(elems)
    return [
        ev["index"]
        for ev in history
        if ev["f"] == "add" and ev["type"] == "invoke" and ev["value"] in want
    ][:10]
