"""Key-value, watch, compaction and lease commands (etcdctl's verbs and flags)."""

from __future__ import annotations

import sys

import click

from raftkv.api import (
    ALL_KEYS,
    DeleteRangeResponse,
    EventType,
    KeyValue,
    RangeRequest,
    SortOrder,
    SortTarget,
)
from raftkv.client import WatchFilter, key_range

from .context import parse_id, settings
from .output import arg_bytes, echo_data, echo_json, hex_id, printable, table, text

_SORT_TARGETS = {
    "KEY": SortTarget.KEY,
    "VERSION": SortTarget.VERSION,
    "CREATE": SortTarget.CREATE,
    "MODIFY": SortTarget.MOD,
    "VALUE": SortTarget.VALUE,
}


def _kv_lines(kvs: tuple[KeyValue, ...], keys_only: bool = False, value_only: bool = False) -> None:
    for kv in kvs:
        if not value_only:
            echo_data(kv.key)
        if not keys_only:
            echo_data(kv.value)


def _range(key: str, range_end: str | None, prefix: bool, from_key: bool) -> tuple[bytes, bytes]:
    if sum([prefix, from_key, range_end is not None]) > 1:
        raise click.UsageError("use only one of RANGE_END, --prefix, --from-key")
    k = arg_bytes(key)
    if from_key:
        return key_range(k or b"\0", range_end=ALL_KEYS)
    end = None if range_end is None else arg_bytes(range_end)
    return key_range(k, prefix=prefix, range_end=end)


@click.command("put")
@click.argument("key")
@click.argument("value", required=False)
@click.option("--lease", default="0", help="Attach the key to this lease (hex id).")
@click.option("--prev-kv", is_flag=True, help="Print the previous key-value pair.")
@click.pass_context
def put(ctx: click.Context, key: str, value: str | None, lease: str, prev_kv: bool) -> None:
    """Put KEY = VALUE.  Without VALUE, the value is all of stdin, byte for byte (as
    etcdctl: ``raftkv put k < file``)."""
    s = settings(ctx)
    data = arg_bytes(value) if value is not None else sys.stdin.buffer.read()
    if value is None and not data:
        raise click.UsageError("put needs a VALUE argument or the value on stdin")
    with s.client() as c:
        resp = c.put(arg_bytes(key), data, lease=parse_id(lease), prev_kv=prev_kv)
    if s.write_out == "json":
        echo_json(resp)
        return
    click.echo("OK")
    if prev_kv and resp.prev_kv is not None:
        _kv_lines((resp.prev_kv,))


@click.command("get")
@click.argument("key")
@click.argument("range_end", required=False)
@click.option("--prefix", is_flag=True, help="Get every key with the prefix KEY.")
@click.option("--from-key", is_flag=True, help="Get every key >= KEY.")
@click.option("--rev", default=0, show_default=True, help="Read at this revision (0 = latest).")
@click.option(
    "--consistency",
    type=click.Choice(["l", "s"]),
    default="l",
    show_default=True,
    help="l = linearizable, s = serializable (local, maybe stale).",
)
@click.option("--keys-only", is_flag=True, help="Print keys only.")
@click.option("--print-value-only", is_flag=True, help="Print values only.")
@click.option("--count-only", is_flag=True, help="Print the number of keys only.")
@click.option("--limit", default=0, show_default=True, help="Maximum keys returned (0 = all).")
@click.option(
    "--order", type=click.Choice(["ASCEND", "DESCEND"], case_sensitive=False), default=None
)
@click.option(
    "--sort-by",
    type=click.Choice(list(_SORT_TARGETS), case_sensitive=False),
    default=None,
    help="Sort target (with --order; default KEY).",
)
@click.pass_context
def get(
    ctx: click.Context,
    key: str,
    range_end: str | None,
    prefix: bool,
    from_key: bool,
    rev: int,
    consistency: str,
    keys_only: bool,
    print_value_only: bool,
    count_only: bool,
    limit: int,
    order: str | None,
    sort_by: str | None,
) -> None:
    """Get KEY, or the range [KEY, RANGE_END)."""
    s = settings(ctx)
    k, end = _range(key, range_end, prefix, from_key)
    sort_order = SortOrder.NONE
    if order is not None:
        sort_order = SortOrder.ASCEND if order.upper() == "ASCEND" else SortOrder.DESCEND
    elif sort_by is not None:
        sort_order = SortOrder.ASCEND
    req = RangeRequest(
        k,
        end,
        limit=limit,
        revision=rev,
        sort_order=sort_order,
        sort_target=_SORT_TARGETS[(sort_by or "KEY").upper()],
        serializable=consistency == "s",
        keys_only=keys_only,
        count_only=count_only,
    )
    with s.client() as c:
        resp = c.range(req)
    if s.write_out == "json":
        echo_json(resp)
    elif count_only:
        click.echo(str(resp.count))
    elif s.write_out == "table":
        rows = [
            [printable(kv.key), printable(kv.value), kv.create_revision, kv.mod_revision,
             kv.version, hex_id(kv.lease) if kv.lease else ""]
            for kv in resp.kvs
        ]  # fmt: skip
        click.echo(table(["key", "value", "create rev", "mod rev", "version", "lease"], rows))
    else:
        _kv_lines(resp.kvs, keys_only=keys_only, value_only=print_value_only)


