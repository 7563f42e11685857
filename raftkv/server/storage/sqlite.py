"""SQLite (through aiosqlite) as the Raft write-ahead log, hard-state and snapshot store.

The core reads storage synchronously on the event-loop thread, so :class:`SQLiteStorage`
keeps an in-memory mirror of what is durable: the hard state, the latest snapshot and the log
tail since that snapshot (bounded by compaction).  Every write goes to SQLite off the loop:
:meth:`SQLiteStorage.save` queues one Ready, a single writer task takes *everything* queued,
writes it in ONE transaction, commits (WAL + ``synchronous=FULL`` = one fsync), and only then
updates the mirror and wakes the callers.  Saves that arrive while a commit is in flight ride
on the next one: that is the group commit.

If a commit ever fails the store is poisoned: every later write raises
:class:`StorageError`.  Retrying after a failed fsync is unsafe (the kernel may have dropped
the dirty pages), so the node must restart and recover from what is really on disk.

Every group commit that moves the log end or the term/vote also moves the high-water mark in
``raft.hwm`` (:mod:`raftkv.server.storage.hwm`), outside the database, before its callers are woken.
Opening a database that is behind its mark (a truncated or lost WAL) raises
:class:`~raftkv.server.storage.hwm.StorageLoss`: this member lost writes it may have acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite

from raftkv.errors import (
    Compacted,
    SnapshotTemporarilyUnavailable,
    StorageError,
    Unavailable,
)
from raftkv.raft.storage import LogWindow
from raftkv.raft.types import (
    EMPTY_HARD_STATE,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMeta,
)
from raftkv.server.storage import failpoints, snapfile
from raftkv.server.storage.hwm import HighWater, HighWaterMark, StorageLoss, check
from raftkv.server.storage.layout import (
    DB_NAME,
    SNAP_DIR,
    MetaValue,
    entry_crc,
    load,
    open_hwm,
    pack,
    pack_conf,
    prepare_dirs,
)
from raftkv.server.storage.queue import (
    Compact,
    CreateSnapshot,
    Defragment,
    Op,
    Queued,
    Save,
    SetMeta,
    lowest_end,
)

log = logging.getLogger("raftkv.server.storage")

__all__ = ["DB_NAME", "SNAP_DIR", "SQLiteStorage", "StorageStats", "entry_crc"]


@dataclass(slots=True)
class StorageStats:
    """Counters for tests and metrics: ``transactions`` == commits == WAL fsyncs."""

    saves: int = 0
    transactions: int = 0
    entries_written: int = 0
    snapshots_written: int = 0
    max_batch: int = 0
    hwm_writes: int = 0


# --- the in-memory mirror ------------------------------------------------------------------


@dataclass(slots=True)
class _Mirror:
    """What is durable, readable without I/O: the hard state, the latest snapshot and the log
    window since the last compaction (:class:`~raftkv.raft.storage.LogWindow`)."""

    hard_state: HardState = EMPTY_HARD_STATE
    snapshot: Snapshot = field(default_factory=Snapshot)
    # Invariant: log.offset <= snapshot.meta.index (we never compact past a snapshot)
    log: LogWindow = field(default_factory=LogWindow)

    def apply_snapshot(self, snap: Snapshot) -> bool:
        if snap.meta.index <= self.snapshot.meta.index:
            return False
        self.snapshot = snap
        self.log.reset(snap.meta.index, snap.meta.term)
        return True


class SQLiteStorage:
    """A durable :class:`~raftkv.raft.storage.LogStorage`.  Create it with :meth:`open`."""

    def __init__(
        self,
        data_dir: Path,
        db: aiosqlite.Connection,
        mirror: _Mirror,
        meta: dict[str, MetaValue],
        keep_snapshots: int,
        hwm: HighWaterMark | None = None,
        loss: StorageLoss | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.snap_dir = data_dir / SNAP_DIR
        self.keep_snapshots = keep_snapshots
        self.stats = StorageStats()
        self._db = db
        self._m = mirror
        self._meta = meta
        self._pending: list[Queued] = []
        self._wakeup = asyncio.Event()
        self._failed: BaseException | None = None
        self._closed = False
        self._hwm = hwm
        self.loss = loss
        """Set (instead of raised) by ``open(allow_loss=True)``: the store is behind its
        high-water mark; it can be read (status) but refuses every write."""
        # Projection of the state once everything queued is durable (for validation).
        self._proj_last = mirror.log.last_index()
        self._proj_offset = mirror.log.offset
        self._proj_snap = mirror.snapshot.meta
        self._writer = asyncio.get_running_loop().create_task(
            self._write_loop(), name=f"raftkv-storage-writer:{data_dir}"
        )

    # --- opening ---------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        data_dir: str | os.PathLike[str],
        *,
        conf_state: ConfState | None = None,
        cluster_id: int | None = None,
        node_id: int | None = None,
        keep_snapshots: int = 3,
        allow_loss: bool = False,
    ) -> SQLiteStorage:
        """Open (or create) the store in ``data_dir``: verify the log, load the snapshot.

        ``conf_state`` is the bootstrap membership, used only when the store is new.
        ``cluster_id``/``node_id`` are recorded on first open and checked afterwards, so a
        data directory cannot be started as another node or in another cluster.

        A database behind its high-water mark raises :class:`StorageLoss`, or with
        ``allow_loss`` opens read-only with :attr:`loss` set (so the node can report it).
        """
        if keep_snapshots < 1:
            raise ValueError("keep_snapshots must be >= 1")
        root = Path(data_dir)
        await asyncio.to_thread(prepare_dirs, root)
        db = await aiosqlite.connect(root / DB_NAME, isolation_level=None)
        try:
            hs, snap, window, meta = await load(
                db, root, conf_state or ConfState(), cluster_id, node_id
            )
            mirror = _Mirror(hs, snap, window)
            hs = mirror.hard_state
            found = HighWater(mirror.log.last_index(), hs.term, hs.vote, hs.commit)
            hwm, loss = await asyncio.to_thread(open_hwm, root, found)
        except BaseException:
            await db.close()
            raise
        if loss is not None and not allow_loss:
            if hwm is not None:
                hwm.close()
            await db.close()
            raise loss
        return cls(root, db, mirror, meta, keep_snapshots, hwm, loss)

    # --- LogStorage (synchronous, reads the mirror only) -----------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._m.hard_state, self._m.snapshot.meta.conf_state

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        return self._m.log.entries(lo, hi, max_size)

    def term(self, index: int) -> int:
        return self._m.log.term(index)

    def first_index(self) -> int:
        return self._m.log.first_index()

    def last_index(self) -> int:
        return self._m.log.last_index()

    def snapshot(self) -> Snapshot:
        return self._m.snapshot

    # --- other reads -----------------------------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self._m.hard_state

    @property
    def cluster_id(self) -> int | None:
        v = self._meta.get("cluster_id")
        return v if isinstance(v, int) else None

    @property
    def node_id(self) -> int | None:
        v = self._meta.get("node_id")
        return v if isinstance(v, int) else None

    def get_meta(self, key: str, default: MetaValue = None) -> MetaValue:
        return self._meta.get(key, default)

    @property
    def failed(self) -> BaseException | None:
        """Why the store refuses writes (a failed commit, detected loss); None if it is fine."""
        return self._failed or self.loss

    @property
    def high_water(self) -> HighWater | None:
        """The durable high-water mark as last written (None if there is no mark file)."""
        return self._hwm.value if self._hwm is not None else None

    # --- writes ----------------------------------------------------------------------------

    async def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
    ) -> None:
        """Persist one Ready (hard state, entries, snapshot) durably, then expose it.

        Returns only after the transaction holding it has committed (fsynced).  Entries that
        conflict with the stored suffix replace it, as in ``MemoryStorage.append``.
        """
        ents = list(entries)
        for i in range(1, len(ents)):
            if ents[i].index != ents[0].index + i:
                raise ValueError(f"entries not contiguous at {ents[i].index}")
        # Validate against the projected state (everything queued before us applied).
        if snapshot is not None and snapshot.meta.index > self._proj_snap.index:
            snap_after = snapshot.meta
            offset_after = last_after = snapshot.meta.index
        else:
            snap_after, offset_after, last_after = self._proj_snap, self._proj_offset, None
        if last_after is None:
            last_after = self._proj_last
        ents = [e for e in ents if e.index > offset_after]
        if ents:
            if ents[0].index > last_after + 1:
                raise Unavailable(
                    f"missing log entry [last: {last_after}, append at: {ents[0].index}]"
                )
            last_after = ents[-1].index
        fut = self._enqueue_check()
        self._proj_snap, self._proj_offset, self._proj_last = snap_after, offset_after, last_after
        self._push(Save(hard_state, ents, snapshot, fut))
        self.stats.saves += 1
        await fut

    async def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine at ``index`` (file + pointer in SQLite)."""
        if index <= self._proj_snap.index:
            raise SnapshotTemporarilyUnavailable(f"snapshot at {index} is out of date")
        if index > self._m.log.last_index():
            raise Unavailable(f"snapshot index {index} > last index {self._m.log.last_index()}")
        snap = Snapshot(SnapshotMeta(index, self._m.log.term(index), conf_state), data)
        fut = self._enqueue_check()
        self._proj_snap = snap.meta
        self._push(CreateSnapshot(snap, fut))
        await fut
        return snap

    async def compact(self, index: int) -> None:
        """Delete log rows ``<= index``.  ``index`` must not pass the latest snapshot."""
        if index <= self._proj_offset:
            raise Compacted(self._proj_offset)
        if index > self._proj_snap.index:
            raise Unavailable(
                f"compact {index} beyond snapshot {self._proj_snap.index}: snapshot first"
            )
        term = self._proj_snap.term if index == self._proj_snap.index else self._m.log.term(index)
        fut = self._enqueue_check()
        self._proj_offset = index
        self._proj_last = max(self._proj_last, index)
        self._push(Compact(index, term, fut))
        await fut

    async def set_meta(self, **items: MetaValue) -> None:
        """Durably store small key/values (``applied_index`` hint, ...)."""
        fut = self._enqueue_check()
        self._push(SetMeta(dict(items), fut))
        await fut

    async def mark_lost(self, acknowledged: int) -> None:
        """Record that this store once held entries up to ``acknowledged`` that it no longer
        holds (the leader's commit index proved it): raise the high-water mark to that index
        so the store is refused on every later open too, and refuse every write from now on.
        A member that lost acknowledged state stays out of service until it is replaced."""
        hs = self._m.hard_state
        found = HighWater(self._m.log.last_index(), hs.term, hs.vote, hs.commit)
        old = self._hwm.value if self._hwm is not None else found
        mark = HighWater(max(acknowledged, old.last_index), old.term, old.vote, old.commit)
        if self.loss is None:
            why = check(found, mark) or f"the leader's commit index {acknowledged} was lost"
            self.loss = StorageLoss(f"storage lost acknowledged writes: {why}", found, mark)
        hwm = self._hwm
        if hwm is None or self._closed:
            return
        run_on_db = getattr(self._db, "_execute", None)
        if run_on_db is not None:  # after any commit in flight on the database thread
            await run_on_db(hwm.write, mark)
        else:  # pragma: no cover - an aiosqlite without the internal hook
            await asyncio.to_thread(hwm.write, mark)

    async def defragment(self) -> tuple[int, int]:
        """Rewrite the database file without its free pages (SQLite ``VACUUM``, then a WAL
        checkpoint that truncates the WAL), safely while the member runs: it is queued like
        a write and runs between two commits.  Returns the bytes of the database and its WAL
        before and after."""
        fut: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._enqueue_check()
        self._push(Defragment(fut))
        return await fut

    def file_bytes(self) -> int:
        """The bytes of the database file and its WAL on disk."""
        total = 0
        for name in (DB_NAME, DB_NAME + "-wal"):
            with contextlib.suppress(FileNotFoundError):
                total += (self.data_dir / name).stat().st_size
        return total

    async def save_snapshot_file(self, snap: Snapshot) -> Path:
        """Write ``snap`` to ``snap/`` atomically (temp, fsync, rename, fsync dir)."""
        path = await asyncio.to_thread(snapfile.write_file, self.snap_dir, snap)
        self.stats.snapshots_written += 1
        return path

    async def read_snapshot_file(self, path: str | os.PathLike[str]) -> Snapshot:
        """Load and verify one snapshot file (:class:`CorruptionError` if torn or corrupt)."""
        return await asyncio.to_thread(snapfile.read_file, Path(path))

    async def close(self) -> None:
        """Wait for queued writes, then stop the writer and close the database."""
        if self._closed:
            return
        self._closed = True
        self._wakeup.set()
        with contextlib.suppress(Exception):  # never swallow our own cancellation
            await self._writer
        await self._db.close()
        if self._hwm is not None:
            self._hwm.close()

    # --- the writer ------------------------------------------------------------------------

    def _enqueue_check(self) -> asyncio.Future[None]:
        if self.loss is not None:
            raise StorageError(f"storage lost acknowledged writes, refusing writes: {self.loss}")
        if self._failed is not None:
            raise StorageError(f"storage failed earlier and must be reopened: {self._failed}")
        if self._closed:
            raise StorageError("storage is closed")
        return asyncio.get_running_loop().create_future()

    def _push(self, op: Queued) -> None:
        self._pending.append(op)
        self._wakeup.set()

    async def _write_loop(self) -> None:
        while True:
            if not self._pending:
                if self._closed:
                    return
                self._wakeup.clear()  # no await since the check: no wakeup can be lost
                await self._wakeup.wait()
                continue
            queued, self._pending = self._pending, []
            batch = [op for op in queued if not isinstance(op, Defragment)]
            try:
                if batch:
                    await self._commit(batch)
            except BaseException as exc:
                self._poison(queued, exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
            self._apply(batch)
            for op in batch:
                if not op.future.done():
                    op.future.set_result(None)
            await self._prune_snapshots(batch)
            for d in queued:
                if isinstance(d, Defragment):
                    await self._defragment(d)

    async def _defragment(self, op: Defragment) -> None:
        """VACUUM between two commits, on the database thread (so no write interleaves).  A
        failed VACUUM (say, no room for the copy) rolls back by itself: the store stays
        usable and only this call fails."""
        try:
            run_on_db = getattr(self._db, "_execute", None)
            if run_on_db is not None:
                result: tuple[int, int] = await run_on_db(self._vacuum_sql)
            else:  # pragma: no cover - an aiosqlite without the internal hook
                result = await asyncio.to_thread(self._vacuum_sql)
        except (sqlite3.Error, OSError) as exc:
            if not op.future.done():
                op.future.set_exception(StorageError(f"defragment failed: {exc!r}"))
            return
        if not op.future.done():
            op.future.set_result(result)

    def _vacuum_sql(self) -> tuple[int, int]:
        conn = self._db._conn
        before = self.file_bytes()
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return before, self.file_bytes()

    def _poison(self, batch: list[Queued], exc: BaseException) -> None:
        log.error("storage commit failed; refusing further writes: %r", exc)
        self._failed = exc
        err = exc if isinstance(exc, StorageError) else StorageError(f"commit failed: {exc!r}")
        for op in [*batch, *self._pending]:
            if not op.future.done():
                op.future.set_exception(err)
        self._pending = []

    async def _commit(self, batch: list[Op]) -> None:
        # 1. snapshot files first: the row that points at a file must never precede it.
        # A follower's snapshot older than the one we hold is ignored (as in MemoryStorage).
        newest = self._m.snapshot.meta.index
        for op in batch:
            snap = op.snapshot if isinstance(op, CreateSnapshot | Save) else None
            if snap is not None and snap.meta.index > newest:
                assert not isinstance(op, Compact | SetMeta)
                op.snap_file = (await self.save_snapshot_file(snap)).name
                newest = snap.meta.index
                if isinstance(op, Save):
                    # A leader's snapshot being installed: its file is durable, the row that
                    # makes it the member's state is not yet written.
                    failpoints.hit("snapshot_install")
        # 2. one transaction for the whole batch, run start to finish on the database's own
        # thread in a single hop (not one event-loop round trip per statement).
        low = lowest_end(batch)
        run_on_db = getattr(self._db, "_execute", None)
        if run_on_db is not None:
            await run_on_db(self._commit_sql, batch, low)
        else:  # pragma: no cover - an aiosqlite without the internal hook
            conn = self._db._conn
            await asyncio.to_thread(self._commit_sql_checked, conn, batch, low)
        failpoints.hit("after_commit")
        self.stats.transactions += 1
        self.stats.max_batch = max(self.stats.max_batch, len(batch))

    def _commit_sql(self, batch: list[Op], low: int | None) -> None:
        """The SQL of one batch, in one transaction; runs on the database thread."""
        conn = self._db._conn
        self._commit_sql_checked(conn, batch, low)

    def _commit_sql_checked(
        self, conn: sqlite3.Connection, batch: list[Op], low: int | None
    ) -> None:
        """One transaction, bracketed by the high-water mark: lowered first if the batch may
        shorten the log below it, raised after COMMIT to what the transaction left (so the
        mark is never ahead of the database, and covers the batch before anyone is woken)."""
        if self.loss is not None:  # checked on the database thread: nothing after mark_lost
            raise StorageError(f"storage lost acknowledged writes, refusing writes: {self.loss}")
        hwm = self._hwm
        if hwm is not None and low is not None and low < hwm.value.last_index:
            old = hwm.value
            hwm.write(HighWater(low, old.term, old.vote, old.commit))
            self.stats.hwm_writes += 1
        conn.execute("BEGIN IMMEDIATE")
        try:
            snap_index = self._m.snapshot.meta.index
            i = 0
            while i < len(batch):
                op = batch[i]
                if isinstance(op, Save):
                    j = i
                    while j < len(batch) and isinstance(batch[j], Save):
                        j += 1
                    group = [o for o in batch[i:j] if isinstance(o, Save)]
                    snap_index = self._write_saves(conn, group, snap_index)
                    i = j
                    continue
                if isinstance(op, CreateSnapshot):
                    self._write_snapshot_row(conn, op.snapshot.meta, op.snap_file)
                    snap_index = op.snapshot.meta.index
                elif isinstance(op, Compact):
                    conn.execute("DELETE FROM entries WHERE idx <= ?", (op.index,))
                    conn.execute(
                        "UPDATE raft_state SET log_offset = ?, log_term = ? WHERE id = 0",
                        (op.index, op.term),
                    )
                else:
                    conn.executemany(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                        [(k, pack(v)) for k, v in op.items.items()],
                    )
                i += 1
            # Record where the log ends, in the same transaction: rows missing below it on
            # the next open are a truncated (corrupt) log, not a crash artefact — SQLite
            # transactions are atomic, so a crash can only lose whole transactions.
            conn.execute(
                "INSERT OR REPLACE INTO log_tail VALUES (0, MAX("
                "COALESCE((SELECT MAX(idx) FROM entries), 0),"
                " (SELECT log_offset FROM raft_state WHERE id = 0)))"
            )
            failpoints.hit("before_commit")
            after: HighWater | None = None
            if hwm is not None:
                (last,) = conn.execute("SELECT last_idx FROM log_tail WHERE id = 0").fetchone()
                term, vote, commit = conn.execute(
                    "SELECT term, vote, commit_idx FROM raft_state WHERE id = 0"
                ).fetchone()
                after = HighWater(int(last), int(term), int(vote), int(commit))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise
        if hwm is not None and after is not None:
            old = hwm.value
            # A commit index alone moving does not need a write (it is not what a member
            # acknowledges); it rides along with the next one.
            if (after.last_index, after.term, after.vote) != (old.last_index, old.term, old.vote):
                hwm.write(after)
                self.stats.hwm_writes += 1

    def _write_saves(self, conn: sqlite3.Connection, group: list[Save], snap_index: int) -> int:
        """Write consecutive saves as their net effect: one DELETE, one INSERT batch."""
        wipe: Save | None = None
        run: list[Entry] = []
        lo: int | None = None
        hs: HardState | None = None
        for s in group:
            if s.snapshot is not None and s.snapshot.meta.index > snap_index:
                wipe, run, lo = s, [], None
                snap_index = s.snapshot.meta.index
            if s.entries:
                first = s.entries[0].index
                if run and first > run[0].index:
                    del run[first - run[0].index :]
                    run.extend(s.entries)
                else:
                    run = list(s.entries)
                lo = first if lo is None else min(lo, first)
            if s.hard_state is not None:
                hs = s.hard_state
        if wipe is not None:
            assert wipe.snapshot is not None
            meta = wipe.snapshot.meta
            conn.execute("DELETE FROM entries")
            self._write_snapshot_row(conn, meta, wipe.snap_file)
            conn.execute(
                "UPDATE raft_state SET log_offset = ?, log_term = ? WHERE id = 0",
                (meta.index, meta.term),
            )
        if lo is not None:
            conn.execute("DELETE FROM entries WHERE idx >= ?", (lo,))
        if run:
            conn.executemany(
                "INSERT INTO entries (idx, term, type, data, crc) VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        e.index,
                        e.term,
                        int(e.type),
                        e.data,
                        entry_crc(e.term, e.index, e.type, e.data),
                    )
                    for e in run
                ],
            )
            self.stats.entries_written += len(run)
        if hs is not None:
            conn.execute(
                "UPDATE raft_state SET term = ?, vote = ?, commit_idx = ? WHERE id = 0",
                (hs.term, hs.vote, hs.commit),
            )
        return snap_index

    def _write_snapshot_row(self, conn: sqlite3.Connection, meta: SnapshotMeta, file: str) -> None:
        conn.execute(
            "UPDATE raft_state SET snap_index = ?, snap_term = ?, snap_conf = ?, snap_file = ?"
            " WHERE id = 0",
            (meta.index, meta.term, pack_conf(meta.conf_state), file),
        )

    def _apply(self, batch: list[Op]) -> None:
        """Make a committed batch visible to the core, in queue order."""
        m = self._m
        for op in batch:
            if isinstance(op, Save):
                if op.snapshot is not None:
                    m.apply_snapshot(op.snapshot)
                m.log.append(op.entries)
                if op.hard_state is not None:
                    m.hard_state = op.hard_state
            elif isinstance(op, CreateSnapshot):
                m.snapshot = op.snapshot
            elif isinstance(op, Compact):
                m.log.compact(op.index, op.term)
            else:
                self._meta.update(op.items)

    async def _prune_snapshots(self, batch: list[Op]) -> None:
        if any(isinstance(op, CreateSnapshot | Save) and op.snap_file for op in batch):
            current = snapfile.file_name(self._m.snapshot.meta.index, self._m.snapshot.meta.term)
            try:
                await asyncio.to_thread(snapfile.prune, self.snap_dir, self.keep_snapshots, current)
            except OSError as exc:  # retention is best effort; the data is already safe
                log.warning("could not prune old snapshots: %r", exc)
