"""Offline maintenance: restoring a snapshot file into a fresh data directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raftkv.api import RangeRequest
from raftkv.errors import CorruptionError, StorageError
from raftkv.protocol.methods import cluster_id, member_id
from raftkv.raft import ConfState, HardState, Snapshot, SnapshotMeta
from raftkv.server.membership import MemberRecord, node_snapshot, restore_node_snapshot
from raftkv.server.storage.sqlite import SQLiteStorage
from raftkv.state.fsm import KVStateMachine


async def restore_snapshot(
    file: Path, data_dir: Path, name: str, initial_cluster: dict[str, str], token: str = "raftkv"
) -> dict[str, Any]:
    """Seed ``data_dir`` for member ``name`` of a new cluster with the state in ``file``.

    The file is what ``raftkv snapshot save`` wrote (a node snapshot; its state-machine part
    carries a checksum that is verified here).  The new cluster starts its log right after the
    snapshot's index, with the new member list; keys, revisions and leases are kept.
    """
    if name not in initial_cluster:
        raise ValueError(f"--initial-cluster must include {name}")
    raw = file.read_bytes()
    fsm = KVStateMachine()
    try:
        restore_node_snapshot(fsm, raw)
    except CorruptionError as e:
        raise CorruptionError(f"{file}: {e}") from e
    index = max(fsm.applied_index, 1)
    token_ids = {member_id(n, token): n for n in initial_cluster}
    members = {i: MemberRecord(i, n, initial_cluster[n]) for i, n in token_ids.items()}
    conf = ConfState(voters=tuple(sorted(token_ids)))
    if data_dir.exists() and any(data_dir.iterdir()):
        raise StorageError(f"{data_dir} is not empty: restore needs a fresh data dir")
    storage = await SQLiteStorage.open(
        data_dir,
        conf_state=conf,
        cluster_id=cluster_id(initial_cluster, token),
        node_id=member_id(name, token),
    )
    try:
        snap = Snapshot(SnapshotMeta(index, 1, conf), node_snapshot(fsm, members))
        await storage.save(HardState(term=1, vote=0, commit=index), [], snap)
    finally:
        await storage.close()
    keys = fsm.range(RangeRequest(b"\0", b"\0", count_only=True, serializable=True)).count
    return {"revision": fsm.revision, "index": index, "keys": keys}
