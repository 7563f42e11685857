"""Subprocess for the crash tests: saves one entry per Ready and prints ``ACK <index>``.

Run with ``RAFTKV_FAILPOINTS`` set; the parent reads the ACK lines (flushed after each save
returns), waits for the crash, reopens the store and checks that nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import sys

from raftkv.raft.types import Entry, HardState
from raftkv.server.storage import SQLiteStorage


async def main(data_dir: str, count: int, snapshot_every: int) -> None:
    st = await SQLiteStorage.open(data_dir)
    start = st.last_index() + 1
    for i in range(start, start + count):
        await st.save(HardState(term=1, vote=1, commit=i), [Entry(1, i, data=f"v{i}".encode())])
        print(f"ACK {i}", flush=True)
        if snapshot_every and i % snapshot_every == 0:
            await st.create_snapshot(i, st.snapshot().meta.conf_state, f"state@{i}".encode())
            print(f"SNAP {i}", flush=True)
    await st.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
