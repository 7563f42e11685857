"""``raftkv benchmark put|range|txn|failover|watch|lease-keepalive|lease-scale|restart|
pysyncobj`` and ``raftkv check perf``.

The commands live here and are attached to the ``benchmark`` group and the root group by
:func:`register` (called from main.py).  Endpoints come from :mod:`.context` (a command's own
``--endpoints``, else the global ones); a raftkv error ends the command through the root
group's translation in main.py (``Error: ...``, exit status 1).  Reports go to stdout,
progress bars to stderr.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import click

from raftkv.errors import RaftKVError

from .context import DEFAULT_ENDPOINTS, command_endpoints, endpoints_given

F = TypeVar("F", bound=Callable[..., Any])


def endpoints_option(f: F) -> F:
    return click.option(
        "--endpoints",
        default=None,
        metavar="HOST:PORT,...",
        help="Client endpoints (default: the global --endpoints, $RAFTKV_ENDPOINTS, "
        f"{DEFAULT_ENDPOINTS}).",
    )(f)


def _bar(length: int, label: str) -> Any:
    return click.progressbar(length=length, label=label, file=sys.stderr, show_eta=False)


# --- benchmark put | range | txn ------------------------------------------------------------


def _load_options(f: F) -> F:
    for opt in reversed(
        [
            endpoints_option,
            click.option("--clients", default=1, show_default=True, help="Logical clients."),
            click.option("--conns", default=1, show_default=True, help="Connections."),
            click.option("--total", default=10_000, show_default=True, help="Requests."),
        ]
    ):
        f = opt(f)
    return f


@click.command("put")
@_load_options
@click.option("--key-size", default=8, show_default=True, help="Key size in bytes.")
@click.option("--val-size", default=8, show_default=True, help="Value size in bytes.")
@click.option(
    "--key-space-size",
    default=0,
    show_default=True,
    help="Distinct keys; 0 means --total (with --sequential-keys, every key new).",
)
@click.option("--sequential-keys", is_flag=True, help="Key i for request i (else random).")
@click.option("--prefix", default="", help="Key prefix (counts towards --key-size).")
def bench_put(
    endpoints: str | None,
    clients: int,
    conns: int,
    total: int,
    key_size: int,
    val_size: int,
    key_space_size: int,
    sequential_keys: bool,
    prefix: str,
) -> None:
    """Put TOTAL keys from CLIENTS concurrent clients over CONNS connections (etcd's
    'benchmark put')."""
    from raftkv.bench.load import run_put

    eps = command_endpoints(click.get_current_context(), endpoints)
    with _bar(total, "put") as bar:
        r = asyncio.run(
            run_put(
                eps,
                clients=clients,
                conns=conns,
                total=total,
                key_size=key_size,
                val_size=val_size,
                key_space=key_space_size,
                sequential_keys=sequential_keys,
                prefix=prefix.encode(),
                progress=bar.update,
            )
        )
    click.echo(r.stats.render(f"put: {clients} clients, {conns} conns, {val_size}-byte values"))
    if r.stats.errors:
        sys.exit(1)


@click.command("range")
@_load_options
@click.argument("key")
@click.argument("range_end", required=False)
@click.option(
    "--consistency",
    type=click.Choice(["l", "s"]),
    default="l",
    show_default=True,
    help="l: linearizable (ReadIndex), s: serializable (local state).",
)
def bench_range(
    endpoints: str | None,
    clients: int,
    conns: int,
    total: int,
    key: str,
    range_end: str | None,
    consistency: str,
) -> None:
    """Get KEY (or [KEY, RANGE_END)) TOTAL times (etcd's 'benchmark range')."""
    from raftkv.bench.load import run_range

    eps = command_endpoints(click.get_current_context(), endpoints)
    with _bar(total, "range") as bar:
        r = asyncio.run(
            run_range(
                eps,
                key=key.encode(),
                range_end=range_end.encode() if range_end else None,
                serializable=consistency == "s",
                clients=clients,
                conns=conns,
                total=total,
                progress=bar.update,
            )
        )
    kind = "serializable" if consistency == "s" else "linearizable"
    click.echo(r.stats.render(f"range ({kind}): {clients} clients, {conns} conns"))
    if r.stats.errors:
        sys.exit(1)


@click.command("txn")
@_load_options
@click.option("--key-size", default=8, show_default=True)
@click.option("--val-size", default=8, show_default=True)
@click.option("--txn-ops", default=1, show_default=True, help="Puts per txn.")
@click.option("--prefix", default="", help="Key prefix (counts towards --key-size).")
def bench_txn(
    endpoints: str | None,
    clients: int,
    conns: int,
    total: int,
    key_size: int,
    val_size: int,
    txn_ops: int,
    prefix: str,
) -> None:
    """TOTAL txns, each putting --txn-ops new keys if the first does not exist yet."""
    from raftkv.bench.load import run_txn

    eps = command_endpoints(click.get_current_context(), endpoints)
    with _bar(total, "txn") as bar:
        r = asyncio.run(
            run_txn(
                eps,
                clients=clients,
                conns=conns,
                total=total,
                key_size=key_size,
                val_size=val_size,
                ops_per_txn=txn_ops,
                prefix=prefix.encode(),
                progress=bar.update,
            )
        )
    click.echo(r.stats.render(f"txn: {clients} clients, {conns} conns, {txn_ops} puts per txn"))
    if r.stats.errors:
        sys.exit(1)


# --- benchmark failover ---------------------------------------------------------------------


@click.command("failover")
@click.option("--nodes", default=3, show_default=True, help="Cluster size.")
@click.option("--runs", default=1, show_default=True, help="Fresh clusters, one kill each.")
@click.option("--warmup", default=2.0, show_default=True, help="Seconds of writes first.")
@click.option("--after", default=50, show_default=True, help="Acked writes after the kill.")
@click.option("--tick-ms", default=100, show_default=True)
@click.option("--election-ticks", default=10, show_default=True)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep data and logs here (default: a temporary directory, removed).",
)
def bench_failover(
    nodes: int,
    runs: int,
    warmup: float,
    after: int,
    tick_ms: int,
    election_ticks: int,
    data_dir: Path | None,
) -> None:
    """Start NODES real 'raftkv serve' processes, write continuously, SIGKILL the leader and
    report how long writes stopped.  Stops every process it starts."""
    from raftkv.bench.failover import measure_failover, process_cluster

    def one(run_dir: Path | None) -> _FailoverRun:
        with process_cluster(nodes, run_dir, tick_ms, election_ticks) as cluster:
            return asyncio.run(measure_failover(cluster, warmup=warmup, after=after))

    _failover_runs(one, runs, data_dir, "write", "some acknowledged writes were not read back")


