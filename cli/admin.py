"""Cluster and maintenance commands: member, move-leader, endpoint, snapshot, alarm, defrag."""

from __future__ import annotations

from collections.abc import Iterable

import click

from raftkv.api import AlarmMember
from raftkv.client import EndpointHealth, EndpointStatus, Member
from raftkv.client.sync import SyncClient
from raftkv.errors import RaftKVError

from .context import parse_id, settings
from .output import echo_json, hex_id, human_size, table


def _member_row(m: Member) -> list[str]:
    return [
        hex_id(m.id),
        "started" if m.client_addr else "unstarted",
        m.name,
        m.peer_addr,
        m.client_addr,
        str(m.is_learner).lower(),
    ]


_MEMBER_HEADERS = ["id", "status", "name", "peer addrs", "client addrs", "is learner"]


@click.group("member")
def member() -> None:
    """List, add, remove and promote cluster members."""


@member.command("list")
@click.pass_context
def member_list(ctx: click.Context) -> None:
    """List the members (ids in hex, as etcdctl)."""
    s = settings(ctx)
    with s.client() as c:
        members = c.member_list()
    if s.write_out == "json":
        echo_json({"members": members})
    elif s.write_out == "table":
        click.echo(table(_MEMBER_HEADERS, [_member_row(m) for m in members]))
    else:
        for m in members:
            click.echo(", ".join(_member_row(m)))


@member.command("add")
@click.argument("name")
@click.option(
    "--peer-addr", required=True, metavar="HOST:PORT", help="The new member's peer address."
)
@click.option("--client-addr", default="", metavar="HOST:PORT", help="Its client address.")
@click.option("--learner", is_flag=True, help="Add as a non-voting learner (promote later).")
@click.pass_context
def member_add(
    ctx: click.Context, name: str, peer_addr: str, client_addr: str, learner: bool
) -> None:
    """Add member NAME; then start it with the printed 'raftkv serve' command."""
    s = settings(ctx)
    with s.client() as c:
        resp = c.member_add(name, peer_addr, client_addr, learner)
    if s.write_out == "json":
        echo_json(resp)
        return
    kind = "learner" if learner else "member"
    click.echo(
        f"Member {hex_id(resp.member.id)} added to cluster {hex_id(resp.cluster_id)} as a {kind}"
    )
    initial = ",".join(f"{m.name}={m.peer_addr}" for m in resp.members if m.name)
    click.echo("")
    click.echo("Start it with:")
    click.echo(
        f"raftkv serve --name {name} --data-dir ./{name} --listen-peer {peer_addr} "
        f"--listen-client {client_addr or 'HOST:PORT'} --initial-cluster {initial} "
        f"--initial-cluster-state existing --cluster-id {hex_id(resp.cluster_id)}"
    )


@member.command("remove")
@click.argument("member_id")
@click.pass_context
def member_remove(ctx: click.Context, member_id: str) -> None:
    """Remove a member (hex id)."""
    s = settings(ctx)
    mid = parse_id(member_id)
    with s.client() as c:
        members = c.member_remove(mid)
    if s.write_out == "json":
        echo_json({"members": members})
    else:
        click.echo(f"Member {hex_id(mid)} removed from cluster")


@member.command("promote")
@click.argument("member_id")
@click.pass_context
def member_promote(ctx: click.Context, member_id: str) -> None:
    """Promote a learner (hex id) to a voting member."""
    s = settings(ctx)
    mid = parse_id(member_id)
    with s.client() as c:
        members = c.member_promote(mid)
    if s.write_out == "json":
        echo_json({"members": members})
    else:
        click.echo(f"Member {hex_id(mid)} promoted in cluster")


@member.command("update")
@click.argument("member_id")
@click.option(
    "--peer-addr", required=True, metavar="HOST:PORT", help="The member's new peer address."
)
@click.pass_context
def member_update(ctx: click.Context, member_id: str, peer_addr: str) -> None:
    """Change a member's (hex id) advertised peer address."""
    s = settings(ctx)
    mid = parse_id(member_id)
    with s.client() as c:
        members = c.member_update(mid, peer_addr)
    if s.write_out == "json":
        echo_json({"members": members})
    else:
        click.echo(f"Member {hex_id(mid)} updated in cluster")


@click.command("move-leader")
@click.argument("member_id")
@click.pass_context
def move_leader(ctx: click.Context, member_id: str) -> None:
    """Transfer leadership to a member (hex id)."""
    s = settings(ctx)
    target = parse_id(member_id)
    with s.client() as c:
        leader = c.move_leader(target)
    if s.write_out == "json":
        echo_json({"leader": leader})
    else:
        click.echo(f"Leadership transferred to {hex_id(leader)}")


# --- endpoint ----------------------------------------------------------------------------------


@click.group("endpoint")
def endpoint() -> None:
    """Status and health of each endpoint."""


def _targets(c: SyncClient, cluster: bool) -> list[str]:
    if not cluster:
        return list(c.endpoints)
    return [m.client_addr for m in c.member_list() if m.client_addr]


_STATUS_HEADERS = [
    "endpoint",
    "id",
    "version",
    "db size",
    "is leader",
    "is learner",
    "raft term",
    "raft index",
    "raft applied index",
    "revision",
    "hash",
]


def _status_row(st: EndpointStatus) -> list[str]:
    return [
        st.endpoint,
        hex_id(st.id),
        st.version,
        human_size(st.db_size),
        str(st.is_leader).lower(),
        str(st.is_learner).lower(),
        str(st.term),
        str(st.raft_index),
        str(st.raft_applied_index),
        str(st.revision),
        str(st.hash),
    ]


