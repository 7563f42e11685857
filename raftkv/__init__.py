"""raftkv: an etcd-like, Raft-replicated key-value store in pure Python."""
