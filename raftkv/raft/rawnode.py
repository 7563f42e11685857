"""The application's handle on the core: inputs in, ``Ready`` batches out.

Usage (the Ready contract, see docs/raft.md)::

    rn = RawNode(Config(id=1, storage=storage, rng=random.Random(seed)))
    while True:
        rn.tick()                     # every tick interval
        rn.step(msg)                  # for every message from a peer
        index, term = rn.propose(data)  # on the leader; NotLeader(hint) elsewhere
        if rn.has_ready():
            rd = rn.ready()
            send(rd.early_messages)                           # 0. may overlap step 1
            persist(rd.hard_state, rd.entries, rd.snapshot)   # 1. durable first
            send(rd.messages)                                 # 2. then talk
            apply(rd.snapshot, rd.committed_entries)          # 3. apply in order, once
            rn.advance(rd)                                    # 4. acknowledge
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from raftkv.raft.config import Config
from raftkv.raft.progress import ProgressState
from raftkv.raft.raft import Raft
from raftkv.raft.types import (
    LOCAL_MESSAGES,
    NONE,
    RESPONSE_MESSAGES,
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Ready,
    SoftState,
    StateRole,
)

_EARLY_TYPES = frozenset({MessageType.APP, MessageType.HEARTBEAT})
"""Message types a leader may send before its own Ready is durable (thesis 10.2.1)."""


class LogReader(Protocol):
    """A read-only view of the core's log: terms by index (checkers read it)."""

    def term(self, i: int) -> int: ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...


@dataclass(frozen=True, slots=True)
class PeerStatus:
    match: int
    next: int
    state: ProgressState
    is_learner: bool
    recent_active: bool


@dataclass(frozen=True, slots=True)
class Status:
    """A frozen picture of the core, for everything outside ``raftkv.raft``."""

    id: int
    term: int
    vote: int
    commit: int
    applied: int
    role: StateRole
    leader_id: int
    last_index: int
    conf_state: ConfState
    lead_transferee: int
    progress: Mapping[int, PeerStatus]
    """Each member's replication progress (read-only); only on the leader, empty elsewhere."""
    committed_in_term: bool
    """An entry of the current term is committed (a new leader's applied state is current
    once it has applied up to ``commit``)."""

    @property
    def voters(self) -> tuple[int, ...]:
        return self.conf_state.voters

    @property
    def learners(self) -> tuple[int, ...]:
        return self.conf_state.learners

    @property
    def is_leader(self) -> bool:
        return self.role == StateRole.LEADER


