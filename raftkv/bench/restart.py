"""``raftkv benchmark restart``: memory, disk and restart time with N keys.

End to end against real ``raftkv serve`` processes (fsync on):

1. load ``keys`` keys of ``val_size`` bytes in txns of ``txn_ops`` puts, from C logical
   clients, and wait until every member shows the leader's revision;
2. record each member's resident memory (``VmRSS``) and its data directory's size (and the
   newest snapshot file's);
3. stop one follower (SIGTERM, or SIGKILL with ``kill=True``), start it again and time how long
   until it answers, reports healthy, and shows the leader's revision and applied index.
   Progress is read from the members' ``/health`` and ``/metrics`` endpoints: a client
   ``status`` request (``raftkv endpoint status``) hashes the whole store on the member's event
   loop, seconds at 1M keys, so polling with it would itself stall the members.  One status
   request per member after loading checks the revisions and times that hash;
4. stop every member, start them all again and time the same for the whole cluster;
5. count the keys after each restart (all of them must be there).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from raftkv.api import PutRequest, prefix_end
from raftkv.bench.load import Progress, connections, drive
from raftkv.bench.procs import (
    DiskUsage,
    cluster_pids,
    disk_usage,
    format_rss,
    member_rss,
    statuses,
    wait_converged,
)
from raftkv.bench.report import Stats
from raftkv.client import Client, EndpointStatus
from raftkv.errors import InvalidArgument, RaftKVError, Timeout
from raftkv.testing import ProcessCluster

PREFIX = b"/restart/"


@dataclass(frozen=True, slots=True)
class RestartTimes:
    """Seconds from the start of the process(es) to each milestone."""

    answering: float
    """Every restarted member answers a status request."""
    healthy: float
    """Every restarted member reports healthy (a leader, a linearizable read served)."""
    caught_up: float
    """Every member shows the leader's revision and applied index."""

    def line(self) -> str:
        return (
            f"answering {self.answering:.2f} s, healthy {self.healthy:.2f} s, "
            f"caught up {self.caught_up:.2f} s"
        )


@dataclass(frozen=True, slots=True)
class RestartResult:
    keys: int
    val_size: int
    load: Stats
    """One request per txn."""
    revision: int
    status_seconds: float
    """The slowest member's answer to one ``endpoint status`` request after loading."""
    status_revisions: tuple[int, ...]
    """The revision each member's ``endpoint status`` showed after loading (-1: no answer)."""
    rss_loaded: Mapping[str, int | None]
    disk: Mapping[str, DiskUsage]
    member: str
    member_stop: float
    member_restart: RestartTimes
    rss_member_restarted: Mapping[str, int | None]
    cluster_stop: float
    cluster_restart: RestartTimes
    rss_cluster_restarted: Mapping[str, int | None]
    keys_after_member: int
    keys_after_cluster: int

    @property
    def intact(self) -> bool:
        return self.keys_after_member == self.keys == self.keys_after_cluster and set(
            self.status_revisions
        ) == {self.revision}

    def lines(self) -> list[str]:
        per_txn = self.keys / max(1, self.load.requests)
        out = [
            f"loaded {self.keys:,} keys of {self.val_size} bytes in {self.load.seconds:.1f} s "
            f"({self.keys / self.load.seconds if self.load.seconds else 0:,.0f} keys/s, "
            f"{self.load.requests} txns of {per_txn:.0f} puts, txn p50 "
            f"{self.load.p(50) * 1000:.1f} ms, p99 {self.load.p(99) * 1000:.1f} ms), "
            f"revision {self.revision}",
            f"endpoint status after loading: revision "
            f"{', '.join(str(r) for r in self.status_revisions)}; slowest answer "
            f"{self.status_seconds:.2f} s",
            f"member RSS loaded: {format_rss(self.rss_loaded)}",
            "disk: "
            + ", ".join(
                f"{n} {d.total / 1e6:.1f} MB (snapshot {d.snapshot / 1e6:.1f} MB"
                f"{' ' + d.snapshot_name if d.snapshot_name else ''})"
                for n, d in self.disk.items()
            ),
            f"restart follower {self.member} (stopped in {self.member_stop:.2f} s): "
            f"{self.member_restart.line()}",
            f"member RSS after member restart: {format_rss(self.rss_member_restarted)}",
            f"restart whole cluster (stopped in {self.cluster_stop:.2f} s): "
            f"{self.cluster_restart.line()}",
            f"member RSS after cluster restart: {format_rss(self.rss_cluster_restarted)}",
            f"keys found: {self.keys_after_member:,} after the member restart, "
            f"{self.keys_after_cluster:,} after the cluster restart (of {self.keys:,})",
        ]
        return out