class _FailoverRun(Protocol):
    """What both failover benchmarks (raftkv's and PySyncObj's) report for one leader kill."""

    @property
    def gap(self) -> float: ...
    @property
    def readable(self) -> int: ...
    @property
    def writes_before(self) -> int: ...
    @property
    def writes_after(self) -> int: ...
    def lines(self) -> list[str]: ...


def _failover_runs(
    one: Callable[[Path | None], _FailoverRun],
    runs: int,
    data_dir: Path | None,
    noun: str,
    missing: str,
) -> None:
    """Run ``one`` on ``runs`` fresh clusters (data in DATA_DIR/runN if given), print each
    result, fail if an acknowledged write is missing, and summarise the gaps."""
    gaps: list[float] = []
    for i in range(runs):
        r = one(data_dir / f"run{i + 1}" if data_dir is not None else None)
        click.echo(f"run {i + 1}:")
        for line in r.lines():
            click.echo(f"  {line}")
        gaps.append(r.gap)
        if r.readable != r.writes_before + r.writes_after:
            raise click.ClickException(missing)
    if runs > 1:
        click.echo(
            f"{noun} gap over {runs} runs: min {min(gaps) * 1000:.1f} ms, median "
            f"{statistics.median(gaps) * 1000:.1f} ms, max {max(gaps) * 1000:.1f} ms"
        )


# --- benchmark watch | lease-keepalive | restart --------------------------------------------


def _explicit_endpoints(value: str | None) -> list[str] | None:
    """The endpoints the user named (this option, the root's, $RAFTKV_ENDPOINTS), else None:
    then the command starts its own cluster of real processes."""
    if value or endpoints_given(click.get_current_context()):
        return command_endpoints(click.get_current_context(), value)
    return None


