"""The sans-IO Raft core: a pure state machine driven by ticks, messages and Ready/advance.

See docs/raft.md for the Ready contract and the invariants.
"""

from raftkv.raft.config import MUTATIONS, Config
from raftkv.raft.log import LogLost
from raftkv.raft.rawnode import LogReader, PeerStatus, RawNode, Status
from raftkv.raft.storage import LogStorage, MemoryStorage
from raftkv.raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Ready,
    Snapshot,
    SnapshotMeta,
    SoftState,
    StateRole,
)

__all__ = [
    "MUTATIONS",
    "NONE",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Config",
    "Entry",
    "EntryType",
    "HardState",
    "LogLost",
    "LogReader",
    "LogStorage",
    "MemoryStorage",
    "Message",
    "MessageType",
    "PeerStatus",
    "RawNode",
    "ReadState",
    "Ready",
    "Snapshot",
    "SnapshotMeta",
    "SoftState",
    "StateRole",
    "Status",
]
