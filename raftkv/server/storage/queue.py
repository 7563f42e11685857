"""The operations queued on the SQLite store's single writer (one group commit takes every
one queued), and what a batch of them may do to the log end."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from raftkv.raft.types import Entry, HardState, Snapshot
from raftkv.server.storage.layout import MetaValue


@dataclass(slots=True)
class Save:
    hard_state: HardState | None
    entries: list[Entry]
    snapshot: Snapshot | None
    future: asyncio.Future[None]
    snap_file: str = ""


@dataclass(slots=True)
class CreateSnapshot:
    snapshot: Snapshot
    future: asyncio.Future[None]
    snap_file: str = ""


@dataclass(slots=True)
class Compact:
    index: int
    term: int
    future: asyncio.Future[None]


@dataclass(slots=True)
class SetMeta:
    items: dict[str, MetaValue]
    future: asyncio.Future[None]


@dataclass(slots=True)
class Defragment:
    future: asyncio.Future[tuple[int, int]]


Op = Save | CreateSnapshot | Compact | SetMeta
Queued = Op | Defragment


def lowest_end(batch: list[Op]) -> int | None:
    """The lowest the log end may drop to while ``batch`` commits (None: it cannot drop).

    Only a save can shorten the log: entries that replace a suffix, or a leader's snapshot
    that replaces the whole log.  Conservative: a snapshot that turns out stale counts too.
    """
    low: int | None = None
    for op in batch:
        if not isinstance(op, Save):
            continue
        if op.snapshot is not None:
            i = op.snapshot.meta.index
            low = i if low is None else min(low, i)
        if op.entries:
            i = op.entries[0].index - 1
            low = i if low is None else min(low, i)
    return low
