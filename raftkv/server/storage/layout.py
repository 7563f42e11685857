"""The SQLite store's on-disk layout: the schema, the checksum of every log row, the
snapshot and membership encodings, and opening a data dir (loading and verifying the log,
the snapshot it names, and the high-water mark beside it).  :mod:`raftkv.server.storage.sqlite`
writes this layout; this module reads it back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import zlib
from pathlib import Path
from typing import Any, Final

import aiosqlite
import msgpack

from raftkv.errors import CorruptionError, StorageError
from raftkv.raft.storage import LogWindow
from raftkv.raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMeta
from raftkv.server.storage import snapfile
from raftkv.server.storage.hwm import HighWater, HighWaterMark, StorageLoss, check

log = logging.getLogger("raftkv.server.storage")

SCHEMA_VERSION: Final = 1
DB_NAME: Final = "raft.db"
SNAP_DIR: Final = "snap"

MetaValue = int | str | bytes | float | bool | None

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS entries (
    idx  INTEGER PRIMARY KEY,
    term INTEGER NOT NULL,
    type INTEGER NOT NULL,
    data BLOB    NOT NULL,
    crc  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS raft_state (
    id         INTEGER PRIMARY KEY CHECK (id = 0),
    term       INTEGER NOT NULL,
    vote       INTEGER NOT NULL,
    commit_idx INTEGER NOT NULL,
    log_offset INTEGER NOT NULL,  -- index of the last compacted entry (the dummy)
    log_term   INTEGER NOT NULL,  -- its term
    snap_index INTEGER NOT NULL,
    snap_term  INTEGER NOT NULL,
    snap_conf  BLOB    NOT NULL,  -- msgpack [voters, learners]
    snap_file  TEXT    NOT NULL   -- '' when there is no snapshot yet
);
CREATE TABLE IF NOT EXISTS log_tail (
    id       INTEGER PRIMARY KEY CHECK (id = 0),
    last_idx INTEGER NOT NULL     -- the last log index every committed transaction left
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL           -- msgpack
);
"""

_ENTRY_HEAD = struct.Struct(">QQB")
_ENTRY_TYPES: Final = {int(t): t for t in EntryType}


def entry_crc(term: int, index: int, etype: int, data: bytes) -> int:
    """CRC32 of (term, index, type, data): stored with every log row, checked on open."""
    return zlib.crc32(data, zlib.crc32(_ENTRY_HEAD.pack(term, index, etype)))


def pack(v: Any) -> bytes:
    out: bytes = msgpack.packb(v, use_bin_type=True)
    return out


def open_hwm(root: Path, found: HighWater) -> tuple[HighWaterMark, StorageLoss | None]:
    """Open (or create) the high-water mark and compare the database with it."""
    hwm, mark = HighWaterMark.open(root)
    if hwm is None or mark is None:
        if found != HighWater(0, 0, 0, 0):
            log.warning(
                "no high-water mark in %s (a data dir from an older version?): created at "
                "last index %d, term %d",
                root,
                found.last_index,
                found.term,
            )
        return HighWaterMark.create(root, found), None
    why = check(found, mark)
    if why is None:
        return hwm, None
    return hwm, StorageLoss(
        f"storage lost acknowledged writes: {why} (high-water mark in {hwm.path}); the WAL "
        "was truncated or lost, or the disk dropped writes",
        found,
        mark,
    )


def prepare_dirs(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / SNAP_DIR).mkdir(exist_ok=True)
    for p in (root / SNAP_DIR).iterdir():
        if p.name.startswith(snapfile.TMP_PREFIX):
            p.unlink()


def pack_conf(cs: ConfState) -> bytes:
    return pack([list(cs.voters), list(cs.learners)])


def unpack_conf(raw: bytes) -> ConfState:
    try:
        voters, learners = msgpack.unpackb(raw)
        return ConfState(tuple(voters), tuple(learners))
    except Exception as exc:
        raise CorruptionError(f"raft_state: bad conf state blob: {exc}") from exc


