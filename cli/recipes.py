"""``raftkv lock``, ``raftkv elect`` and ``raftkv service``: the coordination recipes
(:mod:`raftkv.recipes`) from the shell, as etcdctl's ``lock`` and ``elect``.

Each command holds something (a lock, a candidacy, a registration) for as long as it runs, on a
session lease renewed in the background; SIGINT or SIGTERM releases it before exiting (status
130 / 143), and if the process is killed outright the lease expires after ``--ttl`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

import click

from raftkv.api import EventType
from raftkv.client import Client
from raftkv.errors import InvalidArgument
from raftkv.recipes import Election, Mutex, ServiceRegistry, Session, observe
from raftkv.recipes.registry import ServiceInstance, service_prefix

from .context import Duration, Settings, settings
from .output import arg_bytes, echo_data, text


def _client(s: Settings) -> Client:
    return Client(list(s.endpoints), dial_timeout=s.dial_timeout, command_timeout=s.command_timeout)


def _run(coro: Coroutine[Any, Any, int]) -> None:
    """Run ``coro``; SIGINT/SIGTERM cancel it (so its ``finally`` releases what it holds)
    and exit with 128 + the signal number."""
    got: list[int] = []

    async def main() -> int:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):

            def stop(sig: int = sig) -> None:
                got.append(sig)
                task.cancel()

            loop.add_signal_handler(sig, stop)
        try:
            return await task
        except asyncio.CancelledError:
            if got:
                return 128 + got[0]
            raise

    code = asyncio.run(main())
    sys.stdout.flush()
    if code:
        raise click.exceptions.Exit(code)


# --- lock --------------------------------------------------------------------------------


@click.command("lock", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--ttl", default=10, show_default=True, help="Session lease TTL in seconds.")
@click.option("--timeout", type=Duration(), default=None, help="Give up acquiring after this.")
@click.pass_context
def lock(
    ctx: click.Context, name: str, command: tuple[str, ...], ttl: int, timeout: float | None
) -> None:
    """Acquire the lock NAME, then run COMMAND (after ``--``) holding it and release it when
    COMMAND exits; COMMAND sees RAFTKV_LOCK_KEY and RAFTKV_LOCK_FENCE (the fencing token).
    Without COMMAND, print the lock key and hold the lock until interrupted."""
    _run(_lock(settings(ctx), name, command, ttl, timeout))


async def _lock(
    s: Settings, name: str, command: tuple[str, ...], ttl: int, timeout: float | None
) -> int:
    async with _client(s) as c, Session(c, ttl) as session:
        m = Mutex(session, arg_bytes(name))
        await m.acquire(timeout)
        try:
            if not command:
                click.echo(text(m.key))
                sys.stdout.flush()
                await m.lost_event.wait()
                click.echo("Error: lock lost (session expired)", err=True)
                return 1
            env = {
                **os.environ,
                "RAFTKV_LOCK_KEY": text(m.key),
                "RAFTKV_LOCK_FENCE": str(m.fencing_token),
                "RAFTKV_ENDPOINTS": ",".join(s.endpoints),
            }
            proc = await asyncio.create_subprocess_exec(*command, env=env)
            try:
                return await _wait_child(proc, m.lost_event)
            finally:
                if proc.returncode is None:
                    proc.terminate()
                    with contextlib.suppress(ProcessLookupError):
                        await proc.wait()
        finally:
            with contextlib.suppress(Exception):
                await m.release()


async def _wait_child(proc: asyncio.subprocess.Process, lost: asyncio.Event) -> int:
    child = asyncio.ensure_future(proc.wait())
    lost_w = asyncio.ensure_future(lost.wait())
    try:
        await asyncio.wait((child, lost_w), return_when=asyncio.FIRST_COMPLETED)
    finally:
        lost_w.cancel()
    if child.done():
        return child.result()
    child.cancel()
    click.echo("Error: lock lost (session expired); terminating the command", err=True)
    return 1


# --- elect -------------------------------------------------------------------------------


@click.command("elect")
@click.argument("name")
@click.argument("proposal", required=False)
@click.option("-l", "--listen", is_flag=True, help="Print each leader change, do not campaign.")
@click.option("--ttl", default=10, show_default=True, help="Session lease TTL in seconds.")
@click.option(
    "--max-events", default=0, help="With --listen: exit after this many (0 = until Ctrl-C)."
)
@click.pass_context
def elect(
    ctx: click.Context,
    name: str,
    proposal: str | None,
    listen: bool,
    ttl: int,
    max_events: int,
) -> None:
    """Campaign in election NAME with PROPOSAL; once leader, print it and hold leadership
    until interrupted.  With --listen, print the leader's value each time it changes."""
    s = settings(ctx)
    if listen:
        _run(_listen(s, name, max_events))
    elif proposal is None:
        raise click.UsageError("PROPOSAL is required unless --listen is given")
    else:
        _run(_campaign(s, name, proposal, ttl))