@click.command("watch")
@endpoints_option
@click.option("--watchers", default=10_000, show_default=True, help="Watches on the prefix.")
@click.option("--conns", default=20, show_default=True, help="Client connections for the watches.")
@click.option("--writers", default=1, show_default=True, help="Concurrent writers.")
@click.option("--total", default=100, show_default=True, help="Puts under the prefix.")
@click.option(
    "--rate", default=10.0, show_default=True, help="Puts per second in all (0: unpaced)."
)
@click.option("--val-size", default=100, show_default=True)
@click.option("--prefix", default="/watchbench/", show_default=True)
@click.option(
    "--pid", "pids", multiple=True, type=int, help="Member pid whose VmRSS to report (repeat)."
)
@click.option("--nodes", default=3, show_default=True, help="Size of a cluster it starts.")
def bench_watch(
    endpoints: str | None,
    watchers: int,
    conns: int,
    writers: int,
    total: int,
    rate: float,
    val_size: int,
    prefix: str,
    pids: tuple[int, ...],
    nodes: int,
) -> None:
    """WATCHERS watches on one prefix over CONNS connections, WRITERS putting TOTAL keys
    under it at RATE/s: delivery latency (from each put's send and acknowledgement to each
    watcher's event, p50/p99 over all deliveries) and member memory (VmRSS) before and after.
    Without endpoints it starts (and stops) its own cluster of 'raftkv serve' processes.
    Exits 1 if a delivery is missing, duplicated or out of order."""
    from raftkv.bench.procs import (
        cluster_pids,
        member_cpu,
        member_rss,
        spawned_cluster,
        wait_caught_up,
    )
    from raftkv.bench.watch import run_watch

    eps = _explicit_endpoints(endpoints)

    async def go(e: list[str], pid_map: Callable[[], Mapping[str, int | None]] | None) -> Any:
        await wait_caught_up(e, timeout=60.0)
        with _bar(total, "watch puts") as bar:
            return await run_watch(
                e,
                watchers=watchers,
                conns=conns,
                writers=writers,
                total=total,
                rate=rate,
                val_size=val_size,
                prefix=prefix.encode(),
                rss=(lambda: member_rss(pid_map())) if pid_map is not None else None,
                cpu=(lambda: member_cpu(pid_map())) if pid_map is not None else None,
                progress=bar.update,
            )

    if eps is None:
        with spawned_cluster(nodes) as cluster:
            r = asyncio.run(go(cluster.endpoints, lambda: cluster_pids(cluster)))
    else:
        named: dict[str, int | None] = {f"pid {p}": p for p in pids}
        r = asyncio.run(go(eps, (lambda: named) if named else None))
    for line in r.lines():
        click.echo(line)
    if not r.complete:
        sys.exit(1)


@click.command("lease-keepalive")
@endpoints_option
@click.option("--leases", default=100, show_default=True, help="Leases granted and renewed.")
@click.option("--ttl", default=60, show_default=True, help="Lease TTL in seconds.")
@click.option("--clients", default=10, show_default=True, help="Logical clients.")
@click.option("--conns", default=1, show_default=True, help="Connections.")
@click.option("--total", default=10_000, show_default=True, help="Keep-alives.")
def bench_lease_keepalive(
    endpoints: str | None, leases: int, ttl: int, clients: int, conns: int, total: int
) -> None:
    """Grant LEASES leases, renew them TOTAL times round-robin from CLIENTS clients over
    CONNS connections (keep-alives/s and latency, etcd's report), then check every lease is
    alive and revoke them.  Exits 1 on any failed keep-alive or lost lease."""
    from raftkv.bench.lease import run_lease_keepalive

    eps = command_endpoints(click.get_current_context(), endpoints)
    with _bar(total, "keep-alive") as bar:
        r = asyncio.run(
            run_lease_keepalive(
                eps,
                leases=leases,
                ttl=ttl,
                clients=clients,
                conns=conns,
                total=total,
                progress=bar.update,
            )
        )
    click.echo(
        r.stats.render(f"lease keep-alive: {leases} leases, {clients} clients, {conns} conns")
    )
    click.echo(f"leases alive after the run: {r.alive_after} of {r.leases}; revoked {r.revoked}")
    if r.stats.errors or r.alive_after != r.leases:
        sys.exit(1)


