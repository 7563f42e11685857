"""The ``raftkv`` command line: etcdctl's verbs and flags, plus ``serve`` and ``cluster``.

Global options (before the command): ``--endpoints`` (or ``RAFTKV_ENDPOINTS``),
``-w/--write-out simple|json|table``, ``--dial-timeout``, ``--command-timeout``.  Any raftkv
error ends the command with ``Error: ...`` on stderr and exit status 1.  See docs/cli.md.
"""

from __future__ import annotations

from typing import Any

import click

from cli import admin, kv
from cli.benchmark import benchmark
from cli.cluster import cluster
from cli.context import DEFAULT_ENDPOINTS, Duration, Settings, split_endpoints
from cli.output import FORMATS
from cli.txn import txn
from raftkv.errors import RaftKVError


class _Group(click.Group):
    """Turns a raftkv error anywhere below into one line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RaftKVError as e:
            raise click.ClickException(f"{type(e).__name__}: {e}") from None
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None


@click.group(cls=_Group)
@click.version_option(package_name="raftkv")
@click.option(
    "--endpoints",
    envvar="RAFTKV_ENDPOINTS",
    default=DEFAULT_ENDPOINTS,
    show_default=True,
    metavar="HOST:PORT,...",
    help="Client addresses of members (env RAFTKV_ENDPOINTS).",
)
@click.option(
    "-w",
    "--write-out",
    type=click.Choice(FORMATS),
    default="simple",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--dial-timeout", type=Duration(), default="2s", show_default=True, help="Per connection."
)
@click.option(
    "--command-timeout",
    type=Duration(),
    default="5s",
    show_default=True,
    help="Per command, retries included.",
)
@click.pass_context
def cli(
    ctx: click.Context,
    endpoints: str,
    write_out: str,
    dial_timeout: float,
    command_timeout: float,
) -> None:
    """raftkv: an etcd-like, Raft-replicated key-value store."""
    ctx.obj = Settings(split_endpoints(endpoints), write_out, dial_timeout, command_timeout)


for _cmd in (
    kv.put,
    kv.get,
    kv.delete,
    txn,
    kv.compact,
    kv.watch,
    kv.lease,
    admin.member,
    admin.move_leader,
    admin.endpoint,
    admin.snapshot,
    cluster,
    benchmark,
):
    cli.add_command(_cmd)

try:  # 'raftkv serve' and 'snapshot restore' live in cli/serve.py (the server side)
    from cli.serve import serve as _serve
    from cli.serve import snapshot_restore as _snapshot_restore
except ImportError:  # pragma: no cover - before the server lands
    pass
else:
    cli.add_command(_serve)
    admin.snapshot.add_command(_snapshot_restore)

try:  # more benchmarks and 'check perf' (cli/bench.py)
    from cli.bench import register as _register_bench
except ImportError:  # pragma: no cover
    pass
else:
    _register_bench(cli)

from cli.recipes import register as _register_recipes  # noqa: E402 - lock, elect, service

_register_recipes(cli)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
