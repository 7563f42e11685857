"""`snapshot save` from a running cluster, `snapshot restore` into a new one."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftkv import Client
from raftkv.errors import CorruptionError, StorageError
from raftkv.server.maintenance import restore_snapshot
from raftkv.testing import LocalCluster


async def test_save_then_restore_into_a_new_cluster(tmp_path: Path) -> None:
    backup = tmp_path / "backup.snap"
    async with LocalCluster(3, tmp_path / "old") as old, Client(old.endpoints) as c:
        for i in range(50):
            await c.put(b"k%02d" % i, b"v%d" % i)
        await c.delete(b"k00")
        rev = (await c.get(b"k01")).header.revision
        await c.snapshot_save(str(backup))
    new = LocalCluster(3, tmp_path / "new")
    for m in new.members.values():
        info = await restore_snapshot(backup, m.data_dir, m.name, new.initial_cluster)
        assert info["keys"] == 49 and info["revision"] == rev
    async with new, Client(new.endpoints) as c:
        resp = await c.get(b"k", prefix=True)
        assert [kv.key for kv in resp.kvs] == [b"k%02d" % i for i in range(1, 50)]
        assert resp.header.revision == rev  # revisions carry over
        put = await c.put(b"after", b"restore")
        assert put.header.revision == rev + 1
        await new.wait_converged()


async def test_restore_refuses_a_corrupt_file_or_a_used_data_dir(tmp_path: Path) -> None:
    backup = tmp_path / "backup.snap"
    async with LocalCluster(3, tmp_path / "old") as old, Client(old.endpoints) as c:
        await c.put(b"x", b"y")
        await c.snapshot_save(str(backup))
    raw = bytearray(backup.read_bytes())
    raw[-5] ^= 0xFF
    bad = tmp_path / "bad.snap"
    bad.write_bytes(bytes(raw))
    cluster = {"n1": "127.0.0.1:1"}
    with pytest.raises(CorruptionError):
        await restore_snapshot(bad, tmp_path / "d1", "n1", cluster)
    used = tmp_path / "d2"
    used.mkdir()
    (used / "something").write_text("x")
    with pytest.raises(StorageError, match="not empty"):
        await restore_snapshot(backup, used, "n1", cluster)
