"""List-append workload, checked by Elle (Jepsen etcd's ``append`` test).

Each transaction is 1-4 micro-ops ``["append", k, v]`` / ``["r", k, None]`` over a few live
keys ``a/<n>``; appended values are unique per key.  A key that has taken
``max_writes_per_key`` appends is retired for a fresh one (Jepsen's ``max-writes-per-key``):
lists stay short, so reads, the history and Elle's work grow linearly with the run, not
quadratically.  A list is stored as space-separated ints.
Execution, as Jepsen's etcd client does it:

1. one read-only txn ranges every key the transaction touches (one revision, atomic), giving
   each key's list and ``mod_revision``;
2. the micro-ops are evaluated against those lists (a read sees the transaction's own earlier
   appends);
3. if anything is appended, one txn writes the new lists guarded by ``mod_revision == seen``
   on every touched key: success -> ``ok`` (the whole transaction took effect at that
   revision), guard failure -> ``fail`` (nothing was written).  Read-only transactions are
   ``ok`` after step 1.

:func:`jepsen_like.checker.elle.check` then looks for G0, G1a/b/c, G-single, G2, duplicates and
the rest under strict serializability.  A server that re-applies a retried write
(``--unsafe apply_twice``) answers the retry with a failed guard although the first copy
committed: a ``fail`` transaction whose append is read is G1a.
"""

from __future__ import annotations

import random
from functools import partial
from typing import Any

import raftkv
from jepsen_like.checker import elle
from jepsen_like.workloads.base import Definite, Event, Observed, RunContext, result, to_op
from raftkv.api import Compare, CompareResult, CompareTarget, RangeResponse
from raftkv.client import op_get, op_put

KEYS = 6
MAX_OPS = 4
MAX_WRITES_PER_KEY = 256
FINAL_READ_BATCH = 64
"""Keys per final read transaction."""

MicroOp = list[Any]


def _decode(value: bytes) -> list[int]:
    return [int(x) for x in value.split()] if value else []


async def run_txn(c: raftkv.Client, mops: list[MicroOp]) -> Observed:
    """Execute one list-append transaction; its completed micro-ops (Definite on conflict)."""
    keys = sorted({m[1] for m in mops})
    snap = await c.txn([], [op_get(k) for k in keys])
    lists: dict[str, list[int]] = {}
    mods: dict[str, int] = {}
    for k, r in zip(keys, snap.responses, strict=True):
        assert isinstance(r, RangeResponse)
        lists[k] = _decode(r.kvs[0].value) if r.kvs else []
        mods[k] = r.kvs[0].mod_revision if r.kvs else 0
    out: list[MicroOp] = []
    written: set[str] = set()
    for f, k, v in mops:
        if f == "r":
            out.append(["r", k, list(lists[k])])
        else:
            lists[k].append(v)
            written.add(k)
            out.append(["append", k, v])
    if written:
        guard = [Compare(k.encode(), CompareTarget.MOD, CompareResult.EQUAL, mods[k]) for k in keys]
        puts = [op_put(k, " ".join(map(str, lists[k]))) for k in sorted(written)]
        resp = await c.txn(guard, puts)
        if not resp.succeeded:
            raise Definite(mops, "conflict")
        return Observed(out, {"revision": resp.header.revision})
    return Observed(out, {"revision": snap.header.revision})


class Append:
    name = "append"

    def __init__(self, keys: int = KEYS, max_writes_per_key: int = MAX_WRITES_PER_KEY) -> None:
        self.max_writes = max_writes_per_key
        self.next_value: dict[str, int] = {}
        """Every key used so far -> its last appended value."""
        self.live = list(range(keys))
        """The key number in each slot; a retired key's slot gets the next fresh number."""
        self._fresh = keys

    def gen(self, rng: random.Random) -> list[MicroOp]:
        mops: list[MicroOp] = []
        for _ in range(rng.randint(1, MAX_OPS)):
            slot = rng.randrange(len(self.live))
            k = f"a/{self.live[slot]}"
            if rng.random() < 0.5:
                mops.append(["r", k, None])
            else:
                v = self.next_value.get(k, 0) + 1
                self.next_value[k] = v
                mops.append(["append", k, v])
                if v >= self.max_writes:  # retire the key: later txns use a fresh one
                    self.live[slot] = self._fresh
                    self._fresh += 1
            self.next_value.setdefault(k, 0)
        return mops

    async def setup(self, ctx: RunContext) -> None:
        return None

    async def client(self, ctx: RunContext, process: int) -> None:
        proc = process
        async with ctx.client(ctx.endpoints_for(process)) as c:
            while not ctx.stop.is_set():
                mops = self.gen(ctx.rng)
                ev = await ctx.recorder.run(proc, "txn", None, mops, partial(run_txn, c, mops))
                if ev["type"] == "info":
                    proc += ctx.clients

    async def final(self, ctx: RunContext) -> None:
        """A read of every key ever used, after healing, so every surviving append is
        observed (read-only txns of up to FINAL_READ_BATCH keys)."""
        keys = sorted(self.next_value, key=lambda k: int(k.split("/")[1]))
        async with ctx.client(ctx.control.endpoints(), timeout=10.0) as c:
            for i in range(0, len(keys), FINAL_READ_BATCH):
                mops: list[MicroOp] = [["r", k, None] for k in keys[i : i + FINAL_READ_BATCH]]
                await ctx.recorder.run(
                    ctx.clients * 1000,
                    "txn",
                    None,
                    mops,
                    partial(run_txn, c, mops),
                    read_only=True,
                )

    def check(self, history: list[Event], aux: dict[str, list[Any]]) -> dict[str, Any]:
        try:
            res = elle.check_history([to_op(ev) for ev in history])
        except ValueError as e:
            return {"elle": result("unknown", error=str(e))}
        anomaly_ops: list[int] = []
        for examples in res.get("anomalies", {}).values():
            for ex in examples[:1]:
                anomaly_ops += _indices(ex)
            if anomaly_ops:
                break
        res["anomaly_ops"] = anomaly_ops[:10]
        return {"elle": res}


_ID_FIELDS = frozenset({"txn", "txns", "cycle", "op", "ops", "writer", "reader", "steps"})


def _indices(example: Any) -> list[int]:
    """Txn ids (invocation indices) named in an Elle example, whatever its shape."""
    out: list[int] = []
    if isinstance(example, dict):
        for k, v in example.items():
            if k in _ID_FIELDS or k.endswith("txn"):
                out += _indices(v)
    elif isinstance(example, list):
        for x in example:
            out += (
                _indices(x) if isinstance(x, dict | list) else ([x] if isinstance(x, int) else [])
            )
    elif isinstance(example, int):
        out.append(example)
    return out
