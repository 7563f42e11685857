"""What every workload shares: the history recorder, the run context, the workload protocol.

A history is Jepsen's: one event per invocation (``type="invoke"``) and one per completion
(``ok`` = happened, ``fail`` = surely did not happen, ``info`` = unknown, may have happened),
each with the process, the function ``f``, a key and a value, and a monotonic time in
nanoseconds since the start of the run.  A process runs one operation at a time; after an
``info`` it takes a fresh process number (its old operation may still be in flight), as
Jepsen does.  Nemesis actions are events of process ``NEMESIS``.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import raftkv
from jepsen_like.checker.history import (
    HistoryWriter,
    Op,
    OpType,
    read_history,
    write_history,
)
from jepsen_like.control import Control
from raftkv.errors import RaftKVError

NEMESIS: Final = -1
"""The process number of nemesis events."""

Event = dict[str, Any]
"""One history event: index, process, type, f, key, value, time_ns, node, extra."""


class Definite(Exception):
    """Raised inside an operation to complete it as ``fail`` with ``value`` (it surely did
    not take effect, e.g. a CAS whose compare was false)."""

    def __init__(self, value: Any = None, reason: str = "") -> None:
        super().__init__(reason)
        self.value = value
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Observed:
    """What an operation may return instead of a bare value: the value and extra facts for
    the history (e.g. ``{"revision": header revision}`` for the revision-monotonicity check)."""

    value: Any
    extra: dict[str, Any]


class Recorder:
    """Appends history events with times relative to the start of the run; with a
    ``writer``, each event also goes to the history file at once (a crashed or interrupted
    run keeps its history)."""

    def __init__(self, writer: HistoryWriter | None = None, rate: float | None = None) -> None:
        self.t0 = time.monotonic_ns()
        self.events: list[Event] = []
        self.writer = writer
        self.interval = 1.0 / rate if rate else 0.0
        """With ``rate`` (operations per second over all clients), :meth:`run` paces
        invocations like Jepsen's ``--rate``: long soaks keep histories checkable."""
        self._next_slot = 0.0

    def now(self) -> int:
        return time.monotonic_ns() - self.t0

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
        """Append one event; ``time_ns`` (since ``t0``) for an event timed elsewhere, e.g. by a
        client process on the same system-wide monotonic clock.  Indices follow arrival order,
        so such an event may carry an earlier time than the one before it."""
        ev: Event = {
            "index": len(self.events),
            "process": process,
            "type": type_,
            "f": f,
            "key": key,
            "value": value,
            "time_ns": self.now() if time_ns is None else time_ns,
            "node": node,
            "extra": extra or {},
        }
        self.events.append(ev)
        if self.writer is not None:
            self.writer.append(to_op(ev))
        return ev

    async def run(
        self,
        process: int,
        f: str,
        key: str | None,
        value: Any,
        action: Callable[[], Awaitable[Any]],
        *,
        read_only: bool = False,
        node: str | None = None,
    ) -> Event:
        """Invoke ``action`` as one operation and record its invocation and completion.

        The action's return value is the ``ok`` value; :class:`Definite` makes it ``fail``; a
        raftkv error makes a read ``fail`` (reads change nothing) and anything else ``info``
        (it may have happened: a timed-out write can still commit)."""
        if self.interval:
            await self._pace()
        inv = self.add(process, "invoke", f, key, value, node=node)
        try:
            out = await action()
        except Definite as d:
            return self._complete(inv, "fail", d.value, {"error": d.reason})
        except (RaftKVError, OSError, TimeoutError) as e:
            kind = "fail" if read_only else "info"
            return self._complete(inv, kind, value, {"error": f"{type(e).__name__}: {e}"})
        if isinstance(out, Observed):
            return self._complete(inv, "ok", out.value, out.extra)
        return self._complete(inv, "ok", out, {})

    async def _pace(self) -> None:
        """Wait for this invocation's slot: slots are ``interval`` apart, shared by all
        clients (a client that falls behind does not burst to catch up)."""
        now = time.monotonic()
        slot = max(now, self._next_slot)
        self._next_slot = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)

    def _complete(self, inv: Event, type_: str, value: Any, extra: dict[str, Any]) -> Event:
        return self.add(
            inv["process"], type_, inv["f"], inv["key"], value, node=inv["node"], extra=extra
        )