@click.command("del")
@click.argument("key")
@click.argument("range_end", required=False)
@click.option("--prefix", is_flag=True, help="Delete every key with the prefix KEY.")
@click.option("--from-key", is_flag=True, help="Delete every key >= KEY.")
@click.option("--prev-kv", is_flag=True, help="Print the deleted key-value pairs.")
@click.pass_context
def delete(
    ctx: click.Context,
    key: str,
    range_end: str | None,
    prefix: bool,
    from_key: bool,
    prev_kv: bool,
) -> None:
    """Delete KEY, or the range [KEY, RANGE_END)."""
    s = settings(ctx)
    k, end = _range(key, range_end, prefix, from_key)
    with s.client() as c:
        resp: DeleteRangeResponse = c.delete(k, range_end=end or None, prev_kv=prev_kv)
    if s.write_out == "json":
        echo_json(resp)
        return
    click.echo(str(resp.deleted))
    if prev_kv:
        _kv_lines(resp.prev_kvs)


@click.command("compact")
@click.argument("revision", type=int)
@click.option("--physical", is_flag=True, help="Wait until the compaction is physically done.")
@click.pass_context
def compact(ctx: click.Context, revision: int, physical: bool) -> None:
    """Drop the history below REVISION."""
    s = settings(ctx)
    with s.client() as c:
        resp = c.compact(revision, physical)
    if s.write_out == "json":
        echo_json(resp)
    else:
        click.echo(f"compacted revision {revision}")


@click.command("watch")
@click.argument("key")
@click.argument("range_end", required=False)
@click.option("--prefix", is_flag=True, help="Watch every key with the prefix KEY.")
@click.option("--rev", default=0, show_default=True, help="Start at this revision (0 = now).")
@click.option("--prev-kv", is_flag=True, help="Include the previous value of each change.")
@click.option("--no-put", is_flag=True, help="Leave out PUT events.")
@click.option("--no-delete", is_flag=True, help="Leave out DELETE events.")
@click.option(
    "--max-events",
    default=0,
    help="Exit after this many events (0 = run until Ctrl-C; not in etcdctl).",
)
@click.pass_context
def watch(
    ctx: click.Context,
    key: str,
    range_end: str | None,
    prefix: bool,
    rev: int,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    max_events: int,
) -> None:
    """Print every change of KEY (or the range) as it happens, until Ctrl-C."""
    s = settings(ctx)
    k, end = _range(key, range_end, prefix, False)
    filters = [
        f for f, on in ((WatchFilter.NOPUT, no_put), (WatchFilter.NODELETE, no_delete)) if on
    ]
    seen = 0
    with s.client() as c:
        w = c.watch(k, range_end=end or None, start_revision=rev, prev_kv=prev_kv, filters=filters)
        try:
            for resp in w:
                if s.write_out == "json":
                    echo_json(resp)
                else:
                    for ev in resp.events:
                        click.echo("PUT" if ev.type == EventType.PUT else "DELETE")
                        if prev_kv and ev.prev_kv is not None:
                            _kv_lines((ev.prev_kv,))
                        _kv_lines((ev.kv,))
                seen += len(resp.events)
                if max_events and seen >= max_events:
                    break
        finally:  # Ctrl-C: cancel the watch, then exit 130 (as etcdctl, killed by SIGINT)
            w.cancel()


