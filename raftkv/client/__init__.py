"""The native client: asyncio :class:`Client` and :class:`Watcher`, and the blocking
:class:`SyncClient` facade (docs/client.md)."""

from raftkv.client.client import (
    DEFAULT_ENDPOINT,
    BreakerState,
    Bytesish,
    CircuitBreaker,
    Client,
    EndpointHealth,
    EndpointStatus,
    HashKVResponse,
    Member,
    MemberAddResponse,
    SnapshotInfo,
    Watcher,
    WatchFilter,
    WatchResponse,
    key_range,
    op_delete,
    op_get,
    op_put,
    to_bytes,
)
from raftkv.client.sync import SyncClient, SyncWatcher

__all__ = [
    "DEFAULT_ENDPOINT",
    "BreakerState",
    "Bytesish",
    "CircuitBreaker",
    "Client",
    "EndpointHealth",
    "EndpointStatus",
    "HashKVResponse",
    "Member",
    "MemberAddResponse",
    "SnapshotInfo",
    "SyncClient",
    "SyncWatcher",
    "WatchFilter",
    "WatchResponse",
    "Watcher",
    "key_range",
    "op_delete",
    "op_get",
    "op_put",
    "to_bytes",
]
