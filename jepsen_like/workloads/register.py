"""Register workload: read / write / compare-and-set on independent keys, checked for
linearizability (Jepsen etcd's ``register`` test).

Each key ``r/<k>`` is its own CAS register; a CAS is a txn ``value(key) == expected ->
put(key, new)``.  The history is checked per key with the Wing-Gong-Lowe search against
:class:`~jepsen_like.checker.models.CasRegister` (P-compositionality makes keys independent).
Reads are linearizable ranges, served by the process's home member, so a member that serves
stale data (``--unsafe stale_reads`` behind a partition) is caught.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable
from dataclasses import dataclass
from functools import partial
from typing import Any

import raftkv
from jepsen_like.checker.linearizability import UNKNOWN, Operation, UnknownT, Verdict, check, report
from jepsen_like.checker.models import CasRegister, RegisterFn, RegisterInput, RegisterOutput
from jepsen_like.workloads.base import Definite, Event, Observed, RunContext, pairs, result
from raftkv.api import Compare, CompareResult, CompareTarget
from raftkv.client import op_put

CHECK_TIMEOUT = 60.0
"""Seconds the linearizability search may take before the verdict is 'unknown' (plus one
second per thousand operations, for long soaks)."""


@dataclass(frozen=True, slots=True)
class KeyedInput:
    key: str
    op: RegisterInput


class KeyedCasRegister:
    """:class:`CasRegister` per key: each key is a partition."""

    name = "cas-register-per-key"

    def __init__(self) -> None:
        self.inner = CasRegister()

    def init(self) -> Hashable:
        return self.inner.init()

    def step(
        self, state: Hashable, input: KeyedInput, output: RegisterOutput | UnknownT
    ) -> tuple[bool, Hashable]:
        return self.inner.step(state, input.op, output)

    def partition_key(self, input: KeyedInput) -> Hashable:
        return input.key

    def describe_operation(self, input: KeyedInput, output: RegisterOutput | UnknownT) -> str:
        return f"{input.key} {self.inner.describe_operation(input.op, output)}"

    def describe_state(self, state: Hashable) -> str:
        return self.inner.describe_state(state)


class Register:
    name = "register"

    def __init__(self, keys: int = 5, values: int = 5, ops_per_key: int = 2000) -> None:
        self.keys = keys
        self.values = values
        self.ops_per_key = ops_per_key
        """After about this many operations a key is retired for a fresh one (Jepsen's
        ``independent`` keys with a per-key limit): an unknown write stays open for ever in
        the search, so bounding each key's history keeps long runs checkable."""
        self._issued = 0

    def next_key(self, rng: random.Random) -> str:
        """``r/<generation>/<slot>``: ``keys`` live keys, the generation advancing every
        ``keys * ops_per_key`` operations over all clients."""
        gen = self._issued // (self.keys * self.ops_per_key)
        self._issued += 1
        return f"r/{gen}/{rng.randrange(self.keys)}"

    async def setup(self, ctx: RunContext) -> None:
        return None

    async def client(self, ctx: RunContext, process: int) -> None:
        rng = ctx.rng
        rec = ctx.recorder
        proc = process
        home = ctx.home(process)
        reader = ctx.client([home], timeout=3.0, sync=False)
        try:
            async with ctx.client(ctx.endpoints_for(process)) as c:
                while not ctx.stop.is_set():
                    if ctx.home(process) != home:  # the member nemesis replaced our home member
                        await reader.close()
                        home = ctx.home(process)
                        reader = ctx.client([home], timeout=3.0, sync=False)
                    key = self.next_key(rng)
                    kb = key.encode()
                    roll = rng.random()
                    if roll < 0.5:
                        ev = await rec.run(
                            proc, "read", key, None, partial(_read, reader, kb), read_only=True
                        )
                    elif roll < 0.75:
                        v = rng.randrange(self.values)
                        ev = await rec.run(proc, "write", key, v, partial(_write, c, kb, v))
                    else:
                        exp, new = rng.randrange(self.values), rng.randrange(self.values)
                        ev = await rec.run(
                            proc, "cas", key, [exp, new], partial(_cas, c, kb, exp, new)
                        )
                    if ev["type"] == "info":
                        proc += ctx.clients  # the old operation may still be in flight
        finally:
            await reader.close()

    async def final(self, ctx: RunContext) -> None:
        return None

    def check(self, history: list[Event], aux: dict[str, list[Any]]) -> dict[str, Any]:
        ops = operations(history)
        model = KeyedCasRegister()
        res = check(model, ops, CHECK_TIMEOUT + len(ops) / 1000)
        text = report(model, ops, res)
        verdicts: dict[Verdict, bool | str] = {
            Verdict.LINEARIZABLE: True,
            Verdict.NOT_LINEARIZABLE: False,
            Verdict.UNKNOWN: "unknown",
        }
        valid = verdicts[res.verdict]
        anomaly_ops: list[int] = []
        if res.anomaly is not None:
            anomaly_ops = [res.anomaly.blocking_op, *res.anomaly.longest_prefix[-3:]]
        return {
            "linearizable": result(
                valid,
                report=text,
                operations=len(ops),
                partitions=res.partitions,
                anomaly_ops=anomaly_ops,
            )
        }


async def _read(c: raftkv.Client, kb: bytes) -> Observed:
    resp = await c.get(kb)
    value = int(resp.kvs[0].value) if resp.kvs else None
    return Observed(value, {"revision": resp.header.revision})


async def _write(c: raftkv.Client, kb: bytes, v: int) -> Observed:
    resp = await c.put(kb, str(v))
    return Observed(v, {"revision": resp.header.revision})


async def _cas(c: raftkv.Client, kb: bytes, exp: int, new: int) -> Observed:
    cmp = Compare(kb, CompareTarget.VALUE, CompareResult.EQUAL, str(exp).encode())
    resp = await c.txn([cmp], [op_put(kb, str(new))])
    if not resp.succeeded:
        raise Definite([exp, new], "cas")
    return Observed([exp, new], {"revision": resp.header.revision})


def operations(history: list[Event]) -> list[Operation[KeyedInput, RegisterOutput]]:
    """The history as checker operations (ids = invocation indices; times in seconds).

    A CAS that failed its compare is kept with output False (it observed the register);
    other failures are dropped; an unknown write or CAS may take effect any time after its
    invocation; an unknown read is dropped (it changes nothing)."""
    out: list[Operation[KeyedInput, RegisterOutput]] = []
    for inv, done in pairs(history):
        f = inv["f"]
        if f not in ("read", "write", "cas"):
            continue
        call = inv["time_ns"] / 1e9
        if done is None or done["type"] == "info":
            if f == "read":
                continue
            output: RegisterOutput | UnknownT = UNKNOWN
            ret = math.inf
        elif done["type"] == "fail":
            if f != "cas" or done["extra"].get("error") != "cas":
                continue
            output, ret = False, done["time_ns"] / 1e9
        else:
            ret = done["time_ns"] / 1e9
            output = done["value"] if f == "read" else (True if f == "cas" else None)
        if f == "read":
            rin = RegisterInput(RegisterFn.READ)
        elif f == "write":
            rin = RegisterInput(RegisterFn.WRITE, inv["value"])
        else:
            rin = RegisterInput(RegisterFn.CAS, inv["value"][1], inv["value"][0])
        out.append(
            Operation(inv["index"], inv["process"], KeyedInput(inv["key"], rin), output, call, ret)
        )
    return out
