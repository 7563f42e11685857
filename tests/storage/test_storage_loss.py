"""Detected storage loss: a member that lost writes it may have acknowledged must find out.

* A truncated ``raft.db-wal`` opens as a consistent but older database (the recorded log end
  rolls back with it): the high-water mark in ``raft.hwm`` catches it at open.
* A data dir replaced by an older copy of itself carries an older mark too: the leader's
  commit index (never beyond what this member acknowledged) catches it (``LogLost``), and the
  member stops serving.
* The mark never raises a false alarm: not after an ordinary crash, not when a new leader
  shortens the log, not on a data dir from a version without the file.
* A member whose storage failed (ENOSPC) refuses every read, serializable ones included, and
  /health says why.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from raftkv import Client
from raftkv.errors import CorruptionError, RaftKVError, StorageError
from raftkv.raft import LogLost, Message, MessageType, RawNode
from raftkv.raft.config import Config
from raftkv.raft.types import ConfState, Entry, HardState
from raftkv.server.storage import SQLiteStorage, failpoints
from raftkv.server.storage import hwm as hwm_mod
from raftkv.server.storage.hwm import HWM_NAME, SLOT_SIZE, HighWater, HighWaterMark, StorageLoss
from raftkv.server.storage.sqlite import DB_NAME
from raftkv.testing import LocalCluster

VOTERS = ConfState(voters=(1, 2, 3))


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, data=b"x" * 64 + f"t{term}i{i}".encode()) for i in range(lo, hi + 1)]


def crash_copy(src: Path, dst: Path) -> None:
    """The files a SIGKILL would leave right now (no checkpoint, WAL and all)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*-shm"))


async def written(tmp_path: Path, n: int, term: int = 1) -> SQLiteStorage:
    st = await SQLiteStorage.open(tmp_path / "live", conf_state=VOTERS)
    for i in range(1, n + 1):
        await st.save(HardState(term, 0, max(0, i - 1)), ents(i, i, term))
    return st


# --- the truncated WAL -------------------------------------------------------------------


