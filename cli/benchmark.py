"""``raftkv benchmark``: throughput and latency measurements."""

from __future__ import annotations

import click


@click.group()
def benchmark() -> None:
    """Measure throughput and latency (results belong in docs/performance.md)."""


@benchmark.command("core")
@click.option("--total", default=200_000, show_default=True, help="Proposals to commit.")
@click.option("--batch", default=1_000, show_default=True, help="Proposals per Ready cycle.")
@click.option("--nodes", default=3, show_default=True, help="Cluster size.")
@click.option("--val-size", default=64, show_default=True, help="Bytes per proposal.")
def benchmark_core(total: int, batch: int, nodes: int, val_size: int) -> None:
    """Commit proposals through a NODES-node in-memory cluster of bare Raft cores."""
    from raftkv.bench.core import run_core_benchmark

    r = run_core_benchmark(total=total, batch=batch, nodes=nodes, value_size=val_size)
    click.echo(
        f"core: {r.proposals} proposals, batch {r.batch}, {r.nodes} nodes, "
        f"{r.seconds:.3f} s, {r.per_second:,.0f} proposals/s committed and applied on all nodes"
    )