@endpoint.command("status")
@click.option("--cluster", is_flag=True, help="Every member's endpoint, from 'member list'.")
@click.pass_context
def endpoint_status(ctx: click.Context, cluster: bool) -> None:
    """Print the status of each endpoint."""
    s = settings(ctx)
    statuses: list[EndpointStatus] = []
    failed: list[str] = []
    with s.client() as c:
        for ep in _targets(c, cluster):
            try:
                statuses.append(c.status(ep, hash=True))
            except RaftKVError as e:
                failed.append(ep)
                click.echo(f"Failed to get the status of endpoint {ep} ({e})", err=True)
    if s.write_out == "json":
        echo_json(statuses)
    elif s.write_out == "table":
        click.echo(table(_STATUS_HEADERS, [_status_row(st) for st in statuses]))
    else:
        for st in statuses:
            click.echo(", ".join(_status_row(st)))
    if failed:
        raise click.ClickException(f"{len(failed)} endpoint(s) did not answer")


def _health_line(h: EndpointHealth) -> str:
    took = f"{h.took * 1000:.3f}ms"
    if h.health:
        return f"{h.endpoint} is healthy: successfully committed proposal: took = {took}"
    return f"{h.endpoint} is unhealthy: failed to commit proposal: {h.reason}"


@endpoint.command("health")
@click.option("--cluster", is_flag=True, help="Every member's endpoint, from 'member list'.")
@click.pass_context
def endpoint_health(ctx: click.Context, cluster: bool) -> None:
    """Check that each endpoint has a leader and serves a linearizable read."""
    s = settings(ctx)
    with s.client() as c:
        results = [c.health(ep) for ep in _targets(c, cluster)]
    if s.write_out == "json":
        echo_json(results)
    elif s.write_out == "table":
        rows = [
            [h.endpoint, str(h.health).lower(), f"{h.took * 1000:.3f}ms", h.reason] for h in results
        ]
        click.echo(table(["endpoint", "health", "took", "error"], rows))
    else:
        for h in results:
            click.echo(_health_line(h), err=not h.health)
    if not all(h.health for h in results):
        raise click.ClickException("unhealthy cluster")


# --- snapshot ----------------------------------------------------------------------------------


@click.group("snapshot")
def snapshot() -> None:
    """Save a snapshot of a member's state (restore: see 'raftkv snapshot restore')."""


@snapshot.command("save")
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_context
def snapshot_save(ctx: click.Context, file: str) -> None:
    """Stream a snapshot from the first endpoint into FILE (checksum verified)."""
    s = settings(ctx)
    with s.client() as c:
        info = c.snapshot_save(file, timeout=max(s.command_timeout, 60.0))
    if s.write_out == "json":
        echo_json(info)
    else:
        click.echo(
            f"Snapshot saved at {info.path} ({human_size(info.size)}, revision {info.revision}, "
            f"sha256 {info.sha256})"
        )


# --- alarms and defragmentation ------------------------------------------------------------------


@click.group("alarm")
def alarm() -> None:
    """Alarms the members raised (CORRUPT: a member lost state or its storage failed)."""


def _alarm_lines(alarms: Iterable[AlarmMember]) -> list[str]:
    return [f"memberID:{hex_id(a.member_id)} alarm:{a.alarm.name}" for a in alarms]


@alarm.command("list")
@click.option("--cluster", is_flag=True, help="Ask every member, from 'member list'.")
@click.pass_context
def alarm_list(ctx: click.Context, cluster: bool) -> None:
    """List the alarms of each endpoint."""
    s = settings(ctx)
    found: list[AlarmMember] = []
    with s.client() as c:
        for ep in _targets(c, cluster):
            found.extend(c.alarm_list(ep))
    if s.write_out == "json":
        echo_json({"alarms": found})
    else:
        for line in _alarm_lines(found):
            click.echo(line)


@alarm.command("disarm")
@click.option("--cluster", is_flag=True, help="Every member, from 'member list'.")
@click.pass_context
def alarm_disarm(ctx: click.Context, cluster: bool) -> None:
    """Clear the alarms of each endpoint (a CORRUPT alarm is refused: replace the member)."""
    s = settings(ctx)
    cleared: list[AlarmMember] = []
    with s.client() as c:
        for ep in _targets(c, cluster):
            cleared.extend(c.alarm_disarm(ep))
    if s.write_out == "json":
        echo_json({"alarms": cleared})
    else:
        for line in _alarm_lines(cleared):
            click.echo(line)


@click.command("defrag")
@click.option("--cluster", is_flag=True, help="Every member, from 'member list'.")
@click.pass_context
def defrag(ctx: click.Context, cluster: bool) -> None:
    """Give each endpoint's free store pages back to the file system (after a compaction)."""
    s = settings(ctx)
    failed = 0
    with s.client() as c:
        for ep in _targets(c, cluster):
            try:
                r = c.defragment(ep)
            except RaftKVError as e:
                failed += 1
                click.echo(f"Failed to defragment member[{ep}] ({e})", err=True)
                continue
            if s.write_out == "json":
                echo_json(
                    {"endpoint": ep, "size_before": r.size_before, "size_after": r.size_after}
                )
            else:
                click.echo(
                    f"Finished defragmenting member[{ep}] ({r.size_before} -> {r.size_after} bytes)"
                )
    if failed:
        raise click.ClickException(f"{failed} endpoint(s) were not defragmented")
