"""Property: SQLiteStorage behaves like MemoryStorage, across batches, snapshots and reopens."""

from __future__ import annotations

import asyncio
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from raftkv.server.storage import SQLiteStorage

CS = ConfState((1, 2, 3))


def same(sq: SQLiteStorage, mem: MemoryStorage) -> None:
    assert (sq.first_index(), sq.last_index()) == (mem.first_index(), mem.last_index())
    assert sq.term(sq.first_index() - 1) == mem.term(mem.first_index() - 1)
    if mem.last_index() >= mem.first_index():
        lo, hi = mem.first_index(), mem.last_index() + 1
        assert sq.entries(lo, hi) == mem.entries(lo, hi)
    assert sq.snapshot() == mem.snapshot()
    assert sq.initial_state() == mem.initial_state()


@given(data=st.data())
@settings(max_examples=25, deadline=None)
def test_sqlite_storage_matches_memory_model(data: st.DataObject) -> None:
    asyncio.run(run_model(data))


async def run_model(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as d:
        sq = await SQLiteStorage.open(d, conf_state=CS)
        mem = MemoryStorage(CS)
        term = 1
        try:
            for _ in range(data.draw(st.integers(1, 12), label="steps")):
                op = data.draw(st.sampled_from(["append", "batch", "snap", "compact", "restore"]))
                if op in ("append", "batch"):
                    # Several Readies, queued together when op == "batch" (group commit).
                    readies = []
                    last = mem.last_index()
                    for _ in range(data.draw(st.integers(1, 3 if op == "batch" else 1))):
                        # Entries covered by a snapshot are committed: never rewritten.
                        floor = max(mem.first_index(), mem.snapshot().meta.index + 1)
                        lo = data.draw(st.integers(floor, max(floor, last + 1)), label="lo")
                        n = data.draw(st.integers(1, 4), label="n")
                        term += data.draw(st.integers(0, 1))
                        ents = [
                            Entry(term, i, data=f"{term}/{i}".encode()) for i in range(lo, lo + n)
                        ]
                        readies.append(ents)
                        last = lo + n - 1
                    for ents in readies:
                        mem.append(ents)
                        mem.set_hard_state(HardState(term, 1, mem.first_index() - 1))
                    hs = HardState(term, 1, mem.first_index() - 1)
                    await asyncio.gather(*(sq.save(hs, ents) for ents in readies))
                elif op == "snap" and mem.last_index() > mem.snapshot().meta.index:
                    i = data.draw(st.integers(mem.snapshot().meta.index + 1, mem.last_index()))
                    blob = f"state@{i}".encode()
                    assert await sq.create_snapshot(i, CS, blob) == mem.create_snapshot(i, CS, blob)
                elif op == "compact" and mem.snapshot().meta.index >= mem.first_index():
                    i = data.draw(st.integers(mem.first_index(), mem.snapshot().meta.index))
                    await sq.compact(i)
                    mem.compact(i)
                elif op == "restore":
                    term += 1
                    idx = mem.last_index() + data.draw(st.integers(-1, 3))
                    if idx > mem.snapshot().meta.index:
                        snap = Snapshot(SnapshotMeta(idx, term, CS), b"leader")
                        hs = HardState(term, 0, idx)
                        await sq.save(hs, [], snap)
                        mem.apply_snapshot(snap)
                        mem.set_hard_state(hs)
                same(sq, mem)
                if data.draw(st.booleans(), label="reopen"):
                    await sq.close()
                    sq = await SQLiteStorage.open(d)
                    same(sq, mem)
        finally:
            await sq.close()
