"""Whether a member is serving: why it stopped serving (and what the operator should do), its
health, and the status it reports."""

from __future__ import annotations

import contextlib
import logging
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raftkv.errors import RaftKVError, StorageError
from raftkv.raft import NONE, LogLost
from raftkv.server.config import HEALTH_MAX_APPLY_LAG
from raftkv.server.storage.hwm import StorageLoss

if TYPE_CHECKING:
    from raftkv.server.node import Node

log = logging.getLogger("raftkv.server.node")


def log_out_of_service(node: Node, e: BaseException) -> None:
    """The one critical line a member logs when it stops serving, with the recovery steps."""
    cfg = node.cfg
    if isinstance(e, LogLost | StorageLoss):
        log.critical(
            "acknowledged state lost, this member stops serving: %s. Recovery: from a "
            "healthy member run `raftkv member remove %x`, stop this member and empty its "
            "data dir %s, run `raftkv member add %s --peer-addr %s --client-addr %s` and "
            "start it with the printed `--initial-cluster-state existing --cluster-id %x`",
            e,
            node.id,
            cfg.data_dir,
            cfg.name,
            cfg.peer_addr,
            cfg.client_addr,
            node.cluster_id,
        )
    elif isinstance(e, StorageError):
        log.critical(
            "storage failure, this member stops serving: %s. Recovery: fix the disk, then "
            "restart the member (it recovers from what is on disk)",
            e,
        )
    else:  # a bug: make it loud
        log.critical("ready loop crashed, this member stops serving", exc_info=e)


async def mark_lost(node: Node, acknowledged: int) -> None:
    """Make a lost-log verdict survive a restart: raise the high-water mark over what the
    leader proved was acknowledged (raftkv.server.storage.sqlite.SQLiteStorage.mark_lost)."""
    try:
        await node.storage.mark_lost(acknowledged)
    except (OSError, RaftKVError) as err:  # the member is out of service either way
        log.warning("could not record the lost state in the high-water mark: %s", err)


def health(node: Node) -> tuple[bool, str]:
    """Whether ``node`` can serve: log intact, storage writable, a leader known, applied
    index not far behind the commit index; and why not."""
    if node.fatal is not None:
        if isinstance(node.fatal, LogLost | StorageLoss):
            return False, (
                f"log lost: {node.fatal} (remove this member and add it back with an "
                "empty data dir)"
            )
        return False, f"storage failure: {node.fatal}"
    failed = node.storage.failed
    if failed is not None:
        return False, f"storage failure: {failed}"
    if node.leader_id == NONE:
        return False, "no leader"
    lag = node.commit_index - node.applied_index
    if lag > HEALTH_MAX_APPLY_LAG:
        return False, f"applied index {node.applied_index} is {lag} entries behind commit"
    return True, ""


def status(node: Node, with_hash: bool = False) -> dict[str, Any]:
    """Member status; the content hash (a walk of the whole store) only on request."""
    st = node.rn.status()
    return {
        "id": node.id,
        "name": node.cfg.name,
        "cluster_id": node.cluster_id,
        "leader": st.leader_id,
        "term": st.term,
        "raft_index": st.last_index,
        "raft_applied_index": node.applied_index,
        "commit_index": st.commit,
        "revision": node.fsm.revision,
        "compact_revision": node.fsm.compact_revision,
        "db_size": db_size(node.cfg.data_dir),
        "hash": node.fsm.hash() if with_hash else 0,
        "is_learner": node.is_learner,
        "role": st.role.name.lower(),
        "version": package_version(),
    }


def db_size(data_dir: Path) -> int:
    total = 0
    for p in data_dir.rglob("*"):
        with contextlib.suppress(OSError):
            if p.is_file():
                total += p.stat().st_size
    return total


def package_version() -> str:
    try:
        return version("raftkv")
    except PackageNotFoundError:
        return "0.0.0"