async def load(
    db: aiosqlite.Connection,
    root: Path,
    conf_state: ConfState,
    cluster_id: int | None,
    node_id: int | None,
) -> tuple[HardState, Snapshot, LogWindow, dict[str, MetaValue]]:
    async with db.execute("PRAGMA journal_mode=WAL") as cur:
        row = await cur.fetchone()
    if row is None or str(row[0]).lower() != "wal":
        raise StorageError(f"could not enable WAL journal mode (got {row!r})")
    await db.execute("PRAGMA synchronous=FULL")
    await db.execute("BEGIN IMMEDIATE")
    try:
        for stmt in filter(str.strip, SCHEMA.split(";")):
            await db.execute(stmt)
        await db.execute(
            "INSERT OR IGNORE INTO raft_state VALUES (0, 0, 0, 0, 0, 0, 0, 0, ?, '')",
            (pack_conf(conf_state),),
        )
        meta: dict[str, MetaValue] = {}
        async with db.execute("SELECT key, value FROM meta") as cur:
            for k, v in await cur.fetchall():
                meta[k] = msgpack.unpackb(v, raw=False)
        version = meta.setdefault("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise StorageError(f"unsupported schema version {version!r}")
        for key, want in (("cluster_id", cluster_id), ("node_id", node_id)):
            if want is None:
                continue
            have = meta.get(key)
            if have is not None and have != want:
                raise StorageError(f"data dir {root} belongs to {key}={have!r}, not {want!r}")
            meta[key] = want
        await db.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [(k, pack(v)) for k, v in meta.items()],
        )
        await db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            await db.execute("ROLLBACK")
        raise
    async with db.execute("SELECT * FROM raft_state WHERE id = 0") as cur:
        state = await cur.fetchone()
    assert state is not None
    _, term, vote, commit, log_offset, log_term, s_index, s_term, s_conf, s_file = state
    async with db.execute("SELECT idx, term, type, data, crc FROM entries ORDER BY idx") as cur:
        rows = list(await cur.fetchall())
    ents = await asyncio.to_thread(verify_rows, rows, log_offset, log_term)
    cs = unpack_conf(s_conf)
    if s_index == 0:
        snap = Snapshot(SnapshotMeta(0, 0, cs))
    else:
        if not s_file:
            raise CorruptionError(f"raft_state names snapshot {s_index} but no file")
        snap = await asyncio.to_thread(snapfile.read_file, root / SNAP_DIR / s_file)
        if (snap.meta.index, snap.meta.term) != (s_index, s_term):
            raise CorruptionError(
                f"snapshot file {s_file} holds ({snap.meta.index}, {snap.meta.term}), "
                f"raft_state expects ({s_index}, {s_term})"
            )
    log_window = LogWindow(ents)
    async with db.execute("SELECT last_idx FROM log_tail WHERE id = 0") as cur:
        tail = await cur.fetchone()
    if tail is not None and log_window.last_index() < int(tail[0]):
        raise CorruptionError(
            f"log truncated: entries up to {int(tail[0])} were durably written, but the log "
            f"ends at {log_window.last_index()} (restore this member from a peer: remove it, wipe "
            "its data dir, add it back)"
        )
    if log_offset > s_index:
        raise CorruptionError(f"log compacted to {log_offset} past the snapshot at {s_index}")
    if commit > log_window.last_index():
        raise CorruptionError(
            f"hard state commit {commit} is beyond the last log index {log_window.last_index()}: "
            "committed entries are missing"
        )
    return HardState(term, vote, commit), snap, log_window, meta


def verify_rows(rows: list[Any], offset: int, offset_term: int) -> list[Entry]:
    """Rebuild the tail from rows, checking CRCs, contiguity and term order."""
    ents = [Entry(offset_term, offset)]
    expect = offset + 1
    prev_term = offset_term
    for idx, term, etype, data, crc in rows:
        if idx != expect:
            what = "before" if idx < expect else "missing"
            raise CorruptionError(
                f"log gap: entry {expect} is {what} (found {idx}; offset {offset})"
            )
        if not isinstance(data, bytes) or entry_crc(term, idx, etype, data) != crc:
            raise CorruptionError(f"log entry {idx}: CRC32 mismatch (corrupt row)")
        if etype not in _ENTRY_TYPES:
            raise CorruptionError(f"log entry {idx}: unknown entry type {etype!r}")
        if term < prev_term:
            raise CorruptionError(f"log entry {idx}: term {term} goes back from {prev_term}")
        ents.append(Entry(term, idx, _ENTRY_TYPES[etype], data))
        prev_term = term
        expect += 1
    return ents