async def load_keys(
    endpoints: list[str],
    keys: int,
    *,
    val_size: int = 100,
    txn_ops: int = 100,
    clients: int = 16,
    conns: int = 4,
    progress: Progress | None = None,
) -> Stats:
    """Put ``keys`` keys (``PREFIX`` + 10 digits) of ``val_size`` random bytes, ``txn_ops``
    per unconditional txn."""
    if keys < 1 or txn_ops < 1:
        raise InvalidArgument("--keys and --txn-ops must be at least 1")
    value = os.urandom(val_size)
    txns = -(-keys // txn_ops)

    async def op(c: Client, i: int) -> object:
        lo, hi = i * txn_ops, min(keys, (i + 1) * txn_ops)
        puts = [PutRequest(key=PREFIX + b"%010d" % k, value=value) for k in range(lo, hi)]
        return await c.txn([], puts, [])

    async with connections(endpoints, conns, command_timeout=30.0) as cs:
        return await drive(cs, clients, txns, op, progress)


async def count_keys(endpoints: list[str]) -> int:
    async with Client(endpoints, command_timeout=30.0) as c:
        r = await c.get(PREFIX, range_end=prefix_end(PREFIX), count_only=True)
    return r.count


async def time_restart(
    cluster: ProcessCluster, names: list[str], timeout: float = 600.0
) -> RestartTimes:
    """Start the stopped members ``names`` and time the milestones of :class:`RestartTimes`
    (polling the members' metrics endpoints, which cost them nothing)."""
    t0 = time.perf_counter()
    for n in names:
        cluster.start_member(n)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    async def until(check: Callable[[str], Awaitable[bool]]) -> float:
        while loop.time() < deadline:
            if all(await asyncio.gather(*(check(n) for n in names))):
                return time.perf_counter() - t0
            for n in names:
                if not cluster.procs[n].alive:
                    raise RaftKVError(f"{n} exited while restarting; see {cluster.root}")
            await asyncio.sleep(0.05)
        raise Timeout(f"restart not done within {timeout:g}s")

    async def answering(n: str) -> bool:
        return await asyncio.to_thread(cluster.health, n) is not None

    async def healthy(n: str) -> bool:
        h = await asyncio.to_thread(cluster.health, n)
        return bool(h and h.get("health"))

    t_answer = await until(answering)
    t_healthy = await until(healthy)
    await wait_converged(cluster, timeout=max(1.0, deadline - loop.time()))
    return RestartTimes(t_answer, t_healthy, time.perf_counter() - t0)


async def timed_statuses(cluster: ProcessCluster) -> tuple[float, list[EndpointStatus | None]]:
    """Every member's ``endpoint status`` (one request each, in turn) and the slowest
    answer's time: the status request hashes the whole store on the member."""
    out: list[EndpointStatus | None] = []
    slowest = 0.0
    for ep in cluster.endpoints:
        t0 = time.perf_counter()
        out.extend(await statuses([ep], timeout=120.0))
        slowest = max(slowest, time.perf_counter() - t0)
    return slowest, out


def _stop(cluster: ProcessCluster, names: list[str], kill: bool) -> float:
    t0 = time.perf_counter()
    for n in names:
        if kill:
            cluster.kill(n)
        else:
            cluster.stop_member(n, timeout=60.0)
    return time.perf_counter() - t0


async def run_restart(
    cluster: ProcessCluster,
    *,
    keys: int = 100_000,
    val_size: int = 100,
    txn_ops: int = 100,
    clients: int = 16,
    conns: int = 4,
    kill: bool = False,
    progress: Progress | None = None,
) -> RestartResult:
    """The whole measurement on a started, empty ``cluster`` (see the module docstring)."""
    eps = cluster.endpoints
    await wait_converged(cluster, timeout=60.0)
    stats = await load_keys(
        eps,
        keys,
        val_size=val_size,
        txn_ops=txn_ops,
        clients=clients,
        conns=conns,
        progress=progress,
    )
    if stats.errors:
        raise RaftKVError(f"loading failed: {stats.errors}")
    leader, lead = await wait_converged(cluster)
    rss_loaded = member_rss(cluster_pids(cluster))
    disk = {n: disk_usage(p.data_dir) for n, p in cluster.procs.items()}
    status_seconds, sts = await timed_statuses(cluster)
    status_revisions = tuple(s.revision if s is not None else -1 for s in sts)
    follower = next(n for n in cluster.procs if n != leader)
    member_stop = await asyncio.to_thread(_stop, cluster, [follower], kill)
    member_times = await time_restart(cluster, [follower])
    rss_member = member_rss(cluster_pids(cluster))
    keys_after_member = await count_keys(eps)

    names = list(cluster.procs)
    cluster_stop = await asyncio.to_thread(_stop, cluster, names, kill)
    cluster_times = await time_restart(cluster, names)
    rss_cluster = member_rss(cluster_pids(cluster))
    keys_after_cluster = await count_keys(eps)
    return RestartResult(
        keys=keys,
        val_size=val_size,
        load=stats,
        revision=lead.revision,
        status_seconds=status_seconds,
        status_revisions=status_revisions,
        rss_loaded=rss_loaded,
        disk=disk,
        member=follower,
        member_stop=member_stop,
        member_restart=member_times,
        rss_member_restarted=rss_member,
        cluster_stop=cluster_stop,
        cluster_restart=cluster_times,
        rss_cluster_restarted=rss_cluster,
        keys_after_member=keys_after_member,
        keys_after_cluster=keys_after_cluster,
    )
