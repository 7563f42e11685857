"""The native client: asyncio :class:`Client` and :class:`Watcher`, and the blocking
:class:`SyncClient` facade (docs/client.md).  Configure it with a :class:`ClientConfig`
(:class:`Timeouts`, :class:`Retries`, :class:`Limits`; docs/api.md, "The client")."""

from raftkv.client.client import Client
from raftkv.client.config import ClientConfig, Limits, Retries, Timeouts
from raftkv.client.connection import ClientConnection
from raftkv.client.router import BreakerState, CircuitBreaker, Router
from raftkv.client.sync import SyncClient, SyncWatcher
from raftkv.client.values import (
    DEFAULT_ENDPOINT,
    Bytesish,
    EndpointHealth,
    EndpointStatus,
    HashKVResponse,
    Member,
    MemberAddResponse,
    SnapshotInfo,
    WatchFilter,
    WatchResponse,
    key_range,
    op_delete,
    op_get,
    op_put,
    to_bytes,
)
from raftkv.client.watcher import Watcher

__all__ = [
    "DEFAULT_ENDPOINT",
    "BreakerState",
    "Bytesish",
    "CircuitBreaker",
    "Client",
    "ClientConfig",
    "ClientConnection",
    "EndpointHealth",
    "EndpointStatus",
    "HashKVResponse",
    "Limits",
    "Member",
    "MemberAddResponse",
    "Retries",
    "Router",
    "SnapshotInfo",
    "SyncClient",
    "SyncWatcher",
    "Timeouts",
    "WatchFilter",
    "WatchResponse",
    "Watcher",
    "key_range",
    "op_delete",
    "op_get",
    "op_put",
    "to_bytes",
]
