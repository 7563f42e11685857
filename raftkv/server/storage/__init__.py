"""Durable storage: SQLite write-ahead log + hard state, checksummed snapshot files."""

from raftkv.server.storage import failpoints
from raftkv.server.storage.snapfile import SnapshotReceiver, iter_snapshot_chunks
from raftkv.server.storage.sqlite import SQLiteStorage, StorageStats, entry_crc

__all__ = [
    "SQLiteStorage",
    "SnapshotReceiver",
    "StorageStats",
    "entry_crc",
    "failpoints",
    "iter_snapshot_chunks",
]
