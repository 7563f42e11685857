"""Measure Ready saves/s and fsyncs/s (= commits/s) of SQLiteStorage under group commit.

Not a test: run ``python tests/storage/bench_group_commit.py [seconds]``.  ``writers``
concurrent tasks each save one Ready (hard state + one 100-byte entry) in a loop, the way
several raft groups or a pipelined driver would; with 1 writer every save pays its own fsync.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import tempfile
import time

from raftkv.raft.types import Entry, HardState
from raftkv.server.storage import SQLiteStorage


async def run(writers: int, seconds: float) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory(dir=".") as d:
        st = await SQLiteStorage.open(d)
        counter = itertools.count(1)
        deadline = time.perf_counter() + seconds

        async def writer() -> None:
            while time.perf_counter() < deadline:
                i = next(counter)
                # One global index sequence: each Ready appends right after the previous one.
                await st.save(HardState(1, 1, max(0, i - 1)), [Entry(1, i, data=b"v" * 100)])

        t0 = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(writers)))
        elapsed = time.perf_counter() - t0
        s = st.stats
        await st.close()
        return s.saves / elapsed, s.transactions / elapsed, s.saves / max(1, s.transactions)


async def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    print(f"{'writers':>8} {'saves/s':>10} {'fsyncs/s':>10} {'saves/fsync':>12}")
    for writers in (1, 4, 16, 64):
        saves, fsyncs, per = await run(writers, seconds)
        print(f"{writers:>8} {saves:>10.0f} {fsyncs:>10.0f} {per:>12.1f}")


if __name__ == "__main__":
    asyncio.run(main())
