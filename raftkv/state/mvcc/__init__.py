"""Multi-version key-value store with etcd v3 revision semantics (deterministic, in memory)."""

from raftkv.state.mvcc.store import KVStore
from raftkv.state.mvcc.txn import check_request, compare_ok

__all__ = ["KVStore", "check_request", "compare_ok"]
