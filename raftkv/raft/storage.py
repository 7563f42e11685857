"""The read-only log-storage interface the core reads, the in-memory log window, and an
in-memory implementation.

The core never writes storage: the application persists what a ``Ready`` hands it and then
makes it visible here (``append``, ``set_hard_state``, ``apply_snapshot``).  The layout follows
etcd-io/raft's ``Storage``: a dummy entry at ``offset`` holds the index and term of the last
compacted entry (or of the snapshot), so ``term(first_index() - 1)`` is always answerable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from raftkv.errors import Compacted, SnapshotTemporarilyUnavailable, Unavailable
from raftkv.raft.types import (
    EMPTY_HARD_STATE,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMeta,
)


class LogStorage(Protocol):
    """What the core may read.  Implementations: :class:`MemoryStorage`, the SQLite store."""

    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)``; at least one if any, then up to ``max_size`` bytes.

        Raises :class:`Compacted` if ``lo <= snapshot index`` and :class:`Unavailable` if
        ``hi > last_index() + 1``.
        """
        ...

    def term(self, index: int) -> int:
        """Term of entry ``index``; valid for ``first_index() - 1 <= index <= last_index()``."""
        ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot:
        """The latest snapshot (may raise :class:`SnapshotTemporarilyUnavailable`)."""
        ...


def limit_size(entries: list[Entry], max_size: int | None) -> list[Entry]:
    """Keep a prefix of ``entries`` within ``max_size`` bytes, but always at least one."""
    if max_size is None or not entries:
        return entries
    total = entries[0].size()
    n = 1
    while n < len(entries):
        total += entries[n].size()
        if total > max_size:
            break
        n += 1
    return entries[:n]


class LogWindow:
    """The log since the last compaction, in memory: the one implementation behind
    :class:`MemoryStorage` and the SQLite store's mirror of what is durable.

    ``ents[0]`` is a dummy holding the index and term of the last compacted entry (or of the
    snapshot): the window answers ``term`` from that index on, and ``entries`` above it.
    """

    __slots__ = ("ents",)

    def __init__(self, ents: list[Entry] | None = None) -> None:
        self.ents: list[Entry] = ents if ents is not None else [Entry(term=0, index=0)]

    @property
    def offset(self) -> int:
        """The index of the dummy: the last compacted entry."""
        return self.ents[0].index

    def first_index(self) -> int:
        return self.ents[0].index + 1

    def last_index(self) -> int:
        return self.ents[0].index + len(self.ents) - 1

    def term(self, index: int) -> int:
        offset = self.ents[0].index
        if index < offset:
            raise Compacted(offset)
        if index - offset >= len(self.ents):
            raise Unavailable(f"index {index} beyond last index {self.last_index()}")
        return self.ents[index - offset].term

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """:meth:`LogStorage.entries` over the window."""
        offset = self.ents[0].index
        if lo <= offset:
            raise Compacted(offset)
        if hi > self.last_index() + 1:
            raise Unavailable(f"entries [{lo}, {hi}) beyond last index {self.last_index()}")
        if len(self.ents) == 1:
            raise Unavailable("no entries")
        return limit_size(self.ents[lo - offset : hi - offset], max_size)

    def reset(self, index: int, term: int) -> None:
        """Drop the whole window: a snapshot at (``index``, ``term``) replaces the log."""
        self.ents = [Entry(term=term, index=index)]

    def append(self, entries: Sequence[Entry]) -> None:
        """Append ``entries``, truncating any conflicting suffix first; entries at or below
        the offset are skipped.  A gap after the last entry raises :class:`Unavailable`."""
        if not entries:
            return
        first = self.first_index()
        if entries[-1].index < first:
            return  # all already compacted
        if first > entries[0].index:
            entries = list(entries)[first - entries[0].index :]
        offset = entries[0].index - self.ents[0].index
        if offset > len(self.ents):
            raise Unavailable(
                f"missing log entry [last: {self.last_index()}, append at: {entries[0].index}]"
            )
        if offset < len(self.ents):
            del self.ents[offset:]  # a conflicting suffix: a newer leader overwrote it
        self.ents.extend(entries)

    def compact(self, index: int, term: int) -> None:
        """Discard entries up to and including ``index`` (the caller checked it is in the
        window); (``index``, ``term``) becomes the dummy."""
        del self.ents[: index - self.ents[0].index]
        self.ents[0] = Entry(term=term, index=index)


