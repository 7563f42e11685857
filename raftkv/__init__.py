"""raftkv: an etcd-like, Raft-replicated key-value store in pure Python.

The public client surface is imported lazily, so ``import raftkv.raft`` (the sans-IO core)
does not pull in the client and its dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raftkv.client import Client, Watcher, WatchFilter, WatchResponse
    from raftkv.client.sync import SyncClient

__all__ = ["Client", "SyncClient", "WatchFilter", "WatchResponse", "Watcher"]

_LAZY = {
    "Client": "raftkv.client.client",
    "SyncClient": "raftkv.client.sync",
    "WatchFilter": "raftkv.client.client",
    "WatchResponse": "raftkv.client.client",
    "Watcher": "raftkv.client.client",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'raftkv' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