@click.command("lease-scale")
@click.option("--leases", default=100_000, show_default=True, help="Leases to grant.")
@click.option("--ttl", default=7200, show_default=True, help="Lease TTL in seconds.")
@click.option("--clients", default=256, show_default=True, help="Logical clients granting.")
@click.option("--conns", default=4, show_default=True, help="Connections.")
@click.option("--idle", default=60.0, show_default=True, help="Idle seconds measured after.")
@click.option("--nodes", default=3, show_default=True, help="Cluster size.")
def bench_lease_scale(
    leases: int, ttl: int, clients: int, conns: int, idle: float, nodes: int
) -> None:
    """Start a NODES-member cluster of 'raftkv serve' processes, grant LEASES leases (time,
    errors, elections), leave it idle for IDLE seconds and report the leader's CPU, RSS and
    log growth (entries and bytes read from its raft.db, extrapolated to an hour).  Exits 1
    on a failed grant or a lost lease."""
    from raftkv.bench.lease import run_lease_scale
    from raftkv.bench.procs import spawned_cluster

    with spawned_cluster(nodes) as cluster, _bar(leases, "lease grant") as bar:
        r = asyncio.run(
            run_lease_scale(
                cluster,
                leases=leases,
                ttl=ttl,
                clients=clients,
                conns=conns,
                idle=idle,
                progress=bar.update,
            )
        )
    for line in r.lines():
        click.echo(line)
    if r.grant_errors or r.alive_after != r.sampled:
        sys.exit(1)