# --- leases ----------------------------------------------------------------------------------


@click.group("lease")
def lease() -> None:
    """Grant, revoke, inspect and keep alive leases."""


@lease.command("grant")
@click.argument("ttl", type=int)
@click.pass_context
def lease_grant(ctx: click.Context, ttl: int) -> None:
    """Create a lease of TTL seconds (a positive number)."""
    if ttl <= 0:
        raise click.BadParameter(f"{ttl} is not a positive number of seconds", param_hint="'TTL'")
    s = settings(ctx)
    with s.client() as c:
        resp = c.lease_grant(ttl)
    if s.write_out == "json":
        echo_json(resp)
    else:
        click.echo(f"lease {hex_id(resp.id)} granted with TTL({resp.ttl}s)")


@lease.command("revoke")
@click.argument("lease_id")
@click.pass_context
def lease_revoke(ctx: click.Context, lease_id: str) -> None:
    """Revoke a lease (hex id) and delete its keys."""
    s = settings(ctx)
    lid = parse_id(lease_id)
    with s.client() as c:
        resp = c.lease_revoke(lid)
    if s.write_out == "json":
        echo_json(resp)
    else:
        click.echo(f"lease {hex_id(lid)} revoked")


@lease.command("timetolive")
@click.argument("lease_id")
@click.option("--keys", is_flag=True, help="List the keys attached to the lease.")
@click.pass_context
def lease_timetolive(ctx: click.Context, lease_id: str, keys: bool) -> None:
    """Show a lease's granted and remaining TTL."""
    s = settings(ctx)
    lid = parse_id(lease_id)
    with s.client() as c:
        resp = c.lease_time_to_live(lid, keys)
    if s.write_out == "json":
        echo_json(resp)
    elif resp.ttl < 0:
        click.echo(f"lease {hex_id(lid)} already expired")
    else:
        line = f"lease {hex_id(lid)} granted with TTL({resp.granted_ttl}s), remaining({resp.ttl}s)"
        if keys:
            line += f", attached keys([{' '.join(text(k) for k in resp.keys)}])"
        click.echo(line)


@lease.command("list")
@click.pass_context
def lease_list(ctx: click.Context) -> None:
    """List all leases."""
    s = settings(ctx)
    with s.client() as c:
        resp = c.lease_leases()
    if s.write_out == "json":
        echo_json(resp)
        return
    click.echo(f"found {len(resp.leases)} leases")
    for lid in resp.leases:
        click.echo(hex_id(lid))


@lease.command("keep-alive")
@click.argument("lease_id")
@click.option("--once", is_flag=True, help="Renew once and exit.")
@click.pass_context
def lease_keep_alive(ctx: click.Context, lease_id: str, once: bool) -> None:
    """Keep a lease alive (renews every TTL/3 until Ctrl-C)."""
    s = settings(ctx)
    lid = parse_id(lease_id)
    with s.client() as c:
        it = iter([c.lease_keep_alive_once(lid)]) if once else c.lease_keep_alive(lid)
        for resp in it:  # Ctrl-C ends it with status 130, as etcdctl (killed by SIGINT)
            if s.write_out == "json":
                echo_json(resp)
            else:
                click.echo(f"lease {hex_id(lid)} keepalived with TTL({resp.ttl})")
