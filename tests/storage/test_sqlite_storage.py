"""SQLiteStorage: durability, group commit, verification on open, snapshots, compaction."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from raftkv.errors import Compacted, CorruptionError, StorageError, Unavailable
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMeta
from raftkv.server.storage import SQLiteStorage, failpoints
from raftkv.server.storage.sqlite import DB_NAME, SNAP_DIR


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, data=f"t{term}i{i}".encode()) for i in range(lo, hi + 1)]


async def test_round_trip_survives_reopen(tmp_path: Path) -> None:
    cs = ConfState(voters=(1, 2, 3))
    st = await SQLiteStorage.open(tmp_path, conf_state=cs, cluster_id=7, node_id=1)
    assert st.initial_state() == (HardState(), cs)
    cc = Entry(2, 4, EntryType.CONF_CHANGE, b"\x00" * 9)
    await st.save(HardState(2, 3, 2), [*ents(1, 3), cc])
    await st.set_meta(applied_index=2)
    assert st.last_index() == 4 and st.first_index() == 1
    await st.close()

    st = await SQLiteStorage.open(tmp_path, cluster_id=7, node_id=1)
    assert st.initial_state() == (HardState(2, 3, 2), cs)
    assert st.entries(1, 5) == [*ents(1, 3), cc]
    assert st.term(4) == 2 and st.term(0) == 0
    assert st.get_meta("applied_index") == 2
    assert (st.cluster_id, st.node_id) == (7, 1)
    await st.close()


async def test_identity_mismatch_refused(tmp_path: Path) -> None:
    st = await SQLiteStorage.open(tmp_path, cluster_id=7, node_id=1)
    await st.close()
    with pytest.raises(StorageError, match="cluster_id"):
        await SQLiteStorage.open(tmp_path, cluster_id=8, node_id=1)
    with pytest.raises(StorageError, match="node_id"):
        await SQLiteStorage.open(tmp_path, cluster_id=7, node_id=2)


async def test_conflicting_suffix_truncated_like_memory_storage(tmp_path: Path) -> None:
    st = await SQLiteStorage.open(tmp_path)
    mem = MemoryStorage()
    steps = [ents(1, 5), ents(4, 6, term=2), ents(3, 3, term=3), ents(4, 8, term=3)]
    for batch in steps:
        await st.save(None, batch)
        mem.append(batch)
        assert st.entries(1, st.last_index() + 1) == mem.entries(1, mem.last_index() + 1)
    await st.close()
    st = await SQLiteStorage.open(tmp_path)
    assert st.entries(1, st.last_index() + 1) == mem.entries(1, mem.last_index() + 1)
    await st.close()


async def test_gap_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    st = await SQLiteStorage.open(tmp_path)
    await st.save(None, ents(1, 2))
    with pytest.raises(Unavailable):
        await st.save(None, ents(5, 6))
    assert st.last_index() == 2
    await st.close()


async def test_group_commit_coalesces_concurrent_saves(tmp_path: Path) -> None:
    st = await SQLiteStorage.open(tmp_path)
    n = 50
    await asyncio.gather(
        *(st.save(HardState(1, 1, i - 1), [Entry(1, i, data=b"x")]) for i in range(1, n + 1))
    )
    assert st.stats.saves == n
    assert st.stats.transactions < n // 5, st.stats
    assert st.last_index() == n and st.hard_state == HardState(1, 1, n - 1)
    await st.close()
    st = await SQLiteStorage.open(tmp_path)
    assert st.last_index() == n and st.hard_state == HardState(1, 1, n - 1)
    await st.close()


async def test_coalesced_batch_with_conflicts_matches_sequential(tmp_path: Path) -> None:
    st = await SQLiteStorage.open(tmp_path)
    mem = MemoryStorage()
    steps = [ents(1, 6), ents(3, 4, term=2), ents(5, 7, term=2), ents(2, 2, term=3)]
    await asyncio.gather(*(st.save(None, b) for b in steps))
    for b in steps:
        mem.append(b)
    assert st.stats.transactions == 1
    await st.close()
    st = await SQLiteStorage.open(tmp_path)
    assert st.entries(1, st.last_index() + 1) == mem.entries(1, mem.last_index() + 1)
    await st.close()


def _raw(tmp_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)


async def test_corrupt_row_detected_naming_the_index(tmp_path: Path) -> None:
    st = await SQLiteStorage.open(tmp_path)
    await st.save(HardState(1, 1, 2), ents(1, 5))
    await st.close()
    with _raw(tmp_path) as db:
        db.execute("UPDATE entries SET data = ? WHERE idx = 3", (b"evil",))
    with pytest.raises(CorruptionError, match="entry 3: CRC32"):
        await SQLiteStorage.open(tmp_path)


async def test_gap_in_rows_detected(tmp_path: Path) -> None:
    st = await SQLiteStorage.open(tmp_path)
    await st.save(HardState(1, 1, 1), ents(1, 5))
    await st.close()
    with _raw(tmp_path) as db:
        db.execute("DELETE FROM entries WHERE idx = 3")
    with pytest.raises(CorruptionError, match="entry 3 is missing"):
        await SQLiteStorage.open(tmp_path)


async def test_truncated_tail_is_corruption(tmp_path: Path) -> None:
    """SQLite commits are atomic, so rows missing below the recorded log end were removed by
    something else: the store refuses to open rather than forget acknowledged entries."""
    st = await SQLiteStorage.open(tmp_path)
    await st.save(HardState(1, 1, 3), ents(1, 6))
    await st.close()
    with _raw(tmp_path) as db:
        db.execute("DELETE FROM entries WHERE idx > 4")
    with pytest.raises(CorruptionError, match="log truncated: entries up to 6"):
        await SQLiteStorage.open(tmp_path)
    # Without the tail record, losing committed entries is still caught.
    with _raw(tmp_path) as db:
        db.execute("DELETE FROM log_tail")
        db.execute("DELETE FROM entries WHERE idx > 2")
    with pytest.raises(CorruptionError, match="commit 3 is beyond the last log index 2"):
        await SQLiteStorage.open(tmp_path)


async def test_snapshot_and_compaction(tmp_path: Path) -> None:
    cs = ConfState(voters=(1, 2))
    st = await SQLiteStorage.open(tmp_path, conf_state=cs, keep_snapshots=2)
    await st.save(HardState(2, 1, 10), ents(1, 10, term=2))
    with pytest.raises(Unavailable):
        await st.compact(5)  # no snapshot covers index 5 yet
    snaps = []
    for i in (4, 6, 8):
        snaps.append(await st.create_snapshot(i, cs, f"state{i}".encode()))
    await st.compact(8)
    assert st.first_index() == 9 and st.term(8) == 2
    with pytest.raises(Compacted):
        st.entries(8, 10)
    files = sorted(p.name for p in (tmp_path / SNAP_DIR).iterdir())
    assert len(files) == 2  # keep_snapshots
    await st.close()

    st = await SQLiteStorage.open(tmp_path)
    assert st.snapshot() == snaps[-1]
    assert st.first_index() == 9 and st.last_index() == 10
    assert st.entries(9, 11) == ents(9, 10, term=2)
    with _raw(tmp_path) as db:
        (rows,) = db.execute("SELECT COUNT(*) FROM entries").fetchone()
    assert rows == 2
    await st.close()


async def test_follower_restore_from_snapshot_replaces_log(tmp_path: Path) -> None:
    st = await SQLiteStorage.open(tmp_path)
    await st.save(HardState(1, 1, 2), ents(1, 5))
    snap = Snapshot(SnapshotMeta(20, 3, ConfState((1, 2, 3))), b"leader state")
    await st.save(HardState(3, 0, 20), [], snap)
    await st.save(None, ents(21, 22, term=3))
    assert st.first_index() == 21 and st.last_index() == 22
    stale = Snapshot(SnapshotMeta(10, 2, ConfState((1,))), b"old")
    await st.save(None, [], stale)  # older than ours: ignored, no file written
    assert st.snapshot() == snap and st.last_index() == 22
    assert len(list((tmp_path / SNAP_DIR).glob("*.snap"))) == 1
    await st.close()
    st = await SQLiteStorage.open(tmp_path)
    assert st.snapshot() == snap
    assert st.initial_state() == (HardState(3, 0, 20), ConfState((1, 2, 3)))
    assert st.entries(21, 23) == ents(21, 22, term=3)
    await st.close()


async def test_corrupt_or_torn_snapshot_file_refused(tmp_path: Path) -> None:
    st = await SQLiteStorage.open(tmp_path)
    await st.save(HardState(1, 1, 3), ents(1, 3))
    await st.create_snapshot(3, ConfState((1,)), b"S" * 1000)
    await st.close()
    (path,) = (tmp_path / SNAP_DIR).glob("*.snap")
    good = path.read_bytes()

    path.write_bytes(good[:500])  # torn
    with pytest.raises(CorruptionError, match="torn or truncated"):
        await SQLiteStorage.open(tmp_path)

    flipped = bytearray(good)
    flipped[-10] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(CorruptionError, match="SHA-256 mismatch"):
        await SQLiteStorage.open(tmp_path)

    path.unlink()
    with pytest.raises(CorruptionError, match="missing"):
        await SQLiteStorage.open(tmp_path)

    path.write_bytes(good)
    st = await SQLiteStorage.open(tmp_path)
    assert st.snapshot().data == b"S" * 1000
    await st.close()


async def test_failed_commit_poisons_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(failpoints.ENV_VAR, "before_commit=error@2")
    failpoints.reload()
    try:
        st = await SQLiteStorage.open(tmp_path)
        await st.save(HardState(1, 1, 0), ents(1, 1))
        with pytest.raises(StorageError, match="failpoint before_commit"):
            await st.save(HardState(1, 1, 1), ents(2, 2))
        with pytest.raises(StorageError, match="must be reopened"):
            await st.save(None, ents(3, 3))
        assert st.last_index() == 1
        await st.close()
    finally:
        monkeypatch.delenv(failpoints.ENV_VAR)
        failpoints.reload()
    st = await SQLiteStorage.open(tmp_path)
    assert st.last_index() == 1 and st.hard_state == HardState(1, 1, 0)
    await st.close()


async def test_close_flushes_queued_saves(tmp_path: Path) -> None:
    st = await SQLiteStorage.open(tmp_path)
    saves = [asyncio.ensure_future(st.save(None, ents(i, i))) for i in range(1, 4)]
    await asyncio.sleep(0)  # let the saves queue (not a timing wait: one loop turn)
    async with asyncio.timeout(5):  # not wait_for: close() must run before the writer wakes
        await st.close()
    await asyncio.gather(*saves)
    with pytest.raises(StorageError, match="closed"):
        await st.save(None, ents(4, 4))
    st = await SQLiteStorage.open(tmp_path)
    assert st.last_index() == 3
    await st.close()


async def test_defragment_runs_between_commits_and_shrinks_the_file(tmp_path: Path) -> None:
    st = await SQLiteStorage.open(tmp_path)
    big = [Entry(1, i, data=bytes([i % 251]) * 4096) for i in range(1, 401)]
    await st.save(HardState(1, 0, 400), big)
    await st.create_snapshot(400, ConfState(voters=(1,)), b"state")
    await st.compact(400)
    # Saves queued around the defragmentation all commit, in order, with it.
    first, (before, after), last = await asyncio.gather(
        st.save(HardState(1, 0, 401), ents(401, 401)),
        st.defragment(),
        st.save(HardState(1, 0, 402), ents(402, 402)),
    )
    assert first is None and last is None
    assert after < before / 4, (before, after)
    assert after == st.file_bytes()
    assert st.entries(401, 403) == ents(401, 402)
    await st.save(None, ents(403, 403))
    await st.close()

    st = await SQLiteStorage.open(tmp_path)
    assert (st.first_index(), st.last_index()) == (401, 403)
    assert st.entries(401, 404) == ents(401, 403)
    assert st.hard_state == HardState(1, 0, 402)
    await st.close()


async def test_defragment_refused_by_a_closed_store(tmp_path: Path) -> None:
    st = await SQLiteStorage.open(tmp_path)
    await st.close()
    with pytest.raises(StorageError, match="closed"):
        await st.defragment()
