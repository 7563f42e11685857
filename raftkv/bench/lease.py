"""``raftkv benchmark lease-keepalive``: keep-alive throughput and latency; ``raftkv
benchmark lease-scale``: 100,000 leases on a real cluster (grant time, elections, and the idle
leader's CPU, RSS and log growth), see :func:`run_lease_scale`.

Grants ``leases`` leases, then C logical clients over K connections renew them round-robin
(request ``i`` renews lease ``i mod leases``), one keep-alive at a time each, ``total`` in all,
and report like ``benchmark put`` (keep-alives/s, latency percentiles).  Keep-alives are served
by the leader from its lease clock (a renewal is proposed through the log only when the
budget recorded there runs low), so this measures the leader's client path more than Raft.
Afterwards every lease is checked to be alive and then revoked.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from raftkv.api import LeaseGrantResponse
from raftkv.bench.load import Progress, connections, drive
from raftkv.bench.report import Stats
from raftkv.client import Client
from raftkv.errors import InvalidArgument, RaftKVError
from raftkv.testing import ProcessCluster


@dataclass(frozen=True, slots=True)
class LeaseBenchResult:
    stats: Stats
    leases: int
    alive_after: int
    """Leases that a time-to-live query found alive after the run (must be all of them)."""
    revoked: int


async def run_lease_keepalive(
    endpoints: Sequence[str],
    *,
    leases: int = 100,
    ttl: int = 60,
    clients: int = 10,
    conns: int = 1,
    total: int = 10_000,
    progress: Progress | None = None,
) -> LeaseBenchResult:
    """Grant ``leases`` leases with ``ttl`` seconds, renew them ``total`` times from
    ``clients`` logical clients over ``conns`` connections, check and revoke them."""
    if leases < 1:
        raise InvalidArgument("--leases must be at least 1")
    if ttl < 1:
        raise InvalidArgument("--ttl must be at least 1")
    async with connections(endpoints, conns) as cs:
        ids: list[int] = []
        for i in range(0, leases, 64):  # grant in bounded batches
            resps = await asyncio.gather(
                *(cs[j % len(cs)].lease_grant(ttl) for j in range(i, min(leases, i + 64)))
            )
            ids.extend(r.id for r in resps)

        async def op(c: Client, i: int) -> object:
            return await c.lease_keep_alive_once(ids[i % leases])

        try:
            stats = await drive(cs, clients, total, op, progress)
            alive = 0
            for lid in ids:
                with contextlib.suppress(RaftKVError):
                    ttl_resp = await cs[0].lease_time_to_live(lid)
                    alive += ttl_resp.ttl > 0
        finally:
            revoked = 0
            for lid in ids:
                with contextlib.suppress(RaftKVError):
                    await cs[0].lease_revoke(lid)
                    revoked += 1
    return LeaseBenchResult(stats, leases, alive, revoked)


# --- raftkv benchmark lease-scale ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogWindow:
    """The entries a member's SQLite log gained over a window, read from its ``raft.db``."""

    entries: int
    bytes: int
    """Sum of the entries' data (what the log stores per entry besides a few integers)."""
    checkpoint_entries: int
    checkpoint_records: int
    """Leases listed by those checkpoint entries, in all."""
    max_checkpoint_records: int
    max_entry_bytes: int


def log_window(db: Path, after_index: int) -> LogWindow:
    """Read (read-only) the entries after ``after_index`` from the log at ``db`` and classify
    them (lease checkpoints decoded)."""
    from raftkv.api import LeaseCheckpointRequest
    from raftkv.protocol import codec
    from raftkv.server.apply import ENTRY_KV

    entries = total = cps = records = max_records = max_bytes = 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10.0)
    try:
        for (data,) in con.execute("SELECT data FROM entries WHERE idx > ?", (after_index,)):
            blob = bytes(data)
            entries += 1
            total += len(blob)
            max_bytes = max(max_bytes, len(blob))
            if blob.startswith(ENTRY_KV):
                with contextlib.suppress(RaftKVError, ValueError):
                    req = codec.decode_command(blob[1:]).request
                    if isinstance(req, LeaseCheckpointRequest):
                        cps += 1
                        records += len(req.checkpoints)
                        max_records = max(max_records, len(req.checkpoints))
    finally:
        con.close()
    return LogWindow(entries, total, cps, records, max_records, max_bytes)


def last_log_index(db: Path) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10.0)
    try:
        row = con.execute("SELECT max(idx) FROM entries").fetchone()
    finally:
        con.close()
    return int(row[0] or 0)