async def test_truncated_wal_is_detected_at_open(tmp_path: Path) -> None:
    st = await written(tmp_path, 120)
    crash_copy(st.data_dir, tmp_path / "crashed")
    await st.close()
    wal = tmp_path / "crashed" / f"{DB_NAME}-wal"
    size = wal.stat().st_size
    assert size > 0, "the saves should still be in the WAL (no checkpoint yet)"
    with wal.open("r+b") as f:
        f.truncate(size // 2)

    with pytest.raises(StorageLoss) as ei:
        await SQLiteStorage.open(tmp_path / "crashed", conf_state=VOTERS)
    assert isinstance(ei.value, CorruptionError)
    assert ei.value.mark.last_index == 120
    assert ei.value.found.last_index < 120
    assert "entries up to 120 were durably written" in str(ei.value)

    # Opened for reporting, it refuses every write (and leaves the evidence alone).
    lost = await SQLiteStorage.open(tmp_path / "crashed", conf_state=VOTERS, allow_loss=True)
    try:
        assert lost.loss is not None and lost.failed is lost.loss
        assert lost.last_index() < 120
        with pytest.raises(StorageError):
            await lost.save(HardState(1, 0, 0), ents(lost.last_index() + 1, lost.last_index() + 1))
    finally:
        await lost.close()
    assert hwm_mod.read(tmp_path / "crashed" / HWM_NAME) is not None
    with pytest.raises(StorageLoss):
        await SQLiteStorage.open(tmp_path / "crashed", conf_state=VOTERS)


async def test_an_ordinary_crash_is_not_a_loss(tmp_path: Path) -> None:
    st = await written(tmp_path, 50)
    crash_copy(st.data_dir, tmp_path / "crashed")
    await st.close()
    st2 = await SQLiteStorage.open(tmp_path / "crashed", conf_state=VOTERS)
    try:
        assert st2.last_index() == 50 and st2.loss is None
        assert st2.high_water == HighWater(50, 1, 0, 49)
    finally:
        await st2.close()


async def test_a_lost_vote_is_detected(tmp_path: Path) -> None:
    st = await SQLiteStorage.open(tmp_path / "live", conf_state=VOTERS)
    await st.save(HardState(3, 0, 0), [])
    crash_copy(st.data_dir, tmp_path / "before-vote")
    await st.save(HardState(3, 2, 0), [])  # voted for 2 in term 3
    mark = (tmp_path / "live" / HWM_NAME).read_bytes()
    await st.close()
    # The vote's transaction is lost, but the mark (written after it) survived.
    (tmp_path / "before-vote" / HWM_NAME).write_bytes(mark)
    with pytest.raises(StorageLoss, match="a vote was lost"):
        await SQLiteStorage.open(tmp_path / "before-vote", conf_state=VOTERS)


# --- the mark never runs ahead of the database -------------------------------------------


async def test_a_shortened_log_lowers_the_mark_before_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = await SQLiteStorage.open(tmp_path / "live", conf_state=VOTERS)
    await st.save(HardState(1, 0, 0), ents(1, 10))
    assert st.high_water == HighWater(10, 1, 0, 0)
    # A new leader replaces the uncommitted suffix 6..10 with 6..7 of term 2, and the
    # transaction fails (a crash before COMMIT, as far as the database is concerned).
    monkeypatch.setenv(failpoints.ENV_VAR, "before_commit=error")
    failpoints.reload()
    try:
        with pytest.raises(StorageError):
            await st.save(HardState(2, 0, 0), ents(6, 7, term=2))
    finally:
        monkeypatch.delenv(failpoints.ENV_VAR)
        failpoints.reload()
    assert st.high_water is not None and st.high_water.last_index == 5
    await st.close()
    st = await SQLiteStorage.open(tmp_path / "live", conf_state=VOTERS)  # no false alarm
    assert st.last_index() == 10
    await st.save(HardState(2, 0, 0), ents(6, 7, term=2))
    assert st.last_index() == 7 and st.high_water == HighWater(7, 2, 0, 0)
    await st.close()
    st = await SQLiteStorage.open(tmp_path / "live", conf_state=VOTERS)
    assert st.last_index() == 7 and st.loss is None
    await st.close()


async def test_commit_only_saves_do_not_write_the_mark(tmp_path: Path) -> None:
    st = await written(tmp_path, 5)
    before = st.stats.hwm_writes
    await st.save(HardState(1, 0, 5), [])
    await st.set_meta(applied_index=5)
    assert st.stats.hwm_writes == before
    await st.save(HardState(2, 3, 5), [])  # a vote: written
    assert st.stats.hwm_writes == before + 1
    await st.close()


# --- the file ------------------------------------------------------------------------------


async def test_a_data_dir_without_a_mark_opens_and_gets_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    st = await written(tmp_path, 20)
    await st.close()
    (tmp_path / "live" / HWM_NAME).unlink()  # as an older version left it
    with caplog.at_level(logging.WARNING, logger="raftkv.server.storage"):
        st = await SQLiteStorage.open(tmp_path / "live", conf_state=VOTERS)
    try:
        assert st.loss is None and st.last_index() == 20
        assert "no high-water mark" in caplog.text
        got = hwm_mod.read(tmp_path / "live" / HWM_NAME)
        assert got is not None and got[1] == HighWater(20, 1, 0, 19)
    finally:
        await st.close()


def test_mark_file_is_created_whole_and_updated_in_alternate_slots(tmp_path: Path) -> None:
    m = HighWaterMark.create(tmp_path, HighWater(1, 1, 0, 0))
    try:
        path = tmp_path / HWM_NAME
        assert path.stat().st_size == 2 * SLOT_SIZE
        assert not list(tmp_path.glob("*.tmp"))
        for i in range(2, 6):
            m.write(HighWater(i, 1, 0, i - 1))
            assert hwm_mod.read(path) == (i, HighWater(i, 1, 0, i - 1))
        assert path.stat().st_size == 2 * SLOT_SIZE
        # A torn update damages only the slot being written: the previous value stands.
        seq = 5
        raw = bytearray(path.read_bytes())
        off = (seq % 2) * SLOT_SIZE
        raw[off + 10] ^= 0xFF
        path.write_bytes(bytes(raw))
        assert hwm_mod.read(path) == (4, HighWater(4, 1, 0, 3))
        # No valid slot at all: unknown, not lost.
        path.write_bytes(b"\0" * (2 * SLOT_SIZE))
        assert hwm_mod.read(path) is None
    finally:
        m.close()


def test_check_compares_log_end_term_vote_and_commit() -> None:
    mark = HighWater(10, 3, 2, 8)
    assert hwm_mod.check(HighWater(10, 3, 2, 8), mark) is None
    assert hwm_mod.check(HighWater(12, 4, 0, 9), mark) is None
    assert "log ends at index 9" in (hwm_mod.check(HighWater(9, 3, 2, 8), mark) or "")
    assert "term 2" in (hwm_mod.check(HighWater(10, 2, 2, 8), mark) or "")
    assert "vote" in (hwm_mod.check(HighWater(10, 3, 0, 8), mark) or "")
    assert "commit index is 7" in (hwm_mod.check(HighWater(10, 3, 2, 7), mark) or "")


# --- the leader's commit index: a rolled-back data dir ------------------------------------


async def test_commit_beyond_the_log_raises_log_lost_and_changes_nothing(tmp_path: Path) -> None:
    st = await written(tmp_path, 30, term=2)
    crash_copy(st.data_dir, tmp_path / "old")
    for i in range(31, 61):
        await st.save(HardState(2, 0, i - 1), ents(i, i, term=2))
    await st.close()
    # The whole dir, mark included, rolled back to the older copy: opens fine ...
    old = await SQLiteStorage.open(tmp_path / "old", conf_state=VOTERS)
    try:
        assert old.loss is None and old.last_index() == 30
        rn = RawNode(Config(id=1, storage=old, election_tick=10, heartbeat_tick=1))
        rn.step(Message(MessageType.HEARTBEAT, 1, 2, term=2, commit=20))  # a lagging one: fine
        assert rn.commit_index == 29
        rn.advance(rn.ready())  # its heartbeat response
        # ... but the leader's heartbeat carries min(match, commit) = 60 > 30.
        with pytest.raises(LogLost) as ei:
            rn.step(Message(MessageType.HEARTBEAT, 1, 2, term=2, commit=60))
        assert (ei.value.to_commit, ei.value.last_index) == (60, 30)
        assert isinstance(ei.value, CorruptionError)
        assert rn.commit_index == 29
        assert not rn.has_ready()  # no answer, nothing to persist
    finally:
        await old.close()


async def _until(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_a_rolled_back_data_dir_takes_the_member_out_of_service(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with LocalCluster(3, tmp_path) as cl:
        leader = await cl.wait_leader()
        victim = next(m for m in cl.members.values() if m is not leader)
        async with Client(cl.endpoints, command_timeout=10.0) as c:
            for i in range(20):
                await c.put(b"a%02d" % i, b"v")
            await cl.stop_member(victim.name)
            old = tmp_path / "old-copy"
            shutil.copytree(victim.data_dir, old)
            await cl.start_member(victim.name)
            for i in range(50):
                await c.put(b"b%02d" % i, b"v")
            assert leader.node is not None
            target = leader.node.applied_index
            await _until(lambda: victim.node is not None and victim.node.applied_index >= target)
            await cl.stop_member(victim.name)
            shutil.rmtree(victim.data_dir)
            shutil.copytree(old, victim.data_dir)  # the disk lost acknowledged writes
            with caplog.at_level(logging.CRITICAL, logger="raftkv.server.node"):
                m = await cl.start_member(victim.name)
                node = m.node
                assert node is not None
                await _until(lambda: node.fatal is not None)
                assert isinstance(node.fatal, LogLost)
                ok, reason = node.health()
                assert not ok and reason.startswith("log lost")
                async with Client([victim.client_addr], command_timeout=2.0) as one:
                    with pytest.raises(RaftKVError):
                        await one.get(b"a00", serializable=True)
                # the others keep serving
                await c.put(b"after", b"v")
                assert (await c.get(b"b49")).kvs
            lines = [
                r
                for r in caplog.records
                if r.name == "raftkv.server.node" and r.levelno >= logging.CRITICAL
            ]
            assert len(lines) == 1, [r.getMessage() for r in lines]
            msg = lines[0].getMessage()
            assert "raftkv member remove" in msg and "raftkv member add" in msg
            assert lines[0].exc_info is None

            # The verdict survives a restart: the mark now covers what it acknowledged.
            lost_at = node.fatal.to_commit
            await _until(
                lambda: (node.storage.high_water or HighWater(0, 0, 0, 0)).last_index >= lost_at
            )
            await cl.stop_member(victim.name)
            again = await cl.start_member(victim.name)
            assert again.node is not None and isinstance(again.node.fatal, StorageLoss)
            assert again.node.health()[0] is False
            node = again.node
            # The recovery the line names: remove it, empty its data dir, add it back.
            lead = await cl.wait_leader()
            assert lead.node is not None
            await lead.node.remove_member(node.id)
            await cl.stop_member(victim.name)
            shutil.rmtree(victim.data_dir)
            back = await cl.add_member(victim.name, learner=False)
            await cl.wait_converged()
            assert back.node is not None and back.node.fatal is None
            assert back.node.health() == (True, "")
            async with Client([back.client_addr], command_timeout=5.0) as one:
                assert (await one.get(b"b49", serializable=True)).kvs


# --- failed storage ------------------------------------------------------------------------


async def test_failed_storage_refuses_every_read_and_health_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with LocalCluster(1, tmp_path) as cl:
        m = next(iter(cl.members.values()))
        assert m.node is not None
        node = m.node
        async with Client(cl.endpoints, command_timeout=1.0) as c:
            await c.put(b"k", b"v1")
            assert (await c.get(b"k", serializable=True)).kvs[0].value == b"v1"
            # The next commit fails, as SQLite does on ENOSPC ("database or disk is full").
            monkeypatch.setenv(failpoints.ENV_VAR, "before_commit=error")
            failpoints.reload()
            try:
                with pytest.raises(RaftKVError):
                    await c.put(b"k", b"v2")
            finally:
                monkeypatch.delenv(failpoints.ENV_VAR)
                failpoints.reload()
            await _until(lambda: node.fatal is not None)
            ok, reason = node.health()
            assert not ok and reason.startswith("storage failure")
            with pytest.raises(StorageError):
                node.check_serving()
            with pytest.raises(RaftKVError):
                await c.get(b"k", serializable=True)
            with pytest.raises(RaftKVError):
                await c.get(b"k")
        async with Client(cl.endpoints, command_timeout=3.0) as fresh:  # no open breaker
            h = await fresh.health(cl.endpoints[0])
        assert not h.health and "storage failure" in h.reason


async def test_poisoned_storage_alone_makes_the_member_unhealthy(tmp_path: Path) -> None:
    """Storage that failed outside the Ready loop (a snapshot's commit) on an idle member."""
    async with LocalCluster(1, tmp_path) as cl:
        m = next(iter(cl.members.values()))
        assert m.node is not None
        node = m.node
        node.storage._failed = OSError(28, "No space left on device")
        ok, reason = node.health()
        assert not ok and "No space left" in reason
        with pytest.raises(StorageError):
            node.check_serving()