@click.command("restart")
@click.option("--keys", default=100_000, show_default=True, help="Keys to load.")
@click.option("--val-size", default=100, show_default=True)
@click.option("--txn-ops", default=100, show_default=True, help="Puts per loading txn.")
@click.option("--clients", default=16, show_default=True, help="Loading clients.")
@click.option("--conns", default=4, show_default=True, help="Loading connections.")
@click.option("--nodes", default=3, show_default=True)
@click.option(
    "--snapshot-count", default=50_000, show_default=True, help="The members' --snapshot-count."
)
@click.option("--kill", is_flag=True, help="Stop members with SIGKILL instead of SIGTERM.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep data and logs here (default: a temporary directory, removed).",
)
def bench_restart(
    keys: int,
    val_size: int,
    txn_ops: int,
    clients: int,
    conns: int,
    nodes: int,
    snapshot_count: int,
    kill: bool,
    data_dir: Path | None,
) -> None:
    """Start NODES 'raftkv serve' processes, load KEYS keys, report member memory (VmRSS) and
    disk use, then time a follower's restart and a whole-cluster restart until every member
    is healthy and shows the leader's revision.  Stops every process it starts.  Exits 1 if a
    key is missing after a restart."""
    from raftkv.bench.procs import spawned_cluster
    from raftkv.bench.restart import run_restart

    with (
        spawned_cluster(nodes, data_dir, snapshot_count=snapshot_count) as cluster,
        _bar(-(-keys // max(1, txn_ops)), "load txns") as bar,
    ):
        r = asyncio.run(
            run_restart(
                cluster,
                keys=keys,
                val_size=val_size,
                txn_ops=txn_ops,
                clients=clients,
                conns=conns,
                kill=kill,
                progress=bar.update,
            )
        )
    click.echo(
        f"restart: {nodes} raftkv serve processes, snapshot every {snapshot_count:,} entries, "
        f"stop by {'SIGKILL' if kill else 'SIGTERM'}"
    )
    for line in r.lines():
        click.echo(line)
    if not r.intact:
        sys.exit(1)


# --- benchmark pysyncobj --------------------------------------------------------------------


@click.command("pysyncobj")
@click.option(
    "--mode",
    type=click.Choice(["seq", "concurrent", "failover"]),
    default="seq",
    show_default=True,
    help="seq: TOTAL sets one at a time; concurrent: INFLIGHT sets in flight for TIME "
    "seconds; failover: SIGKILL the leader during sequential sets (RUNS fresh clusters).",
)
@click.option("--total", default=2000, show_default=True, help="Sets (seq).")
@click.option("--inflight", default=100, show_default=True, help="Sets in flight (concurrent).")
@click.option("--time", "seconds", default=30.0, show_default=True, help="Seconds (concurrent).")
@click.option("--runs", default=1, show_default=True, help="Fresh clusters, one kill each.")
@click.option("--warmup", default=2.0, show_default=True, help="Seconds of sets first (failover).")
@click.option("--after", default=50, show_default=True, help="Acked sets after the kill.")
@click.option("--val-size", default=256, show_default=True, help="Value size in bytes.")
@click.option(
    "--journal/--no-journal",
    default=True,
    show_default=True,
    help="FileJournal and full-dump file per member (in the data dir), or memory only.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep journals and member logs here (default: a temporary directory, removed).",
)
def bench_pysyncobj(
    mode: str,
    total: int,
    inflight: int,
    seconds: float,
    runs: int,
    warmup: float,
    after: int,
    val_size: int,
    journal: bool,
    data_dir: Path | None,
) -> None:
    """Measure PySyncObj 0.3.14 the way raftkv is measured: 3 member processes on 127.0.0.1,
    load from a member that is not the leader (every set is forwarded to the leader, the hop
    count of a raftkv client), PySyncObj's default timeouts.  Stops every process it starts.
    Exits 1 if a set failed or an acknowledged set is missing.  Needs 'pip install
    pysyncobj==0.3.14' (or the 'compare' extra)."""
    from raftkv.bench.pysyncobj import Mode, load_pysyncobj, run_failover, run_load

    try:
        load_pysyncobj()
    except ImportError as e:
        raise click.ClickException(str(e)) from None
    if mode != "failover":
        r = run_load(
            Mode(mode),
            total=total,
            inflight=inflight,
            seconds=seconds,
            val_size=val_size,
            journal=journal,
            data_dir=data_dir,
        )
        click.echo(r.stats.render(r.title()))
        if r.stats.errors:
            sys.exit(1)
        return

    def one(run_dir: Path | None) -> _FailoverRun:
        return run_failover(
            warmup=warmup,
            after=after,
            val_size=val_size,
            journal=journal,
            data_dir=run_dir,
        )

    _failover_runs(one, runs, data_dir, "set", "some acknowledged sets were not found")


# --- check perf -----------------------------------------------------------------------------


@click.group("check")
def check() -> None:
    """Check properties of the cluster (etcdctl 'check')."""


@check.command("perf")
@endpoints_option
@click.option(
    "--load",
    default="s",
    show_default=True,
    help="Workload: s (50 clients, 150 writes/s), m (200, 1000/s), l (500, 8000/s), "
    "xl (1000, 15000/s).",
)
@click.option("--prefix", default="/raftkv-check-perf/", show_default=True)
@click.option("--duration", default=60.0, show_default=True, help="Seconds of load.")
@click.option("--conns", default=0, show_default=True, help="Connections; 0: clients/10.")
def check_perf(endpoints: str | None, load: str, prefix: str, duration: float, conns: int) -> None:
    """Write at the workload's rate for DURATION seconds; PASS when throughput > 90% of the
    target, the slowest put <= 0.5 s and the stddev <= 0.1 s (as etcdctl).  Exits 1 on
    FAIL.  Deletes its keys afterwards."""
    from raftkv.bench.perf import progress_steps, resolve_load, run_check_perf

    eps = command_endpoints(click.get_current_context(), endpoints)
    try:
        model = resolve_load(load)
    except RaftKVError as e:
        raise click.BadParameter(str(e), param_hint="--load") from None
    with _bar(progress_steps(duration), f"check perf --load {model.name}") as bar:
        r = asyncio.run(
            run_check_perf(
                eps,
                model,
                prefix=prefix.encode(),
                duration=duration,
                conns=conns,
                progress=bar.update,
            )
        )
    s = r.stats
    click.echo(
        f"{s.requests} writes in {s.seconds:.2f} s, target {model.rate}/s from {model.clients} "
        f"clients; p50 {s.p(50) * 1000:.2f} ms, p99 {s.p(99) * 1000:.2f} ms; "
        + (
            f"clean-up failed ({r.cleanup_error}); delete with 'raftkv del --prefix {prefix}'"
            if r.cleanup_error
            else f"{r.deleted} keys deleted"
        )
    )
    for line in r.lines():
        click.echo(line)
    if not r.passed or r.cleanup_error:
        sys.exit(1)


BENCHMARK_COMMANDS = (
    bench_put,
    bench_range,
    bench_txn,
    bench_failover,
    bench_watch,
    bench_lease_keepalive,
    bench_lease_scale,
    bench_restart,
    bench_pysyncobj,
)


def register(root: click.Group) -> None:
    """Attach these commands to ``root``: the benchmarks to its ``benchmark`` group (created
    if missing) and the ``check`` group to ``root`` itself."""
    group = root.commands.get("benchmark")
    if not isinstance(group, click.Group):
        group = click.Group("benchmark", help="Measure throughput and latency.")
        root.add_command(group)
    for cmd in BENCHMARK_COMMANDS:
        group.add_command(cmd)
    root.add_command(check)