def file_bytes(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def wal_of(db: Path) -> Path:
    return db.with_name(db.name + "-wal")


@dataclass(frozen=True, slots=True)
class LeaseScaleResult:
    leases: int
    ttl: int
    grant_seconds: float
    grant_errors: int
    elections: int
    """Term changes during the grants (0: the leader kept its term throughout)."""
    leader_changes: int
    idle_seconds: float
    leader_cpu_percent: float
    """The leader process's CPU time over the idle window, % of one core."""
    log: LogWindow
    """What the leader's log gained over the idle window."""
    db_growth: int
    """Growth of the leader's raft.db file over the idle window."""
    wal_start: int
    wal_end: int
    """Size of the leader's raft.db-wal at the start and the end of the window (SQLite reuses
    it after each checkpoint of the WAL into the database, so it grows to a bound, not by
    the hour)."""
    leader_rss: int | None
    alive_after: int
    """Leases a sample of time-to-live queries found alive at the end, of ``sampled``."""
    sampled: int

    def per_hour(self, value: float) -> float:
        return value * 3600.0 / self.idle_seconds if self.idle_seconds > 0 else 0.0

    def lines(self) -> list[str]:
        lg = self.log
        rss = "-" if self.leader_rss is None else f"{self.leader_rss / 1e6:.1f} MB"
        return [
            f"granted {self.leases:,} leases (TTL {self.ttl} s) in {self.grant_seconds:.1f} s "
            f"({self.leases / max(self.grant_seconds, 1e-9):,.0f}/s), {self.grant_errors} "
            f"errors, {self.elections} elections, {self.leader_changes} leader changes",
            f"idle {self.idle_seconds:.0f} s: leader CPU {self.leader_cpu_percent:.1f}%, "
            f"leader RSS {rss}",
            f"leader log over the idle window: {lg.entries} entries, {lg.bytes:,} bytes "
            f"({self.per_hour(lg.bytes) / 1e6:.2f} MB/hour); {lg.checkpoint_entries} "
            f"checkpoint entries listing {lg.checkpoint_records:,} leases (max "
            f"{lg.max_checkpoint_records} per entry, largest entry {lg.max_entry_bytes:,} bytes)",
            f"leader raft.db growth over the idle window: {self.db_growth:,} bytes "
            f"({self.per_hour(self.db_growth) / 1e6:.2f} MB/hour); raft.db-wal "
            f"{self.wal_start:,} -> {self.wal_end:,} bytes",
            f"leases alive at the end: {self.alive_after} of {self.sampled} sampled",
        ]


async def run_lease_scale(
    cluster: ProcessCluster,
    *,
    leases: int = 100_000,
    ttl: int = 7200,
    clients: int = 256,
    conns: int = 4,
    idle: float = 60.0,
    sample: int = 100,
    progress: Progress | None = None,
) -> LeaseScaleResult:
    """On a started ``cluster``: grant ``leases`` leases with ``ttl`` from ``clients``
    logical clients over ``conns`` connections (time, errors, elections), then leave the
    cluster idle for ``idle`` seconds and measure the leader's CPU, RSS and log growth."""
    from raftkv.bench.procs import cpu_seconds, gauges, rss_bytes, wait_converged

    if leases < 1:
        raise InvalidArgument("--leases must be at least 1")
    if ttl < 1:
        raise InvalidArgument("--ttl must be at least 1")
    lead, g0 = await wait_converged(cluster, timeout=60.0)
    ids: list[int] = []
    async with connections(cluster.endpoints, conns, command_timeout=30.0) as cs:

        async def op(c: Client, i: int) -> object:
            return await c.lease_grant(ttl)

        def granted(i: int, resp: object) -> None:
            if isinstance(resp, LeaseGrantResponse):
                ids.append(resp.id)

        t0 = time.monotonic()
        stats = await drive(cs, clients, leases, op, progress, on_ok=granted)
        grant_seconds = time.monotonic() - t0
        lead2, g1 = await wait_converged(cluster, timeout=120.0)
        leader_changes = int(lead2 != lead)
        # The leases' first round of duties (the lessor starts their clocks) is over.
        await asyncio.sleep(2.0)
        proc = cluster.procs[lead2]
        pid = proc.pid
        db = next(proc.data_dir.rglob("raft.db"))
        start_index = await asyncio.to_thread(last_log_index, db)
        start_db, start_wal = file_bytes(db), file_bytes(wal_of(db))
        cpu0 = cpu_seconds(pid) if pid else None
        w0 = time.monotonic()
        await asyncio.sleep(idle)
        cpu1 = cpu_seconds(pid) if pid else None
        idle_seconds = time.monotonic() - w0
        rss = rss_bytes(pid) if pid else None
        window = await asyncio.to_thread(log_window, db, start_index)
        growth, end_wal = file_bytes(db) - start_db, file_bytes(wal_of(db))
        g2 = await gauges(cluster, lead2)
        step = max(1, len(ids) // max(1, sample))
        picked = ids[::step][:sample]
        alive = 0
        for lid in picked:
            with contextlib.suppress(RaftKVError):
                alive += (await cs[0].lease_time_to_live(lid)).ttl > 0
    cpu = 0.0 if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / idle_seconds * 100
    return LeaseScaleResult(
        leases=leases,
        ttl=ttl,
        grant_seconds=grant_seconds,
        grant_errors=sum(stats.errors.values()),
        elections=g1.term - g0.term + (0 if g2 is None else g2.term - g1.term),
        leader_changes=leader_changes,
        idle_seconds=idle_seconds,
        leader_cpu_percent=cpu,
        log=window,
        db_growth=growth,
        wal_start=start_wal,
        wal_end=end_wal,
        leader_rss=rss,
        alive_after=alive,
        sampled=len(picked),
    )
