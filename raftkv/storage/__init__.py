"""Durable storage: SQLite write-ahead log + hard state, checksummed snapshot files."""

from raftkv.storage import failpoints
from raftkv.storage.snapfile import SnapshotReceiver, iter_snapshot_chunks
from raftkv.storage.sqlite import SQLiteStorage, StorageStats, entry_crc

__all__ = [
    "SQLiteStorage",
    "SnapshotReceiver",
    "StorageStats",
    "entry_crc",
    "failpoints",
    "iter_snapshot_chunks",
]