@dataclass
class RunContext:
    """What a workload sees of the run."""

    control: Control
    recorder: Recorder
    rng: random.Random
    out: Path
    clients: int
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    aux: dict[str, list[Any]] = field(default_factory=dict)
    """Extra records a workload keeps beside the history (written as ``<name>.jsonl``)."""
    command_timeout: float = 8.0
    """A client call's whole budget: long enough to outlast a fault, so that fewer operations
    end unknown (``info``) and retries of writes that did commit are exercised."""
    attempt_timeout: float = 1.0
    """One attempt at one member before the client fails over."""

    def client(
        self, endpoints: list[str], timeout: float | None = None, *, sync: bool = True
    ) -> raftkv.Client:
        """A client for this run (its own client id: exactly-once per process).  With
        ``sync`` it follows membership changes (``auto_sync_interval``): the ``member``
        nemesis replaces members for good, and in a long run every member it started with."""
        return raftkv.Client(
            endpoints,
            command_timeout=timeout or self.command_timeout,
            attempt_timeout=self.attempt_timeout,
            dial_timeout=1.0,
            auto_sync_interval=1.0 if sync else None,
        )

    def home(self, process: int) -> str:
        """The one member this process reads from (like Jepsen's client bound to its node): a
        member serving stale data is then seen by its own processes."""
        eps = self.control.endpoints()
        return eps[process % len(eps)]

    def endpoints_for(self, process: int) -> list[str]:
        """All endpoints, rotated so that each process has its own home member first (reads
        are served by the first endpoint that answers, so processes spread over members)."""
        eps = self.control.endpoints()
        k = process % len(eps)
        return eps[k:] + eps[:k]


class Workload(Protocol):
    """A workload: client operations during the run, final reads, and the checks."""

    name: str

    async def setup(self, ctx: RunContext) -> None:
        """Before the clients start (e.g. open watches)."""
        ...

    async def client(self, ctx: RunContext, process: int) -> None:
        """Run one client's operations until ``ctx.stop`` is set."""
        ...

    async def final(self, ctx: RunContext) -> None:
        """After the faults are healed and the cluster recovered: final reads."""
        ...

    def check(self, history: list[Event], aux: dict[str, list[Any]]) -> dict[str, Any]:
        """Checker results by name; each a dict with ``valid`` (True / False / "unknown")."""
        ...


def pairs(history: list[Event]) -> list[tuple[Event, Event | None]]:
    """Invocations with their completions (None: never completed), in invocation order."""
    open_: dict[int, Event] = {}
    out: list[tuple[Event, Event | None]] = []
    slot: dict[int, int] = {}
    for ev in history:
        p = ev["process"]
        if p == NEMESIS:
            continue
        if ev["type"] == "invoke":
            open_[p] = ev
            slot[ev["index"]] = len(out)
            out.append((ev, None))
        else:
            inv = open_.pop(p, None)
            if inv is not None:
                out[slot[inv["index"]]] = (inv, ev)
    return out


def write_history_file(path: Path, events: list[Event]) -> None:
    """Write the history with the checkers' JSONL format (:mod:`jepsen_like.checker.history`)."""
    write_history(path, [to_op(ev) for ev in events])


def read_history_file(path: Path) -> list[Event]:
    return [from_op(op) for op in read_history(path)]


def to_op(ev: Event) -> Op:
    return Op(
        index=ev["index"],
        process=ev["process"],
        type=OpType.parse(ev["type"]),
        f=ev["f"],
        key=ev["key"],
        value=ev["value"],
        time_ns=ev["time_ns"],
        node=ev["node"],
        extra=ev["extra"],
    )


def from_op(op: Op) -> Event:
    return {
        "index": op.index,
        "process": op.process,
        "type": op.type.label,
        "f": op.f,
        "key": op.key,
        "value": op.value,
        "time_ns": op.time_ns,
        "node": op.node,
        "extra": dict(op.extra),
    }


def write_jsonl(path: Path, rows: list[Any]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, separators=(",", ":"), default=_plain) + "\n")


def read_jsonl(path: Path) -> list[Any]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, set | frozenset | tuple):
        return list(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def result(valid: bool | str, **details: Any) -> dict[str, Any]:
    """A checker result."""
    return {"valid": valid, **details}
