"""One client of the ``lock`` / ``lock-unfenced`` workload as its own OS process.

The runner spawns one per client (``LockWorkload.client``) so that the ``pause`` nemesis can
SIGSTOP a lock *holder*, which a task inside the runner can never be::

    python -m jepsen_like.workloads.lock_worker --endpoints A,B,C --process P --clients N \\
        --fenced|--unfenced --t0-ns T0 [--rate R]

It runs the workload's loop (a session of TTL 2 s, the mutex, :func:`~jepsen_like.workloads.
lock.incr`) and writes one JSON line per history event to stdout, flushed at once, timed as
``time.monotonic_ns() - T0``: CLOCK_MONOTONIC is system-wide on Linux, so the times compare
with the runner's ``Recorder.t0``.  ``{"marker": "holding"}`` / ``{"marker": "released"}``
lines say when it holds the lock (the nemesis pauses the holder).  After an ``info`` it takes
process number ``P + N`` (Jepsen's numbering).  With the runner's ``--rate``, each worker
paces its share (``rate / clients``).

Its stdin is its lifeline: at EOF (the runner closed it, or died) it finishes the operation
in flight, revokes its session and exits.  On Linux it also asks for SIGKILL when its parent
dies (``PR_SET_PDEATHSIG``), which reaches it even while it is SIGSTOPped.  Diagnostics go to
stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
from functools import partial
from typing import Any

import click

import raftkv
from jepsen_like.workloads.base import Event, Recorder
from jepsen_like.workloads.lock import PREFIX, TTL, incr
from raftkv.errors import LockLost
from raftkv.recipes import Mutex, Session

COUNTER: str = "jl/counter"
HOLDING: dict[str, str] = {"marker": "holding"}
RELEASED: dict[str, str] = {"marker": "released"}


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (a stopped worker cannot read EOF)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def emit(obj: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed (the runner reads it as it comes)."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def on_hold(held: bool) -> None:
    emit(HOLDING if held else RELEASED)


class LineRecorder(Recorder):
    """A :class:`Recorder` whose events go to stdout instead of a list: same operation
    semantics (ok / fail / info) as the runner's, times relative to the runner's ``t0``.  The
    runner assigns the history indices."""

    def __init__(self, t0: int, rate: float | None = None) -> None:
        super().__init__(rate=rate)
        self.t0 = t0

    def add(
        self,
        process: int,
        type_: str,
        f: str,
        key: str | None = None,
        value: Any = None,
        *,
        node: str | None = None,
        extra: dict[str, Any] | None = None,
        time_ns: int | None = None,
    ) -> Event:
        ev = super().add(process, type_, f, key, value, node=node, extra=extra, time_ns=time_ns)
        self.events.clear()  # the runner keeps the history
        emit(ev)
        return ev


async def _until_eof(stop: asyncio.Event) -> None:
    """Set ``stop`` once stdin reaches EOF."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass
    stop.set()


async def work(
    endpoints: list[str],
    process: int,
    clients: int,
    fenced: bool,
    t0_ns: int,
    command_timeout: float,
    attempt_timeout: float,
    rate: float | None = None,
) -> None:
    """The client loop until stdin closes: a session, then increments under its mutex."""
    stop = asyncio.Event()
    watcher = asyncio.create_task(_until_eof(stop))
    rec = LineRecorder(t0_ns, rate)
    proc = process
    client = raftkv.Client(
        endpoints,
        command_timeout=command_timeout,
        attempt_timeout=attempt_timeout,
        dial_timeout=1.0,
        auto_sync_interval=1.0,  # follow membership changes, as the runner's clients do
    )
    try:
        async with client as c:
            while not stop.is_set():
                try:
                    async with Session(c, ttl=TTL) as s:
                        m = Mutex(s, PREFIX)
                        while not stop.is_set() and s.alive:
                            ev = await rec.run(
                                proc, "incr", COUNTER, None, partial(incr, c, m, fenced, on_hold)
                            )
                            if ev["type"] == "info":
                                proc += clients
                                break
                except (raftkv.errors.RaftKVError, LockLost) as e:
                    print(f"p{proc}: {type(e).__name__}: {e}", file=sys.stderr)
                    await asyncio.sleep(0.1)
    finally:
        watcher.cancel()


@click.command()
@click.option("--endpoints", required=True, help="Comma-separated client addresses.")
@click.option("--process", "process", type=int, required=True, help="First process number.")
@click.option("--clients", type=int, required=True, help="Number of clients (renumbering).")
@click.option("--fenced/--unfenced", default=True, help="Fenced txn or plain put.")
@click.option("--t0-ns", type=int, required=True, help="The runner's Recorder.t0.")
@click.option("--command-timeout", type=float, default=8.0)
@click.option("--attempt-timeout", type=float, default=1.0)
@click.option("--rate", type=float, default=None, help="This worker's operations per second.")
def main(
    endpoints: str,
    process: int,
    clients: int,
    fenced: bool,
    t0_ns: int,
    command_timeout: float,
    attempt_timeout: float,
    rate: float | None,
) -> None:
    """One lock-workload client; history events as JSON lines on stdout."""
    die_with_parent()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            work(
                endpoints.split(","),
                process,
                clients,
                fenced,
                t0_ns,
                command_timeout,
                attempt_timeout,
                rate,
            )
        )


if __name__ == "__main__":
    main()