class RawNode:
    """A Raft core plus the bookkeeping that turns its state changes into ``Ready`` batches."""

    def __init__(self, config: Config) -> None:
        self.raft = Raft(config)
        """The core itself: for ``raftkv.raft`` and its own tests (tests/raft) only.  Everything
        else reads :meth:`status` and the properties below (tests/test_architecture.py)."""
        self._prev_soft = self.raft.soft_state()
        self._prev_hard = self.raft.hard_state()

    # --- inputs ------------------------------------------------------------------------

    def tick(self) -> None:
        self.raft.tick()

    def campaign(self) -> None:
        self.raft.step(Message(MessageType.HUP, frm=self.raft.id))

    def step(self, m: Message) -> None:
        """Feed one message received from a peer."""
        if m.type in LOCAL_MESSAGES:
            raise ValueError(f"cannot step a local message type {m.type.name}")
        if m.type in RESPONSE_MESSAGES and m.frm not in self.raft.prs.progress:
            return  # a response from a node that is not (or no longer) a member
        self.raft.step(m)

    def propose(self, data: bytes) -> tuple[int, int]:
        """Propose ``data``; returns the (index, term) the entry was given.  Raises
        :class:`NotLeader` with the leader hint on a non-leader, ``ProposalDropped`` when the
        leader refuses it (a transfer in progress, the uncommitted-size limit)."""
        return self._propose([Entry(0, 0, EntryType.NORMAL, data)])

    def propose_batch(self, datas: list[bytes]) -> tuple[int, int]:
        """Propose several entries at once (one append for all of them); returns the
        (index, term) of the last one (the first is ``index - len(datas) + 1``)."""
        return self._propose([Entry(0, 0, EntryType.NORMAL, d) for d in datas])

    def propose_conf_change(self, cc: ConfChange) -> tuple[int, int]:
        """Propose a membership change; returns the (index, term) it was given."""
        return self._propose([Entry(0, 0, EntryType.CONF_CHANGE, cc.encode())])

    def _propose(self, entries: list[Entry]) -> tuple[int, int]:
        r = self.raft
        r.propose(entries)
        # A leader appends its proposals at once (raft.append_entry): they end its log.
        return r.raft_log.last_index(), r.term

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        return self.raft.apply_conf_change(cc)

    def transfer_leadership(self, to: int) -> None:
        self.raft.step(Message(MessageType.TRANSFER_LEADER, frm=to))

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read point; a ``ReadState(index, ctx)`` comes in a Ready."""
        self.raft.step(Message(MessageType.READ_INDEX, context=ctx))

    def report_unreachable(self, node_id: int) -> None:
        """A send to ``node_id`` failed; ignored for a node that is not (or no longer) a
        member."""
        if node_id in self.raft.prs.progress:
            self.raft.step(Message(MessageType.UNREACHABLE, frm=node_id))

    def report_snapshot(self, node_id: int, ok: bool) -> None:
        self.raft.step(Message(MessageType.SNAP_STATUS, frm=node_id, reject=not ok))

    # --- outputs ----------------------------------------------------------------------

    def has_ready(self) -> bool:
        r = self.raft
        if r.bcast_pending:
            return True
        if r.soft_state() != self._prev_soft:
            return True
        hs = r.hard_state()
        if not hs.is_empty() and hs != self._prev_hard:
            return True
        log = r.raft_log
        return bool(
            log.has_pending_snapshot()
            or log.unstable.entries
            or r.msgs
            or log.has_next_committed_ents()
            or r.read_states
        )

    def ready(self) -> Ready:
        r = self.raft
        r.flush_bcast()
        log = r.raft_log
        ss = r.soft_state()
        hs = r.hard_state()
        hard: HardState | None = None if hs == self._prev_hard else hs
        if hard is not None and "no_persist_vote" in r.mutations:
            hard = HardState(term=hard.term, vote=NONE, commit=hard.commit)
        entries = tuple(log.unstable.entries)
        snapshot = log.unstable.snapshot
        msgs = tuple(r.msgs)
        early: tuple[Message, ...] = ()
        # Thesis 10.2.1: a leader's appends and heartbeats of its current term may leave
        # while this Ready is being persisted.  They promise nothing about the leader's own
        # disk, and the commit index that counts the leader's own new entries can only leave
        # in a later Ready, which the application asks for only once this one is persisted.
        # The term itself must already be durable (it is, unless this Ready also raises it:
        # a leader elected by itself alone).
        if msgs and r.state == StateRole.LEADER and hs.term == self._prev_hard.term:
            term = r.term
            early = tuple(m for m in msgs if m.type in _EARLY_TYPES and m.term == term)
            if early:
                msgs = tuple(m for m in msgs if not (m.type in _EARLY_TYPES and m.term == term))
        rd = Ready(
            soft_state=None if ss == self._prev_soft else ss,
            hard_state=hard,
            entries=entries,
            snapshot=snapshot,
            committed_entries=tuple(log.next_committed_ents()),
            messages=msgs,
            early_messages=early,
            read_states=tuple(r.read_states),
            must_sync=bool(entries)
            or hs.term != self._prev_hard.term
            or hs.vote != self._prev_hard.vote,
        )
        r.msgs = []
        r.read_states = []
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.hard_state is not None:
            self._prev_hard = hs
        return rd

    def advance(self, rd: Ready) -> None:
        """The application has persisted, sent and applied everything in ``rd``."""
        log = self.raft.raft_log
        if rd.entries:
            e = rd.entries[-1]
            log.stable_to(e.index, e.term)
        if rd.snapshot is not None:
            log.stable_snap_to(rd.snapshot.meta.index)
            log.applied_to(rd.snapshot.meta.index)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)
            self.raft.reduce_uncommitted_size(rd.committed_entries)
        # Read requests parked until an entry of this term was committed may go now.
        self.raft._release_pending_read_index_messages()

    # --- inspection -------------------------------------------------------------------

    def soft_state(self) -> SoftState:
        return self.raft.soft_state()

    def hard_state(self) -> HardState:
        """The current term, vote and commit index (what a Ready persists)."""
        return self.raft.hard_state()

    # Cheap single values, for hot paths that would not build a whole :class:`Status`.

    @property
    def id(self) -> int:
        return self.raft.id

    @property
    def term(self) -> int:
        return self.raft.term

    @property
    def leader_id(self) -> int:
        """The leader this node knows of (``NONE`` if none)."""
        return self.raft.lead

    @property
    def role(self) -> StateRole:
        return self.raft.state

    @property
    def is_leader(self) -> bool:
        return self.raft.state == StateRole.LEADER

    @property
    def commit_index(self) -> int:
        return self.raft.raft_log.committed

    @property
    def applied_index(self) -> int:
        return self.raft.raft_log.applied

    @property
    def last_index(self) -> int:
        return self.raft.raft_log.last_index()

    def log_reader(self) -> LogReader:
        """A read-only view of the log (terms by index, first and last index)."""
        return self.raft.raft_log

    def status(self) -> Status:
        r = self.raft
        progress: dict[int, PeerStatus] = {}
        if r.state == StateRole.LEADER:
            progress = {
                pid: PeerStatus(pr.match, pr.next, pr.state, pr.is_learner, pr.recent_active)
                for pid, pr in r.prs.progress.items()
            }
        return Status(
            id=r.id,
            term=r.term,
            vote=r.vote,
            commit=r.raft_log.committed,
            applied=r.raft_log.applied,
            role=r.state,
            leader_id=r.lead,
            last_index=r.raft_log.last_index(),
            conf_state=r.prs.conf_state(),
            lead_transferee=r.lead_transferee,
            progress=MappingProxyType(progress),
            committed_in_term=r.committed_entry_in_current_term(),
        )
