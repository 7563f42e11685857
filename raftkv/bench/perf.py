"""``raftkv check perf``: etcdctl's ``check perf`` workloads and pass rules, against raftkv.

Like etcdctl (``etcdctl/ctlv3/command/check.go``): a rate limiter (burst 1) feeds put
operations into a queue of capacity ``clients``; ``clients`` workers take them and time each
put; keys are ``prefix`` + 256 bytes (8 random bytes, then zeros), values 1024 zero bytes; the
run lasts ``duration`` seconds, then every key under the prefix is deleted.  The run refuses
to start when the prefix already holds keys.  It passes when there were no errors,
throughput > 90% of the target rate, the slowest put took <= 0.5 s and the latency stddev is
<= 0.1 s.

Two deliberate differences: etcdctl opens one gRPC connection per client, we spread the
workers over ``conns`` connections (each raftkv connection multiplexes requests); and the
limiter may release up to :data:`CATCH_UP` seconds of tokens at once, because an asyncio
timer wakes about once a millisecond at best (at 8000 writes/s a token is due every 125 us).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from raftkv.api import prefix_end
from raftkv.bench.load import PROGRESS_INTERVAL, Progress, connections
from raftkv.bench.report import Recorder, Stats
from raftkv.client import Client
from raftkv.errors import InvalidArgument, RaftKVError

KEY_SIZE = 256
VALUE_SIZE = 1024
CATCH_UP = 0.005
MAX_SLOWEST = 0.5
MAX_STDDEV = 0.1
MIN_RATIO = 0.9


@dataclass(frozen=True, slots=True)
class Load:
    """One workload model: a target write rate and the concurrent clients feeding it."""

    name: str
    rate: int
    clients: int
    duration: int = 60


LOADS: dict[str, Load] = {
    "s": Load("s", rate=150, clients=50),
    "m": Load("m", rate=1000, clients=200),
    "l": Load("l", rate=8000, clients=500),
    "xl": Load("xl", rate=15000, clients=1000),
}
CLEANUP_TIMEOUT = 120.0
"""Seconds allowed for deleting the run's keys afterwards."""
ALIASES = {"small": "s", "medium": "m", "large": "l", "xLarge": "xl"}


@dataclass(frozen=True, slots=True)
class PerfResult:
    load: Load
    seconds: float
    stats: Stats
    deleted: int
    cleanup_error: str = ""
    """Why deleting the run's keys failed ('' when it worked)."""

    @property
    def throughput_ok(self) -> bool:
        return self.stats.rps / self.load.rate > MIN_RATIO

    @property
    def passed(self) -> bool:
        return (
            not self.stats.errors
            and self.throughput_ok
            and self.stats.slowest <= MAX_SLOWEST
            and self.stats.stddev <= MAX_STDDEV
        )

    def lines(self) -> list[str]:
        """The verdict, worded as etcdctl words it."""
        s = self.stats
        out: list[str] = []
        if s.errors:
            out.append("FAIL: too many errors")
            out += [f"FAIL: ERROR({text}) -> {n}" for text, n in s.errors.items()]
        if self.throughput_ok:
            out.append(f"PASS: Throughput is {int(s.rps) + 1} writes/s")
        else:
            out.append(f"FAIL: Throughput too low: {int(s.rps) + 1} writes/s")
        if s.slowest > MAX_SLOWEST:
            out.append(f"FAIL: Slowest request took too long: {s.slowest:f}s")
        else:
            out.append(f"PASS: Slowest request took {s.slowest:f}s")
        if s.stddev > MAX_STDDEV:
            out.append(f"FAIL: Stddev too high: {s.stddev:f}s")
        else:
            out.append(f"PASS: Stddev is {s.stddev:f}s")
        out.append("PASS" if self.passed else "FAIL")
        return out


def resolve_load(name: str) -> Load:
    key = ALIASES.get(name, name)
    if key not in LOADS:
        raise InvalidArgument(f"unknown load option {name}")
    return LOADS[key]


def perf_key(prefix: bytes, rng: random.Random) -> bytes:
    return prefix + rng.getrandbits(63).to_bytes(8, "big") + bytes(KEY_SIZE - 8)


async def _limited_producer(
    queue: asyncio.Queue[bytes | None],
    rate: int,
    duration: float,
    prefix: bytes,
    workers: int,
) -> None:
    """Put one key on ``queue`` per token of a ``rate``/s limiter for ``duration`` seconds,
    then one ``None`` per worker."""
    loop = asyncio.get_running_loop()
    rng = random.Random()
    interval = 1.0 / rate
    end = loop.time() + duration
    due = loop.time()
    while True:
        now = loop.time()
        if now >= end:
            break
        if due > now:
            await asyncio.sleep(min(due, end) - now)
            continue
        # Tokens owed since the last wake-up, bounded so a stall is not made up in a burst.
        due = max(due, now - CATCH_UP)
        while due <= now:
            await queue.put(perf_key(prefix, rng))
            due += interval
        due = max(due, loop.time() - interval)
    for _ in range(workers):
        await queue.put(None)


async def run_check_perf(
    endpoints: Sequence[str],
    load: Load,
    *,
    prefix: bytes = b"/etcdctl-check-perf/",
    duration: float | None = None,
    conns: int = 0,
    progress: Progress | None = None,
) -> PerfResult:
    """Run one ``check perf`` workload; ``conns`` 0 means one connection per 10 clients."""
    seconds = float(duration if duration is not None else load.duration)
    if seconds <= 0:
        raise InvalidArgument("--duration must be positive")
    value = bytes(VALUE_SIZE)
    nconns = conns or max(1, load.clients // 10)
    async with connections(endpoints, nconns) as cs:
        first = await cs[0].get(prefix, range_end=prefix_end(prefix), limit=1, keys_only=True)
        if first.kvs:
            raise InvalidArgument(
                f"prefix {prefix!r} has keys. Delete with 'raftkv del --prefix' first"
            )
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=load.clients)
        rec = Recorder()

        async def worker(c: Client) -> None:
            while (key := await queue.get()) is not None:
                st = time.perf_counter()
                try:
                    await c.put(key, value)
                except RaftKVError as e:
                    rec.error(e)
                else:
                    rec.ok(time.perf_counter() - st)

        async def bar() -> None:
            for _ in range(int(seconds / PROGRESS_INTERVAL)):
                await asyncio.sleep(PROGRESS_INTERVAL)
                if progress is not None:
                    progress(1)

        ticker = asyncio.create_task(bar())
        try:
            await asyncio.gather(
                _limited_producer(queue, load.rate, seconds, prefix, load.clients),
                *(worker(cs[j % nconns]) for j in range(load.clients)),
            )
        finally:
            rec.finish()
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        # One delete of every key written (up to ~500,000 under --load l): give it far more
        # than the per-put budget, and keep the report when it still fails.
        try:
            resp = await cs[0].delete(prefix, range_end=prefix_end(prefix), timeout=CLEANUP_TIMEOUT)
            deleted, cleanup_error = resp.deleted, ""
        except RaftKVError as e:
            deleted, cleanup_error = 0, f"{type(e).__name__}: {e}"
    return PerfResult(load, seconds, rec.stats(), deleted, cleanup_error)


def progress_steps(seconds: float) -> int:
    """How many ``progress(1)`` calls :func:`run_check_perf` makes (the bar's length)."""
    return int(seconds / PROGRESS_INTERVAL)
