"""The ``raftkv`` command line: etcdctl's verbs and flags, plus ``serve`` and ``cluster``.

Global options, before or after the command as etcdctl's: ``--endpoints`` (or
``RAFTKV_ENDPOINTS``), ``-w/--write-out simple|json|table``, ``--hex``, ``--dial-timeout``,
``--command-timeout``.  Any raftkv error ends the command with ``Error: ...`` on stderr and
exit status 1.  See docs/cli.md.
"""

from __future__ import annotations

from typing import Any

import click

from raftkv.errors import RaftKVError

from . import admin, kv
from .argv import hoist_global_options
from .bench import register as register_bench
from .benchmark import benchmark
from .cluster import cluster
from .context import DEFAULT_ENDPOINTS, Duration, Settings, split_endpoints
from .errors import describe
from .output import FORMATS
from .recipes import register as register_recipes
from .serve import serve, snapshot_restore
from .txn import txn


class _Group(click.Group):
    """Takes the global options after the command too (as etcdctl); turns a raftkv error
    anywhere below into one line and exit status 1."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:
            args = hoist_global_options(self, args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RaftKVError as e:
            raise click.ClickException(describe(e)) from None
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
    "--hex", "hex_out", is_flag=True, help="Print keys and values as hex escapes (\\x66...)."
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
    hex_out: bool,
    dial_timeout: float,
    command_timeout: float,
) -> None:
    """raftkv: an etcd-like, Raft-replicated key-value store."""
    ctx.obj = Settings(
        split_endpoints(endpoints), write_out, dial_timeout, command_timeout, hex=hex_out
    )


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
    admin.alarm,
    admin.defrag,
    cluster,
    benchmark,
):
    cli.add_command(_cmd)

cli.add_command(serve)
admin.snapshot.add_command(snapshot_restore)
register_bench(cli)  # benchmark put|range|txn|failover|... and check perf
register_recipes(cli)  # lock, elect, service


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
