"""The ``python -m jepsen_like`` command line: one click group, one function per command."""

from __future__ import annotations

from pathlib import Path
from typing import Final, cast

import click

from jepsen_like.checker.formats import FORMATS, HistoryFormatError, parse_edn, parse_jepsen_log
from jepsen_like.checker.linearizability import Operation, check, report
from jepsen_like.checker.models import (
    MODELS,
    CasRegister,
    KvInput,
    KvOutput,
    KvStore,
    RegisterInput,
    RegisterOutput,
)

EXIT_BAD_INPUT: Final = 3
"""A history that cannot be parsed, or does not fit the model (0/1/2 are verdicts)."""
EXIT_USAGE: Final = 64
"""Wrong flags or arguments (BSD EX_USAGE), kept apart from the verdict codes."""


@click.group()
def cli() -> None:
    """jepsen_like: fault-injection tests and their checkers for raftkv."""


@cli.command("check-history")
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True, help="File format.")
@click.option(
    "--model", "model_name", type=click.Choice(sorted(MODELS)), required=True, help="Model."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="Time budget in seconds; past it the answer is 'unknown' (exit 2).",
)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def check_history(fmt: str, model_name: str, timeout: float | None, file: Path) -> None:
    """Check that the history in FILE is linearizable.

    Prints 'linearizable' (exit 0), 'not linearizable' and where (exit 1), or 'unknown'
    when the time budget runs out (exit 2).  A malformed history exits 3.
    """
    with file.open(encoding="utf-8") as f:
        try:
            ops = list(parse_jepsen_log(f) if fmt == "jepsen-log" else parse_edn(f))
        except HistoryFormatError as e:
            raise click.ClickException(f"{file}: {e}") from e
    if model_name == CasRegister.name:
        _require(all(isinstance(op.input, RegisterInput) for op in ops), file, "use --model kv")
        reg = cast(list[Operation[RegisterInput, RegisterOutput]], ops)
        result = check(CasRegister(), reg, timeout)
        click.echo(report(CasRegister(), reg, result))
    else:
        _require(all(isinstance(op.input, KvInput) for op in ops), file, "use --model cas-register")
        kvs = cast(list[Operation[KvInput, KvOutput]], ops)
        result = check(KvStore(), kvs, timeout)
        click.echo(report(KvStore(), kvs, result))
    click.get_current_context().exit(int(result.verdict))


def _require(cond: bool, file: Path, hint: str) -> None:
    if not cond:
        raise click.ClickException(f"{file}: operations do not fit this model; {hint}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (usage errors: 64, bad input: 3)."""
    try:
        rv = cli.main(args=argv, prog_name="python -m jepsen_like", standalone_mode=False)
    except click.UsageError as e:
        e.show()
        return EXIT_USAGE
    except click.ClickException as e:
        e.show()
        return EXIT_BAD_INPUT
    except click.Abort:
        click.echo("Aborted!", err=True)
        return 1
    return rv if isinstance(rv, int) else 0


@cli.command("run")
@click.option(
    "--workload", "-w", required=True, help="register|set|append|watch|lease|lock|lock-unfenced"
)
@click.option(
    "--nemesis",
    "-n",
    default="none",
    show_default=True,
    help="Comma-separated: kill, pause, partition, slow, clock, member, crash-point, disk, "
    "snapshot, compact, garbage (hostile frames on the client and peer ports), e.g. "
    "kill,partition:leader.",
)
@click.option("--time", "time_", type=click.FloatRange(min=1), default=30, show_default=True)
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True)
@click.option("--clients", type=click.IntRange(1, 200), default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run directory.")
@click.option("--unsafe", default="", help="RAFTKV_UNSAFE switches (prove the checks can fail).")
@click.option("--snapshot-count", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Operations per second over all clients (default: as fast as they go).",
)
def run_cmd(
    workload: str,
    nemesis: str,
    time_: float,
    nodes: int,
    clients: int,
    seed: int,
    out: str | None,
    unsafe: str,
    snapshot_count: int,
    rate: float | None,
) -> None:
    """Run a fault-injection test against a fresh real cluster and check it.

    Exit 0 only when every checker passes; details go to the run directory.
    """
    from jepsen_like.nemesis import parse
    from jepsen_like.runner import RunOptions, main_run
    from jepsen_like.workloads import WORKLOADS

    if workload not in WORKLOADS:
        raise click.UsageError(f"unknown workload {workload!r}: {', '.join(WORKLOADS)}")
    try:
        parse(nemesis)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    opts = RunOptions(
        workload=workload,
        nemesis=nemesis,
        time=time_,
        nodes=nodes,
        clients=clients,
        seed=seed,
        out=out or f"jepsen-out/{workload}-{seed}",
        unsafe=unsafe,
        snapshot_count=snapshot_count,
        rate=rate,
    )
    click.get_current_context().exit(main_run(opts))


@cli.command("check")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def check_cmd(directory: Path) -> None:
    """Re-check a stored run directory (history.jsonl + run.json); exit 0 if valid."""
    from jepsen_like.runner import check_dir

    if not (directory / "run.json").exists():
        raise click.ClickException(f"{directory}: no run.json (not a run directory)")
    res = check_dir(directory)
    click.echo(res.summary)
    click.get_current_context().exit(0 if res.valid is True else 1)
