"""``raftkv serve`` (run one member) and ``raftkv snapshot restore`` (seed a new cluster)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

import click

log = logging.getLogger("raftkv.serve")


def _parse_cluster_id(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(value, 16)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a hex cluster id") from None


@click.command("serve")
@click.option("--name", required=True, help="This member's name (unique in the cluster).")
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the log, snapshots and metadata live.",
)
@click.option("--listen-client", required=True, metavar="HOST:PORT", help="Client address.")
@click.option("--listen-peer", required=True, metavar="HOST:PORT", help="Peer (Raft) address.")
@click.option(
    "--initial-cluster",
    required=True,
    metavar="n1=HOST:PORT,...",
    help="Every initial member's name and PEER address.",
)
@click.option(
    "--initial-cluster-state",
    type=click.Choice(["new", "existing"]),
    default="new",
    show_default=True,
    help="'existing' to join a running cluster after 'raftkv member add'.",
)
@click.option(
    "--initial-cluster-token",
    default="raftkv",
    show_default=True,
    help="Distinguishes clusters started with the same member list.",
)
@click.option(
    "--cluster-id",
    default=None,
    metavar="HEX",
    help="Cluster id to join (printed by 'raftkv member add').",
)
@click.option(
    "--etcd-listen",
    default=None,
    metavar="HOST:PORT",
    help="Also serve etcd's v3 gRPC API here (etcdctl and etcd client libraries work on it).",
)
@click.option(
    "--metrics-addr",
    default=None,
    metavar="HOST:PORT",
    help="Serve /metrics (Prometheus) and /health here.",
)
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option("--log-level", default="info", show_default=True)
@click.option("--tick-ms", default=100, show_default=True, help="Raft tick interval.")
@click.option(
    "--election-ticks",
    default=10,
    show_default=True,
    help="Election timeout in ticks (randomised up to twice that).",
)
@click.option(
    "--snapshot-count", default=50_000, show_default=True, help="Applied entries between snapshots."
)
@click.option(
    "--max-request-bytes",
    default=1536 * 1024,
    show_default=True,
    help="Largest client request (etcd's default 1.5 MiB).",
)
@click.option("--max-txn-ops", default=128, show_default=True, help="Most operations in one txn.")
@click.option("--max-value-bytes", default=1024 * 1024, show_default=True, help="Largest value.")
@click.option(
    "--auto-compaction-mode",
    type=click.Choice(["off", "periodic", "revision"]),
    default="off",
    show_default=True,
    help="Compact history automatically (as etcd).",
)
@click.option(
    "--auto-compaction-retention",
    default=0.0,
    show_default=True,
    help="Seconds of history (periodic) or number of revisions (revision) to keep.",
)
@click.option(
    "--snapshot-catchup-entries",
    default=5_000,
    show_default=True,
    help="Entries kept in the log after a snapshot, for slow followers.",
)
@click.option(
    "--max-pending-proposals",
    default=10_000,
    show_default=True,
    help="Most proposals waiting to commit on the leader; beyond it writes get TooManyRequests.",
)
@click.option(
    "--rate-limit-per-conn",
    default=0.0,
    show_default=True,
    metavar="R",
    help="Requests per second per client connection (0 = unlimited); over it: TooManyRequests.",
)
@click.option(
    "--rate-limit-per-node",
    default=0.0,
    show_default=True,
    metavar="R",
    help="Requests per second for this member, all connections together (0 = unlimited).",
)
@click.option(
    "--burst",
    default=0,
    show_default=True,
    metavar="B",
    help="Token-bucket size of the rate limits (0 = one second's worth of the rate).",
)
@click.option(
    "--max-reply-bytes",
    default=64 * 1024 * 1024,
    show_default=True,
    metavar="BYTES",
    help="Largest range or txn reply; beyond it ReplyTooLarge (page with --limit).",
)
@click.option(
    "--max-client-connections",
    default=1024,
    show_default=True,
    metavar="N",
    help="Most client connections open at once; more are closed at once.",
)
@click.option(
    "--client-idle-timeout",
    default=600.0,
    show_default=True,
    metavar="SECONDS",
    help="Close a client connection without a request, watch or stream for this long (0 = never).",
)
def serve(
    name: str,
    data_dir: Path,
    listen_client: str,
    listen_peer: str,
    initial_cluster: str,
    initial_cluster_state: str,
    initial_cluster_token: str,
    cluster_id: str | None,
    etcd_listen: str | None,
    metrics_addr: str | None,
    log_format: str,
    log_level: str,
    tick_ms: int,
    election_ticks: int,
    snapshot_count: int,
    snapshot_catchup_entries: int,
    auto_compaction_mode: str,
    auto_compaction_retention: float,
    max_request_bytes: int,
    max_txn_ops: int,
    max_value_bytes: int,
    max_pending_proposals: int,
    rate_limit_per_conn: float,
    rate_limit_per_node: float,
    burst: int,
    max_reply_bytes: int,
    max_client_connections: int,
    client_idle_timeout: float,
) -> None:
    """Run one raftkv member until SIGTERM or Ctrl-C."""
    from raftkv.api import Limits
    from raftkv.protocol.methods import parse_initial_cluster, split_addr
    from raftkv.server.admission import AdmissionConfig
    from raftkv.server.config import ClusterState, CompactionMode, TestSwitches
    from raftkv.server.metrics import setup_logging
    from raftkv.server.node import NodeConfig, fsm_with_limits

    setup_logging(log_format, log_level)
    if min(rate_limit_per_conn, rate_limit_per_node, burst) < 0 or max_pending_proposals < 1:
        raise click.UsageError("rate limits and --burst must be >= 0, --max-pending-proposals >= 1")
    if max_reply_bytes < 1 << 20:
        raise click.UsageError("--max-reply-bytes must be at least 1 MiB")
    if max_client_connections < 1 or client_idle_timeout < 0:
        raise click.UsageError("--max-client-connections must be >= 1, --client-idle-timeout >= 0")
    admission = AdmissionConfig(rate_limit_per_conn, rate_limit_per_node, burst)
    try:
        members = parse_initial_cluster(initial_cluster)
        split_addr(listen_client)
        split_addr(listen_peer)
        if etcd_listen:
            split_addr(etcd_listen)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    cfg = NodeConfig(
        name=name,
        data_dir=data_dir,
        client_addr=listen_client,
        peer_addr=listen_peer,
        initial_cluster=members,
        initial_cluster_state=ClusterState(initial_cluster_state),
        cluster_token=initial_cluster_token,
        cluster_id=_parse_cluster_id(cluster_id),
        tick_interval=tick_ms / 1000,
        election_tick=election_ticks,
        snapshot_count=snapshot_count,
        snapshot_catchup_entries=snapshot_catchup_entries,
        max_pending_proposals=max_pending_proposals,
        max_reply_bytes=max_reply_bytes,
        max_client_connections=max_client_connections,
        client_idle_timeout=client_idle_timeout,
        auto_compaction_mode=CompactionMode(auto_compaction_mode),
        auto_compaction_retention=auto_compaction_retention,
        fsm_factory=fsm_with_limits(
            Limits(
                max_txn_ops=max_txn_ops,
                max_request_bytes=max_request_bytes,
                max_value_bytes=max_value_bytes,
            )
        ),
    )
    import os

    from raftkv.server.node import UNSAFE_SWITCHES

    test_hooks = os.environ.get("RAFTKV_TEST_HOOKS") == "1"
    unsafe = frozenset(x for x in os.environ.get("RAFTKV_UNSAFE", "").split(",") if x)
    if unsafe:
        unknown = unsafe - UNSAFE_SWITCHES.keys()
        if unknown or not test_hooks:
            raise click.UsageError(
                f"RAFTKV_UNSAFE needs RAFTKV_TEST_HOOKS=1 and names from {sorted(UNSAFE_SWITCHES)}"
            )
        cfg.test = TestSwitches(unsafe=unsafe)
    try:
        cfg.validate()
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    _use_uvloop()
    try:
        asyncio.run(_serve(cfg, metrics_addr, test_hooks, admission, etcd_listen))
    except Exception as e:  # startup failures: one clear line, non-zero exit
        click.echo(f"Error: {type(e).__name__}: {e}", err=True)
        sys.exit(1)


def _use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()


async def _serve(
    cfg: object,
    metrics_addr: str | None,
    test_hooks: bool = False,
    admission: object = None,
    etcd_addr: str | None = None,
) -> None:
    from raftkv.server.admission import AdmissionConfig, AdmissionControl
    from raftkv.server.etcd.server import EtcdServer, start_etcd_server
    from raftkv.server.metrics import MetricsServer
    from raftkv.server.native import Server
    from raftkv.server.node import Node, NodeConfig, tcp_transport_factory

    assert isinstance(cfg, NodeConfig)
    node = await Node.start(cfg, tcp_transport_factory)
    limits = node.fsm.limits
    server = Server(
        node,
        cfg.client_addr,
        max_frame=max(4 << 20, limits.max_request_bytes + (64 << 10)),
        test_hooks=test_hooks,
        admission=(
            AdmissionControl(admission)
            if isinstance(admission, AdmissionConfig) and admission.enabled
            else None
        ),
    )
    if cfg.unsafe:
        log.warning("UNSAFE test switches enabled: %s", ",".join(sorted(cfg.unsafe)))
    metrics: MetricsServer | None = None
    etcd: EtcdServer | None = None
    try:
        await server.start()
        if etcd_addr:
            etcd = await start_etcd_server(
                node, server.service, etcd_addr, admission=server.admission
            )
        if metrics_addr:
            metrics = MetricsServer(node, metrics_addr)
            await metrics.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info(
            "member ready",
            extra={
                "member": cfg.name,
                "client": cfg.client_addr,
                "peer": cfg.peer_addr,
                "etcd": f"{etcd.host}:{etcd.port}" if etcd is not None else "",
            },
        )
        await stop.wait()
        log.info("shutting down")
    finally:
        if metrics is not None:
            await metrics.stop()
        if etcd is not None:
            await etcd.stop()
        await server.stop()
        await node.stop()


@click.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data-dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", required=True, help="The member this data dir will belong to.")
@click.option("--initial-cluster", required=True, metavar="n1=HOST:PORT,...")
@click.option("--initial-cluster-token", default="raftkv", show_default=True)
def snapshot_restore(
    file: Path, data_dir: Path, name: str, initial_cluster: str, initial_cluster_token: str
) -> None:
    """Create a member's data dir for a NEW cluster from a snapshot file.

    Run it once per member (same FILE and --initial-cluster), then start each member with
    'raftkv serve' and the same --initial-cluster.
    """
    from raftkv.protocol.methods import parse_initial_cluster
    from raftkv.server.maintenance import restore_snapshot

    try:
        members = parse_initial_cluster(initial_cluster)
        info = asyncio.run(restore_snapshot(file, data_dir, name, members, initial_cluster_token))
    except Exception as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)
    click.echo(
        f"restored {file} into {data_dir}: revision {info['revision']}, "
        f"index {info['index']}, {info['keys']} keys"
    )