class MemoryStorage:
    """An in-memory :class:`LogStorage` with the write methods the application uses."""

    def __init__(self, conf_state: ConfState | None = None) -> None:
        self.hard_state: HardState = EMPTY_HARD_STATE
        self._snapshot = Snapshot(SnapshotMeta(0, 0, conf_state or ConfState()))
        self.log = LogWindow()
        """The log since the last compaction (``log.ents[0]`` is the dummy)."""

    @classmethod
    def bootstrap(cls, conf_state: ConfState, data: bytes = b"") -> MemoryStorage:
        """The storage of an initial member of a new cluster (the bootstrap contract).

        Every initial member starts from the same snapshot at (index 1, term 1) holding the
        configuration (and the application's initial state ``data``).  The configuration is
        then part of the replicated log's history: a node added later is caught up with this
        snapshot first and learns the initial voters.  ``MemoryStorage(conf_state)`` alone
        keeps the configuration only locally; a node added later and caught up by appends
        from index 1 would never learn it (found by the simulator).
        """
        st = cls(conf_state)
        st.apply_snapshot(Snapshot(SnapshotMeta(1, 1, conf_state), data))
        st.set_hard_state(HardState(term=1, vote=0, commit=1))
        return st

    # --- LogStorage ----------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self._snapshot.meta.conf_state

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        return self.log.entries(lo, hi, max_size)

    def term(self, index: int) -> int:
        return self.log.term(index)

    def first_index(self) -> int:
        return self.log.first_index()

    def last_index(self) -> int:
        return self.log.last_index()

    @property
    def ents(self) -> list[Entry]:
        """The window's entries, ``ents[0]`` the dummy (read-only for callers)."""
        return self.log.ents

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # --- writes (the application's side of the Ready contract) --------------------------

    def save(
        self,
        hard_state: HardState | None,
        entries: list[Entry] | tuple[Entry, ...],
        snapshot: Snapshot | None = None,
    ) -> None:
        """Step 1 of the Ready contract, in memory: the snapshot, the entries, the hard state
        (``save(rd.hard_state, rd.entries, rd.snapshot)``, like the SQLite store's)."""
        if snapshot is not None and not snapshot.is_empty():
            self.apply_snapshot(snapshot)
        self.append(entries)
        if hard_state is not None:
            self.hard_state = hard_state

    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the log with ``snap``; older snapshots are ignored."""
        if snap.meta.index <= self._snapshot.meta.index:
            return
        self._snapshot = snap
        self.log.reset(snap.meta.index, snap.meta.term)

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine at ``index`` (which must be in the log)."""
        if index <= self._snapshot.meta.index:
            raise SnapshotTemporarilyUnavailable(f"snapshot at {index} is out of date")
        if index > self.last_index():
            raise Unavailable(f"snapshot index {index} > last index {self.last_index()}")
        meta = SnapshotMeta(index, self.term(index), conf_state)
        self._snapshot = Snapshot(meta, data)
        return self._snapshot

    def compact(self, compact_index: int) -> None:
        """Discard entries up to and including ``compact_index``."""
        offset = self.log.offset
        if compact_index <= offset:
            raise Compacted(offset)
        if compact_index > self.last_index():
            raise Unavailable(f"compact {compact_index} beyond last index {self.last_index()}")
        self.log.compact(compact_index, self.log.term(compact_index))

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Append ``entries``, truncating any conflicting suffix first."""
        self.log.append(entries)
