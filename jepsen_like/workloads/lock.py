"""Lock workload: a counter incremented under the mutex recipe, fenced or not.

Each client holds a session (TTL 2 s) and loops: acquire the mutex, read the counter
``jl/counter`` (``"n:token"``), work for a moment while holding the lock, write ``n + 1``,
release.  ``lock`` writes with the recipe's fenced txn (the lock key must still exist with
our create revision: the fencing token); ``lock-unfenced`` writes with a plain put, trusting
that it still holds the lock.

A holder that stalls past its TTL loses its lease; another client takes the lock and
increments; when the stalled one resumes, an unfenced write lands on a stale ``n`` and an
increment is lost (Kleppmann's fencing argument), while the fenced write is refused.

To let a nemesis stall a holder, each client is its own OS process
(:mod:`jepsen_like.workloads.lock_worker`): :meth:`LockWorkload.client` spawns it, feeds its
JSON lines into the history (:func:`feed`: events keep the worker's own monotonic times,
indices follow arrival) and tracks the holder from its "holding" / "released" markers in
``control.clients``.  The ``pause`` nemesis's ``client`` mode SIGSTOPs the holder for TTL +
1..3 s.  At the end of the run the worker's stdin is closed (it finishes its operation and
exits), then SIGTERM, then SIGKILL; ``Control.stop`` kills any worker left, so none outlives
the run.  Measured: ``lock-unfenced`` under ``pause`` is INVALID (lost increments, duplicate
steps), ``lock`` stays VALID with the paused holders' writes refused (``fail``); see
docs/testing.md.

Checked (``lock``): acknowledged increments have distinct values ``n`` (two holders never
wrote the same step), the fencing tokens never go back along the steps, and the final
counter equals the acknowledged increments (plus at most the ones of unknown outcome).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import raftkv
from jepsen_like.control import ClientProcs
from jepsen_like.workloads.base import (
    Definite,
    Event,
    Observed,
    Recorder,
    RunContext,
    pairs,
    result,
)
from raftkv.api import PutRequest
from raftkv.errors import LockLost
from raftkv.recipes import Mutex

KEY = b"jl/counter"
PREFIX = "jl/lock"
TTL = 2
HOLD = 0.05


def decode(value: bytes) -> tuple[int, int]:
    n, _, token = value.partition(b":")
    return int(n), int(token or 0)


async def incr(
    c: raftkv.Client,
    m: Mutex,
    fenced: bool,
    on_hold: Callable[[bool], None] | None = None,
) -> Observed:
    """One increment under the lock; ``on_hold(True)`` once acquired, ``on_hold(False)`` once
    released (the worker's "holding" / "released" markers)."""
    token = await m.acquire(timeout=10.0)
    if on_hold is not None:
        on_hold(True)
    try:
        cur = (await c.get(KEY)).kvs
        n = decode(cur[0].value)[0] if cur else 0
        await asyncio.sleep(HOLD)  # work under the lock
        value = f"{n + 1}:{token}".encode()
        if fenced:
            try:
                await m.guarded_txn(success=[PutRequest(KEY, value)])
            except LockLost:
                raise Definite(n + 1, "lock lost: fenced write refused") from None
        else:
            await c.put(KEY, value)
        return Observed(n + 1, {"token": token})
    finally:
        try:
            if m.is_held:
                await m.release()
        finally:
            if on_hold is not None:
                on_hold(False)


class LockWorkload:
    def __init__(self, fenced: bool) -> None:
        self.fenced = fenced
        self.name = "lock" if fenced else "lock-unfenced"

    async def setup(self, ctx: RunContext) -> None:
        ctx.control.clients.lease_ttl = TTL
        async with ctx.client(ctx.control.endpoints(), timeout=10.0) as c:
            await c.put(KEY, b"0:0")

    async def client(self, ctx: RunContext, process: int) -> None:
        """Run this client as a worker process (:mod:`jepsen_like.workloads.lock_worker`),
        feed its events into the history, and make sure it ends with the run."""
        name = f"worker-{process}"
        cmd = [
            sys.executable,
            "-m",
            "jepsen_like.workloads.lock_worker",
            "--endpoints",
            ",".join(ctx.endpoints_for(process)),
            "--process",
            str(process),
            "--clients",
            str(ctx.clients),
            "--fenced" if self.fenced else "--unfenced",
            "--t0-ns",
            str(ctx.recorder.t0),
            "--command-timeout",
            str(ctx.command_timeout),
            "--attempt-timeout",
            str(ctx.attempt_timeout),
        ]
        if ctx.recorder.interval:  # --rate: each worker paces its share of the total
            cmd += ["--rate", str(1.0 / ctx.recorder.interval / ctx.clients)]
        with (ctx.out / f"lock-{name}.log").open("wb") as log:
            p = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
            ctx.control.clients.register(name, p.pid)
            ctx.aux.setdefault("lock_workers", []).append({"name": name, "pid": p.pid})
            stopper = asyncio.create_task(stop_worker(p, ctx.stop, ctx.command_timeout + 2.0))
            try:
                assert p.stdout is not None
                async for line in p.stdout:
                    feed(ctx.recorder, ctx.control.clients, name, line)
            finally:
                stopper.cancel()
                try:
                    await kill_worker(p)
                finally:
                    ctx.control.clients.unregister(name)

    async def final(self, ctx: RunContext) -> None:
        async with ctx.client(ctx.control.endpoints(), timeout=10.0) as c:
            for _ in range(3):

                async def read() -> int:
                    kvs = (await c.get(KEY)).kvs
                    return decode(kvs[0].value)[0] if kvs else 0

                ev = await ctx.recorder.run(
                    ctx.clients * 1000, "final-read", "jl/counter", None, read, read_only=True
                )
                if ev["type"] == "ok":
                    return

    def check(self, history: list[Event], aux: dict[str, list[Any]]) -> dict[str, Any]:
        return {"lock": check_lock(history)}


def feed(rec: Recorder, clients: ClientProcs, name: str, line: bytes) -> None:
    """One line of worker ``name``: a holding/released marker, or a history event recorded
    with the worker's own time (its index is the arrival order)."""
    obj = json.loads(line)
    marker = obj.get("marker")
    if marker is not None:
        clients.holding(name, marker == "holding")
        return
    rec.add(
        obj["process"],
        obj["type"],
        obj["f"],
        obj.get("key"),
        obj.get("value"),
        node=obj.get("node"),
        extra=obj.get("extra"),
        time_ns=int(obj["time_ns"]),
    )


def _signal(p: asyncio.subprocess.Process, *sigs: signal.Signals) -> None:
    """Signal a worker that has not been reaped yet.  ``os.kill``, not ``p.send_signal``:
    Popen's send_signal polls first, which can reap the child behind asyncio's child watcher
    (its return code then reads 255, with a warning)."""
    for sig in sigs:
        if p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, sig)


