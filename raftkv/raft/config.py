"""Configuration of one Raft core, and the test-only mutation switches."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from raftkv.raft.storage import LogStorage

NO_LIMIT = 1 << 62

# Test-only switches that deliberately break a safety rule.  The simulator
# (``python -m jepsen_like.sim --mutation NAME``) must report a violation for each of them:
# a check that cannot fail proves nothing.  Never set outside tests.
MUTATIONS: dict[str, str] = {
    "commit_prev_term_by_counting": (
        "the leader commits entries of earlier terms by counting replicas (breaks Raft 5.4.2)"
    ),
    "no_persist_vote": "the vote is left out of the persisted hard state (lost on a crash)",
    "read_index_without_heartbeat": (
        "the leader answers ReadIndex at once, without confirming leadership with a quorum"
    ),
    "skip_log_matching_check": (
        "a follower accepts an append without checking the term of the previous entry"
    ),
    "vote_ignores_log": "a node grants its vote without checking the candidate's log is up to date",
}


@dataclass(slots=True)
class Config:
    id: int
    storage: LogStorage
    election_tick: int = 10
    """Ticks without a leader's word before a follower campaigns.  The real timeout is drawn
    uniformly from ``[election_tick, 2 * election_tick)`` with ``rng``."""
    heartbeat_tick: int = 1
    applied: int = 0
    """The last index the application had applied when it (re)started this core."""
    max_size_per_msg: int = 1 << 20
    """Max bytes of entries in one append message (flow control)."""
    max_committed_size_per_ready: int = 1 << 26
    max_inflight_msgs: int = 256
    """Max append messages in flight to one follower (flow control)."""
    max_uncommitted_entries_size: int = NO_LIMIT
    """Leader refuses proposals (ProposalDropped) past this many uncommitted bytes."""
    check_quorum: bool = True
    pre_vote: bool = True
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    mutations: frozenset[str] = frozenset()

    def validate(self) -> None:
        if self.id == 0:
            raise ValueError("cannot use 0 as a node id")
        if self.heartbeat_tick <= 0:
            raise ValueError("heartbeat tick must be greater than 0")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("election tick must be greater than heartbeat tick")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max inflight messages must be greater than 0")
        unknown = self.mutations - MUTATIONS.keys()
        if unknown:
            raise ValueError(f"unknown mutation(s): {sorted(unknown)}")
