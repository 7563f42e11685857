"""A member's settings: :class:`NodeConfig`, the test-only unsafe switches, the state machine
factory."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raftkv.api import DEFAULT_LIMITS, Limits
from raftkv.protocol.methods import MAX_REPLY_BYTES
from raftkv.raft import Config, LogStorage
from raftkv.state.fsm import KVStateMachine

UNSAFE_SWITCHES: dict[str, str] = {
    "stale_reads": "serve linearizable reads from local state, without ReadIndex",
    "ack_before_fsync": "send, apply and acknowledge a Ready before it is persisted",
    "apply_twice": "forget exactly-once: a retried write is applied again",
    "no_persist_vote": "leave the vote out of the persisted hard state (core mutation)",
}
"""Deliberately broken behaviours, for proving the jepsen_like harness can fail.  Enabled only
through ``RAFTKV_UNSAFE`` (comma-separated names) together with ``RAFTKV_TEST_HOOKS=1``."""

HEALTH_MAX_APPLY_LAG = 5_000
"""Committed entries not yet applied beyond which /health reports the member unhealthy."""


@dataclass(slots=True)
class NodeConfig:
    name: str
    data_dir: Path
    client_addr: str
    peer_addr: str
    initial_cluster: dict[str, str]
    """name -> peer address of the initial members (for ``existing``: the current ones)."""
    initial_cluster_state: str = "new"
    cluster_token: str = "raftkv"
    cluster_id: int | None = None
    """Required when joining an existing cluster (``member add`` prints it); a new cluster
    derives it from ``initial_cluster`` and the token."""
    tick_interval: float = 0.1
    election_tick: int = 10
    heartbeat_tick: int = 1
    snapshot_count: int = 50_000
    """Applied entries between two snapshots (then the log is compacted)."""
    fork_snapshot_keys: int = 2_000
    """States with at least this many keys are snapshotted by a forked child."""
    snapshot_catchup_entries: int = 5_000
    """Entries kept in the log after a snapshot so slow followers avoid a snapshot."""
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    max_pending_proposals: int = 10_000
    request_timeout: float = 5.0
    lease_interval: float = 0.25
    """How often the leader checks lease expiry and checkpoints."""
    auto_compaction_mode: str = "off"
    """``periodic``: keep about ``auto_compaction_retention`` seconds of history;
    ``revision``: keep the last ``auto_compaction_retention`` revisions; ``off``."""
    auto_compaction_retention: float = 0.0
    auto_compaction_interval: float = 5.0
    """How often ``revision`` mode checks (``periodic`` samples every retention / 10)."""
    fsm_factory: Callable[[], KVStateMachine] = field(default_factory=lambda: default_fsm)
    mutations: frozenset[str] = frozenset()
    """Test-only Raft core mutations (raftkv.raft.config.MUTATIONS)."""
    unsafe: frozenset[str] = frozenset()
    """Test-only unsafe switches (UNSAFE_SWITCHES) that jepsen_like must catch."""
    rng_seed: int | None = None
    max_reply_bytes: int = MAX_REPLY_BYTES
    """The largest range or txn reply this member builds; beyond it ReplyTooLarge."""
    max_client_connections: int = 1024
    """Most client connections open at once; more are closed at once (docs/security.md)."""
    client_idle_timeout: float = 600.0
    """Seconds after which a client connection with no request, watch or stream open is
    closed (0: never)."""
    client_handshake_timeout: float = 10.0
    """Seconds, in total, for a client connection to complete its handshake."""
    max_peer_connections: int = 256
    """Most inbound peer connections open at once (handshaking or handshaken)."""
    peer_handshake_timeout: float = 2.0
    """Seconds, in total, for a peer connection's handshake (either side)."""
    extra: dict[str, Any] = field(default_factory=dict)


def default_fsm(limits: Limits | None = None) -> KVStateMachine:
    from raftkv.state.lease import LeaseConfig

    # Stall detection: if the leader's lease loop was not scheduled for 2 s (a stall, a
    # SIGSTOP, a slow disk), deadlines move back by the gap instead of all expiring at once.
    return KVStateMachine(
        limits=limits or DEFAULT_LIMITS, lease_config=LeaseConfig(stall_threshold=2.0)
    )


def fsm_with_limits(limits: Limits) -> Callable[[], KVStateMachine]:
    """An ``fsm_factory`` with request limits (``raftkv serve --max-request-bytes`` ...)."""
    return lambda: default_fsm(limits)


def raft_config(cfg: NodeConfig, node_id: int, storage: LogStorage, applied: int) -> Config:
    """The core's configuration for a member: PreVote and CheckQuorum always on."""
    return Config(
        id=node_id,
        storage=storage,
        election_tick=cfg.election_tick,
        heartbeat_tick=cfg.heartbeat_tick,
        applied=applied,
        max_size_per_msg=cfg.max_size_per_msg,
        max_inflight_msgs=cfg.max_inflight_msgs,
        check_quorum=True,
        pre_vote=True,
        rng=random.Random(cfg.rng_seed if cfg.rng_seed is not None else os.urandom(8)),
        mutations=cfg.mutations
        | ({"no_persist_vote"} if "no_persist_vote" in cfg.unsafe else set()),
    )