async def _exited(p: asyncio.subprocess.Process, timeout: float) -> bool:
    try:
        await asyncio.wait_for(p.wait(), timeout)
    except TimeoutError:
        return False
    return True


async def stop_worker(p: asyncio.subprocess.Process, stop: asyncio.Event, grace: float) -> None:
    """When ``stop`` is set, close the worker's stdin (it finishes its operation and exits);
    after ``grace`` seconds resume and SIGTERM it, 2 s later SIGKILL it."""
    await stop.wait()
    if p.stdin is not None:
        p.stdin.close()
    if await _exited(p, grace):
        return
    _signal(p, signal.SIGCONT, signal.SIGTERM)
    if not await _exited(p, 2.0):
        _signal(p, signal.SIGKILL)


async def kill_worker(p: asyncio.subprocess.Process) -> None:
    """Make sure the worker is gone (resumed first: a stopped process dies only once
    continued) and reaped.  Its stdout has closed: normally it is exiting already."""
    try:
        if not await _exited(p, 1.0):
            _signal(p, signal.SIGCONT, signal.SIGKILL)
        await p.wait()
    except asyncio.CancelledError:
        _signal(p, signal.SIGCONT, signal.SIGKILL)
        raise


def check_lock(history: list[Event]) -> dict[str, Any]:
    acked: list[tuple[int, int, int]] = []  # (completion index, n, token)
    unknown = 0
    final: int | None = None
    for inv, done in pairs(history):
        if inv["f"] == "incr":
            if done is not None and done["type"] == "ok":
                token = int(done.get("extra", {}).get("token", 0))
                acked.append((done["index"], int(done["value"]), token))
            elif done is None or done["type"] == "info":
                unknown += 1
        elif inv["f"] == "final-read" and done is not None and done["type"] == "ok":
            final = int(done["value"])
    if final is None:
        return result("unknown", error="no successful final read")
    ns = [n for _, n, _ in acked]
    dup_steps = sorted({n for n in ns if ns.count(n) > 1})
    # The counter's own order (step n) is the order the writes were applied in; completion
    # order is not (an acknowledgement can arrive late).  Fencing tokens must never go back
    # along the steps.
    by_step = [t for _, t in sorted((n, t) for _, n, t in acked)]
    backwards = [(a, b) for a, b in itertools.pairwise(by_step) if b < a]
    lost = len(acked) - final if final < len(acked) else 0
    too_many = final - len(acked) - unknown if final > len(acked) + unknown else 0
    return result(
        not (dup_steps or backwards or lost or too_many),
        acknowledged=len(acked),
        unknown=unknown,
        final=final,
        duplicate_steps=dup_steps[:20],
        tokens_backwards=backwards[:10],
        lost_increments=lost,
        unexplained_increments=too_many,
    )
