"""A member's settings: :class:`NodeConfig` (checked by :meth:`NodeConfig.validate`), its
fixed modes, the test-only switches kept apart (:class:`TestSwitches`), the state machine
factory."""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

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


class ClusterState(StrEnum):
    """``--initial-cluster-state``: found a new cluster, or join an existing one."""

    NEW = "new"
    EXISTING = "existing"


class CompactionMode(StrEnum):
    """``--auto-compaction-mode`` (see :func:`raftkv.server.duties.compaction_loop`)."""

    OFF = "off"
    PERIODIC = "periodic"
    REVISION = "revision"


@dataclass(frozen=True, slots=True)
class TestSwitches:
    """Settings only tests set, kept apart from the production ones (``NodeConfig.test``)."""

    __test__ = False  # not a pytest test class

    mutations: frozenset[str] = frozenset()
    """Raft core mutations (raftkv.raft.config.MUTATIONS), to prove the checks can fail."""
    unsafe: frozenset[str] = frozenset()
    """Unsafe server switches (UNSAFE_SWITCHES) that jepsen_like must catch; from the CLI only
    through ``RAFTKV_UNSAFE`` with ``RAFTKV_TEST_HOOKS=1``."""
    rng_seed: int | None = None
    """Seed of the core's election-timeout randomness (None: from os.urandom)."""


@dataclass(slots=True)
class NodeConfig:
    name: str
    data_dir: Path
    client_addr: str
    peer_addr: str
    initial_cluster: dict[str, str]
    """name -> peer address of the initial members (for ``existing``: the current ones)."""
    initial_cluster_state: ClusterState = ClusterState.NEW
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
    auto_compaction_mode: CompactionMode = CompactionMode.OFF
    """``periodic``: keep about ``auto_compaction_retention`` seconds of history;
    ``revision``: keep the last ``auto_compaction_retention`` revisions; ``off``."""
    auto_compaction_retention: float = 0.0
    auto_compaction_interval: float = 5.0
    """How often ``revision`` mode checks (``periodic`` samples every retention / 10)."""
    fsm_factory: Callable[[], KVStateMachine] = field(default_factory=lambda: default_fsm)
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
    test: TestSwitches = field(default_factory=TestSwitches)
    """What only tests set (core mutations, unsafe switches, the core's seed)."""

    def __post_init__(self) -> None:
        # The CLI and older callers pass the modes as strings; an unknown one is left for
        # validate() to name.
        with contextlib.suppress(ValueError):
            self.initial_cluster_state = ClusterState(self.initial_cluster_state)
        with contextlib.suppress(ValueError):
            self.auto_compaction_mode = CompactionMode(self.auto_compaction_mode)

    @property
    def unsafe(self) -> frozenset[str]:
        """The test-only unsafe switches (``test.unsafe``), read-only."""
        return self.test.unsafe

    def validate(self) -> None:
        """Check every setting; raise ValueError naming the first one that is wrong."""
        from raftkv.protocol.methods import split_addr
        from raftkv.raft.config import MUTATIONS

        def bad(setting: str, want: str) -> ValueError:
            return ValueError(f"{setting}: {want} (got {getattr(self, setting)!r})")

        if not self.name:
            raise bad("name", "must not be empty")
        if not str(self.data_dir):
            raise bad("data_dir", "must not be empty")

        def check_addr(addr: str) -> None:
            if split_addr(addr)[1] > 65535:
                raise ValueError(f"port of {addr!r} beyond 65535")

        for setting in ("client_addr", "peer_addr"):
            try:
                check_addr(getattr(self, setting))
            except (ValueError, TypeError, AttributeError) as e:
                raise bad(setting, f"must be HOST:PORT ({e})") from None
        if not self.initial_cluster:
            raise bad("initial_cluster", "must name at least this member")
        if self.name not in self.initial_cluster:
            raise bad("initial_cluster", f"must include this member ({self.name})")
        for member, addr in self.initial_cluster.items():
            try:
                check_addr(addr)
            except (ValueError, TypeError, AttributeError) as e:
                raise bad("initial_cluster", f"{member}'s peer address: {e}") from None
        if not isinstance(self.initial_cluster_state, ClusterState):
            raise bad("initial_cluster_state", f"must be one of {[str(c) for c in ClusterState]}")
        if not self.cluster_token:
            raise bad("cluster_token", "must not be empty")
        if self.cluster_id is not None and not 0 < self.cluster_id < 1 << 64:
            raise bad("cluster_id", "must be an unsigned 64-bit id other than 0")
        if self.initial_cluster_state == ClusterState.EXISTING and self.cluster_id is None:
            raise bad("cluster_id", "is required to join an existing cluster (--cluster-id)")
        positive = (
            "tick_interval",
            "request_timeout",
            "lease_interval",
            "auto_compaction_interval",
            "client_handshake_timeout",
            "peer_handshake_timeout",
        )
        for setting in positive:
            v = getattr(self, setting)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise bad(setting, "must be a finite number of seconds > 0")
        for setting in ("auto_compaction_retention", "client_idle_timeout"):
            v = getattr(self, setting)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise bad(setting, "must be a finite number >= 0")
        at_least = {
            "heartbeat_tick": 1,
            "election_tick": 2,
            "snapshot_count": 1,
            "fork_snapshot_keys": 0,
            "snapshot_catchup_entries": 0,
            "max_size_per_msg": 1,
            "max_inflight_msgs": 1,
            "max_pending_proposals": 1,
            "max_reply_bytes": 1,
            "max_client_connections": 1,
            "max_peer_connections": 1,
        }
        for setting, low in at_least.items():
            v = getattr(self, setting)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise bad(setting, f"must be an integer >= {low}")
        if self.election_tick <= self.heartbeat_tick:
            raise bad(
                "election_tick", f"must be greater than heartbeat_tick ({self.heartbeat_tick})"
            )
        if not isinstance(self.auto_compaction_mode, CompactionMode):
            raise bad("auto_compaction_mode", f"must be one of {[str(c) for c in CompactionMode]}")
        if not callable(self.fsm_factory):
            raise bad("fsm_factory", "must be callable")
        unknown = self.test.unsafe - UNSAFE_SWITCHES.keys()
        if unknown:
            raise ValueError(f"test.unsafe: unknown switches {sorted(unknown)}")
        unknown = self.test.mutations - MUTATIONS.keys()
        if unknown:
            raise ValueError(f"test.mutations: unknown mutations {sorted(unknown)}")


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
        rng=random.Random(seed if (seed := cfg.test.rng_seed) is not None else os.urandom(8)),
        mutations=cfg.test.mutations
        | ({"no_persist_vote"} if "no_persist_vote" in cfg.test.unsafe else set()),
    )
