"""Helpers for benchmarks that watch member processes: resident memory, on-disk size, and
waiting until every member is healthy and has applied the leader's revision.

The benchmarks that start their own cluster use :class:`raftkv.testing.ProcessCluster` (real
``raftkv serve`` processes, fsync on) and read the members' memory from ``/proc/PID/status``
(``VmRSS``), which is what ``ps`` and ``top`` show as RES.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from raftkv.client import Client, EndpointStatus
from raftkv.errors import RaftKVError, Timeout
from raftkv.testing import ProcessCluster

SNAPSHOT_SUFFIX = ".snap"


def rss_bytes(pid: int) -> int | None:
    """The resident set size (``VmRSS``) of process ``pid`` in bytes; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            return int(parts[1]) * 1024  # the kernel reports kB
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time process ``pid`` has used, in seconds; None if it is gone."""
    import os

    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def member_cpu(pids: Mapping[str, int | None]) -> dict[str, float | None]:
    """``cpu_seconds`` for every named member."""
    return {name: (cpu_seconds(pid) if pid else None) for name, pid in pids.items()}


def member_rss(pids: Mapping[str, int | None]) -> dict[str, int | None]:
    """``rss_bytes`` for every named member (None for a member without a live process)."""
    return {name: (rss_bytes(pid) if pid else None) for name, pid in pids.items()}


def format_rss(rss: Mapping[str, int | None]) -> str:
    """``n1 123.4 MB, n2 ...`` (``-`` for an unknown figure)."""
    return ", ".join(
        f"{name} {'-' if v is None else f'{v / 1e6:.1f} MB'}" for name, v in rss.items()
    )


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """Bytes under one member's data directory, and of its newest snapshot file."""

    total: int
    snapshot: int
    snapshot_name: str


def disk_usage(data_dir: Path) -> DiskUsage:
    """Sum the files under ``data_dir``; the snapshot figure is the newest ``*.snap`` file."""
    total = 0
    snaps: list[Path] = []
    if data_dir.exists():
        for p in data_dir.rglob("*"):
            if p.is_file():
                with contextlib.suppress(OSError):
                    total += p.stat().st_size
                if p.name.endswith(SNAPSHOT_SUFFIX):
                    snaps.append(p)
    newest = max(snaps, key=lambda p: p.name, default=None)
    return DiskUsage(
        total,
        newest.stat().st_size if newest is not None else 0,
        newest.name if newest is not None else "",
    )


@contextlib.contextmanager
def spawned_cluster(
    size: int = 3,
    data_dir: Path | None = None,
    *,
    tick_ms: int = 100,
    election_ticks: int = 10,
    snapshot_count: int = 50_000,
) -> Iterator[ProcessCluster]:
    """A started :class:`ProcessCluster` of ``raftkv serve`` processes with the serve
    defaults (tick 100 ms, election 10 ticks, snapshot every 50,000 entries); every process is
    stopped, and a temporary data directory removed, on exit."""
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="raftkv-b-")))
        data_dir.mkdir(parents=True, exist_ok=True)
        cluster = ProcessCluster(
            size,
            data_dir,
            tick_ms=tick_ms,
            election_ticks=election_ticks,
            snapshot_count=snapshot_count,
        )
        stack.callback(cluster.stop)
        cluster.start()
        yield cluster


def cluster_pids(cluster: ProcessCluster) -> dict[str, int | None]:
    return {name: (p.pid if p.alive else None) for name, p in cluster.procs.items()}


@dataclass(frozen=True, slots=True)
class Gauges:
    """The figures of one member's ``/metrics`` that say where it stands."""

    is_leader: bool
    has_leader: bool
    term: int
    revision: int
    applied: int


async def gauges(cluster: ProcessCluster, name: str, timeout: float = 2.0) -> Gauges | None:
    """Member ``name``'s :class:`Gauges` from its metrics endpoint (None if it does not answer).

    Cheap for the member at any store size, unlike a client ``status`` request, which hashes
    the whole store on the member's event loop (seconds at 1M keys)."""
    m = await asyncio.to_thread(cluster.metrics, name, timeout)
    try:
        return Gauges(
            is_leader=m["raftkv_raft_is_leader"] == 1.0,
            has_leader=m["raftkv_raft_has_leader"] == 1.0,
            term=int(m["raftkv_raft_term"]),
            revision=int(m["raftkv_mvcc_revision"]),
            applied=int(m["raftkv_raft_applied_index"]),
        )
    except KeyError:
        return None


async def wait_converged(
    cluster: ProcessCluster, timeout: float = 300.0, poll: float = 0.05
) -> tuple[str, Gauges]:
    """Wait until every live member answers on its metrics endpoint, exactly one leads, all
    know a leader, and all show the leader's revision and applied index.  Returns the
    leader's name and gauges."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    names = [n for n, p in cluster.procs.items() if p.alive]
    while loop.time() < deadline:
        gs = await asyncio.gather(*(gauges(cluster, n) for n in names))
        if all(g is not None for g in gs):
            live = dict(zip(names, (g for g in gs if g is not None), strict=True))
            leaders = [n for n, g in live.items() if g.is_leader]
            if len(leaders) == 1 and all(g.has_leader for g in live.values()):
                lead = live[leaders[0]]
                if all(
                    g.revision == lead.revision and g.applied >= lead.applied for g in live.values()
                ):
                    return leaders[0], lead
        await asyncio.sleep(poll)
    raise Timeout(f"members did not converge within {timeout:g}s")


async def statuses(endpoints: Sequence[str], timeout: float = 1.0) -> list[EndpointStatus | None]:
    """Each endpoint's status, None where it does not answer."""

    async def one(ep: str) -> EndpointStatus | None:
        try:
            async with Client([ep], dial_timeout=timeout, command_timeout=timeout) as c:
                return await c.status(ep)
        except (RaftKVError, OSError):
            return None

    return list(await asyncio.gather(*(one(ep) for ep in endpoints)))


async def wait_caught_up(
    endpoints: Sequence[str], timeout: float = 120.0, poll: float = 0.05
) -> EndpointStatus:
    """Wait until every endpoint answers, all name the same leader, that leader is among
    them, and every member shows the leader's revision and applied index (what ``raftkv
    endpoint status`` shows).  Returns the leader's status."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        sts = await statuses(endpoints)
        if all(s is not None for s in sts):
            live = [s for s in sts if s is not None]
            leaders = {s.leader for s in live}
            lead = next((s for s in live if s.id in leaders), None)
            if (
                len(leaders) == 1
                and lead is not None
                and all(s.revision == lead.revision for s in live)
                and all(s.raft_applied_index >= lead.raft_applied_index for s in live)
            ):
                return lead
        await asyncio.sleep(poll)
    raise Timeout(f"members did not catch up within {timeout:g}s")
