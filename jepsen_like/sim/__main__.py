"""``python -m jepsen_like.sim``: run many seeds, or replay one, and report violations.

Prints exactly one summary line ``N seeds, V violations``; on a violation it also prints
the first failing seed and the last events before it, and exits 1.
"""

from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import click

from jepsen_like.sim.cluster import RunResult, run
from raftkv.raft.config import MUTATIONS


def run_seeds(
    seeds: range | list[int],
    steps: int,
    nodes: int | None = None,
    mutation: str | None = None,
    stop_at_first: bool = False,
    bootstrap_snapshot: bool = True,
) -> tuple[int, list[RunResult]]:
    """Run each seed; returns (seeds run, failing results in seed order)."""
    failed: list[RunResult] = []
    count = 0
    for seed in seeds:
        count += 1
        res = run(seed, steps, nodes, mutation, bootstrap_snapshot=bootstrap_snapshot)
        if res.violation is not None:
            failed.append(res)
            if stop_at_first:
                break
    return count, failed


def _one(
    seed: int, steps: int, nodes: int | None, mutation: str | None, bootstrap_snapshot: bool
) -> RunResult | None:
    res = run(seed, steps, nodes, mutation, bootstrap_snapshot=bootstrap_snapshot)
    return res if res.violation is not None else None


def run_seeds_parallel(
    seeds: range | list[int],
    steps: int,
    jobs: int,
    nodes: int | None = None,
    mutation: str | None = None,
    bootstrap_snapshot: bool = True,
) -> tuple[int, list[RunResult]]:
    """:func:`run_seeds` over ``jobs`` processes; same results, in seed order."""
    fn = partial(
        _one, steps=steps, nodes=nodes, mutation=mutation, bootstrap_snapshot=bootstrap_snapshot
    )
    with ProcessPoolExecutor(jobs) as pool:
        results = list(pool.map(fn, seeds, chunksize=16))
    return len(results), [r for r in results if r is not None]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--seeds",
    "n_seeds",
    type=int,
    default=100,
    show_default=True,
    help="How many seeds to run (seeds 0..N-1, or from --first).",
)
@click.option("--first", type=int, default=0, show_default=True, help="First seed.")
@click.option("--steps", type=int, default=300, show_default=True, help="Steps (ticks) per seed.")
@click.option(
    "--nodes",
    type=click.IntRange(1, 9),
    default=None,
    help="Cluster size; default rotates 3/5/7 by seed.",
)
@click.option("--seed", "one_seed", type=int, default=None, help="Replay this one seed.")
@click.option(
    "--mutation",
    default=None,
    help="Enable a test-only bug in every node; 'list' prints the names.",
)
@click.option("--stop/--no-stop", default=False, help="Stop at the first violation.")
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes to spread the seeds over (same results; ignored with --stop).",
)
@click.option(
    "--bootstrap",
    type=click.Choice(["snapshot", "conf"]),
    default="snapshot",
    show_default=True,
    help="Initial members start from a snapshot holding the config, or from the bare "
    "MemoryStorage(ConfState(voters)) (exposes core bug sim-2).",
)
@click.option(
    "--trace",
    "trace_len",
    type=int,
    default=30,
    show_default=True,
    help="Events of the failing run to print.",
)
def main(
    n_seeds: int,
    first: int,
    steps: int,
    nodes: int | None,
    one_seed: int | None,
    mutation: str | None,
    stop: bool,
    jobs: int,
    bootstrap: str,
    trace_len: int,
) -> None:
    """Deterministic simulation of a raftkv cluster under faults."""
    if mutation == "list":
        for name in sorted(MUTATIONS):
            click.echo(name)
        return
    if mutation is not None and mutation not in MUTATIONS:
        raise click.BadParameter(f"unknown mutation {mutation!r}", param_hint="--mutation")
    seeds: range | list[int] = [one_seed] if one_seed is not None else range(first, first + n_seeds)
    boot = bootstrap == "snapshot"
    if jobs > 1 and not stop and len(seeds) > 1:
        count, failed = run_seeds_parallel(seeds, steps, jobs, nodes, mutation, boot)
    else:
        count, failed = run_seeds(seeds, steps, nodes, mutation, stop, boot)
    click.echo(f"{count} seeds, {len(failed)} violations")
    if failed:
        res = failed[0]
        click.echo(f"first failing seed: {res.seed} (nodes={res.nodes}, steps={res.steps})")
        click.echo(f"violation: {res.violation}")
        click.echo(
            f"replay: python -m jepsen_like.sim --seed {res.seed} --steps {res.steps}"
            + (f" --nodes {nodes}" if nodes else "")
            + (f" --mutation {mutation}" if mutation else "")
            + (f" --bootstrap {bootstrap}" if bootstrap != "snapshot" else "")
        )
        click.echo(f"setup: {res.events[0].split('] ', 1)[1]}")
        for line in res.trace(trace_len):
            click.echo("  " + line)
        sys.exit(1)


if __name__ == "__main__":
    main()