def _leader_line(s: Settings, key: bytes, value: bytes, revision: int) -> None:
    if s.write_out == "json":
        click.echo(json.dumps({"key": text(key), "value": text(value), "revision": revision}))
    else:
        echo_data(value)
    sys.stdout.flush()


async def _listen(s: Settings, name: str, max_events: int) -> int:
    seen = 0
    async with _client(s) as c:
        async for ldr in observe(c, arg_bytes(name)):
            _leader_line(s, ldr.key, ldr.value, ldr.revision)
            seen += 1
            if max_events and seen >= max_events:
                break
    return 0


async def _campaign(s: Settings, name: str, proposal: str, ttl: int) -> int:
    async with _client(s) as c, Session(c, ttl) as session:
        e = Election(session, arg_bytes(name))
        await e.campaign(arg_bytes(proposal))
        try:
            assert e.key is not None
            _leader_line(s, e.key, arg_bytes(proposal), e.revision)
            await session.done.wait()
            click.echo("Error: leadership lost (session expired)", err=True)
            return 1
        finally:
            with contextlib.suppress(Exception):
                await e.resign()


# --- service -----------------------------------------------------------------------------


@click.group("service")
def service() -> None:
    """Register, list and watch service instances (keys /services/NAME/ID)."""


def _parse_meta(items: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k:
            raise click.BadParameter(f"{it!r} is not K=V", param_hint="--meta")
        out[k] = v
    return out


def _instance_line(s: Settings, inst: ServiceInstance) -> str:
    if s.write_out == "json":
        return json.dumps(
            {"id": inst.id, "address": inst.address, "metadata": dict(inst.metadata)},
            sort_keys=True,
        )
    meta = ",".join(f"{k}={v}" for k, v in sorted(inst.metadata.items()))
    return f"{inst.id} {inst.address}" + (f" {meta}" if meta else "")


@service.command("register")
@click.argument("name")
@click.argument("address")
@click.option("--ttl", default=10, show_default=True, help="Lease TTL in seconds.")
@click.option("--meta", multiple=True, metavar="K=V", help="Metadata (repeatable).")
@click.option("--id", "instance_id", default=None, help="Instance id (default: random).")
@click.pass_context
def service_register(
    ctx: click.Context,
    name: str,
    address: str,
    ttl: int,
    meta: tuple[str, ...],
    instance_id: str | None,
) -> None:
    """Register ADDRESS as an instance of NAME and stay in the foreground keeping it alive;
    deregister on Ctrl-C / SIGTERM."""
    _run(_register(settings(ctx), name, address, ttl, _parse_meta(meta), instance_id))


async def _register(
    s: Settings,
    name: str,
    address: str,
    ttl: int,
    meta: dict[str, str],
    instance_id: str | None,
) -> int:
    async with _client(s) as c:
        inst = await ServiceRegistry(c).register(name, address, meta, ttl, instance_id)
        try:
            click.echo(_instance_line(s, inst.info))
            sys.stdout.flush()
            await inst.session.done.wait()
            click.echo("Error: registration lost (lease expired)", err=True)
            return 1
        finally:
            with contextlib.suppress(Exception):
                await inst.close()


@service.command("list")
@click.argument("name")
@click.pass_context
def service_list(ctx: click.Context, name: str) -> None:
    """Print the instances of NAME, one a line (``-w json``: one JSON object a line)."""
    s = settings(ctx)

    async def go() -> int:
        async with _client(s) as c:
            for inst in await ServiceRegistry(c).list(name):
                click.echo(_instance_line(s, inst))
        return 0

    _run(go())


@service.command("watch")
@click.argument("name")
@click.option("--max-events", default=0, help="Exit after this many changes (0 = until Ctrl-C).")
@click.pass_context
def service_watch(ctx: click.Context, name: str, max_events: int) -> None:
    """Print the current instances of NAME (``+ ID ADDRESS``), then each change as it
    happens (``+`` registered or updated, ``- ID`` gone)."""
    s = settings(ctx)
    _run(_service_watch(s, name, max_events))


async def _service_watch(s: Settings, name: str, max_events: int) -> int:
    try:
        pfx = service_prefix(name)
    except InvalidArgument as e:
        raise click.BadParameter(str(e)) from None
    async with _client(s) as c:
        resp = await c.get(pfx, prefix=True)
        for kv in resp.kvs:
            click.echo("+ " + _instance_line(s, ServiceInstance.from_kv(name, kv)))
        sys.stdout.flush()
        seen = 0
        async with c.watch(pfx, prefix=True, start_revision=resp.header.revision + 1) as w:
            async for wr in w:
                for ev in wr.events:
                    if ev.type == EventType.PUT:
                        line = "+ " + _instance_line(s, ServiceInstance.from_kv(name, ev.kv))
                    else:
                        line = "- " + text(ev.kv.key[len(pfx) :])
                    click.echo(line)
                    seen += 1
                sys.stdout.flush()
                if max_events and seen >= max_events:
                    return 0
    return 0


def register(group: click.Group) -> None:
    """Add ``lock``, ``elect`` and ``service`` to the ``raftkv`` group."""
    for cmd in (lock, elect, service):
        group.add_command(cmd)
