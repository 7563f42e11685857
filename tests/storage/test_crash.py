"""Crash safety: kill a writer process at a failpoint, reopen, nothing acknowledged is lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from raftkv.server.storage import SQLiteStorage, failpoints
from raftkv.server.storage.sqlite import SNAP_DIR

WRITER = Path(__file__).with_name("crash_writer.py")


def run_writer(data_dir: Path, spec: str, count: int, snapshot_every: int = 0) -> list[str]:
    env = {**os.environ, failpoints.ENV_VAR: spec}
    proc = subprocess.run(
        [sys.executable, str(WRITER), str(data_dir), str(count), str(snapshot_every)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == failpoints.CRASH_EXIT_CODE, proc.stderr
    assert "failpoint" in proc.stderr
    return proc.stdout.split()


def acked(words: list[str], tag: str = "ACK") -> list[int]:
    return [int(words[i + 1]) for i, w in enumerate(words) if w == tag]


@pytest.mark.parametrize("point", ["before_commit", "after_commit"])
async def test_crash_at_commit_loses_nothing_acknowledged(tmp_path: Path, point: str) -> None:
    words = run_writer(tmp_path, f"{point}=crash@5", 20)
    ack = acked(words)
    assert ack == [1, 2, 3, 4]  # the 5th save never returned
    st = await SQLiteStorage.open(tmp_path)
    # before_commit: the 5th Ready is not durable; after_commit: durable but never acked.
    assert st.last_index() == (4 if point == "before_commit" else 5)
    for i in ack:
        assert st.entries(i, i + 1)[0].data == f"v{i}".encode()
    assert st.hard_state.commit >= ack[-1]
    # The store keeps working after the crash.
    await st.close()
    words = run_writer(tmp_path, "after_commit=crash@3", 20)
    st = await SQLiteStorage.open(tmp_path)
    assert st.last_index() >= acked(words)[-1]
    await st.close()


async def test_crash_while_writing_snapshot_keeps_previous_one(tmp_path: Path) -> None:
    # Snapshots every 3 entries; the 2nd snapshot write dies between fsync and rename.
    words = run_writer(tmp_path, "snapshot_write=crash@2", 20, snapshot_every=3)
    assert acked(words, "SNAP") == [3] and acked(words)[-1] == 6
    assert any(p.name.startswith(".tmp-") for p in (tmp_path / SNAP_DIR).iterdir())
    st = await SQLiteStorage.open(tmp_path)
    assert st.snapshot().meta.index == 3 and st.snapshot().data == b"state@3"
    assert st.last_index() == 6
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / SNAP_DIR).iterdir())
    await st.close()
