"""Multi-version key-value store with etcd v3 revision semantics (deterministic, in memory)."""

from raftkv.mvcc.store import KVStore
from raftkv.mvcc.txn import check_request, compare_ok

__all__ = ["KVStore", "check_request", "compare_ok"]
