"""raftkv: an etcd-like, Raft-replicated key-value store in pure Python.

``raftkv.errors`` (the typed error tree) and ``raftkv.api`` (the etcd v3 request and response
values) are loaded with the package; they import nothing else.  The client surface
(``Client``, ``SyncClient``, ``Watcher``, ``WatchFilter``, ``WatchResponse``) is imported on
first use, so ``import raftkv.raft`` (the sans-IO core) does not pull in the client and its
dependencies.
"""

from typing import TYPE_CHECKING

from raftkv import api, errors

if TYPE_CHECKING:
    from raftkv.client import Client, Watcher, WatchFilter, WatchResponse
    from raftkv.client.sync import SyncClient

__all__ = ["Client", "SyncClient", "WatchFilter", "WatchResponse", "Watcher", "api", "errors"]

_LAZY = {
    "Client": "raftkv.client.client",
    "SyncClient": "raftkv.client.sync",
    "WatchFilter": "raftkv.client.client",
    "WatchResponse": "raftkv.client.client",
    "Watcher": "raftkv.client.client",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'raftkv' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    """The public names and the subpackages imported so far; no helpers."""
    loaded = (n for n, v in globals().items() if getattr(v, "__name__", None) == f"raftkv.{n}")
    return sorted({*__all__, *loaded})


del TYPE_CHECKING
