"""The Raft state machine: election, replication, commit, snapshots, membership, transfer, reads.

No I/O, no clocks, no global randomness: time arrives as ``tick()``, messages as ``step()``, and
the randomized election timeout comes from the injected ``Config.rng``.  Structure and names
follow etcd-io/raft's ``raft.go`` (``step_leader`` / ``step_candidate`` / ``step_follower``,
``become_*``, ``maybe_commit``, ``bcast_append``, ``send_*``).  Paper references are to
Ongaro's thesis "Consensus: Bridging Theory and Practice" (2014) unless noted.

Broken invariants raise ``AssertionError`` and are never caught; expected conditions raise the
typed errors of :mod:`raftkv.errors` (``NotLeader``, ``ProposalDropped``, ``ConfChangeRefused``).
A leader's commit index beyond our log (acknowledged entries lost from this member's disk)
raises :class:`~raftkv.raft.log.LogLost` from ``step``, with nothing changed: the application
must take the member out of service.
"""

from __future__ import annotations

from collections.abc import Callable

from raftkv.errors import (
    Compacted,
    ConfChangeRefused,
    NotLeader,
    ProposalDropped,
    SnapshotTemporarilyUnavailable,
    Unavailable,
)
from raftkv.raft.config import Config
from raftkv.raft.log import RaftLog
from raftkv.raft.progress import (
    Progress,
    ProgressState,
    ProgressTracker,
    ReadOnly,
    VoteResult,
)
from raftkv.raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Snapshot,
    SoftState,
    StateRole,
    vote_resp_type,
)

MT = MessageType

CAMPAIGN_PRE_ELECTION = b"CampaignPreElection"
CAMPAIGN_ELECTION = b"CampaignElection"
CAMPAIGN_TRANSFER = b"CampaignTransfer"


class Raft:
    def __init__(self, config: Config) -> None:
        config.validate()
        self.id = config.id
        self.config = config
        self.rng = config.rng
        self.mutations = config.mutations
        self.raft_log = RaftLog(config.storage, config.max_committed_size_per_ready)
        hs, cs = config.storage.initial_state()

        self.max_msg_size = config.max_size_per_msg
        self.max_uncommitted_size = config.max_uncommitted_entries_size
        self.uncommitted_size = 0
        self.prs = ProgressTracker(config.max_inflight_msgs)
        self.check_quorum = config.check_quorum
        self.pre_vote = config.pre_vote
        self.election_timeout = config.election_tick
        self.heartbeat_timeout = config.heartbeat_tick

        self.term = 0
        self.vote = NONE
        self.state = StateRole.FOLLOWER
        self.lead = NONE
        self.lead_transferee = NONE
        # Index of the latest pending conf change; a new one is refused until it is applied.
        self.pending_conf_index = 0
        self.read_only = ReadOnly()
        self.pending_read_index_messages: list[Message] = []

        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = 0
        # Set when proposals were appended; appends are broadcast once per Ready (batching).
        self.bcast_pending = False

        self._step_fn: Callable[[Message], None] = self.step_follower
        self._tick_fn: Callable[[], None] = self.tick_election

        self.apply_conf_state(cs)
        if not hs.is_empty():
            self.load_state(hs)
        if config.applied > 0:
            self.raft_log.applied_to(config.applied)
        self.become_follower(self.term, NONE)

    # --- state -------------------------------------------------------------------------

    def load_state(self, hs: HardState) -> None:
        if hs.commit < self.raft_log.committed or hs.commit > self.raft_log.last_index():
            raise AssertionError(
                f"{self.id}: hard state commit {hs.commit} out of range "
                f"[{self.raft_log.committed}, {self.raft_log.last_index()}]"
            )
        self.raft_log.committed = hs.commit
        self.term = hs.term
        self.vote = hs.vote

    def hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.raft_log.committed)

    def soft_state(self) -> SoftState:
        return SoftState(leader_id=self.lead, role=self.state)

    def promotable(self) -> bool:
        """Can this node campaign? (a voter, with no snapshot waiting to be persisted)."""
        return self.id in self.prs.voters and not self.raft_log.has_pending_snapshot()

    def past_election_timeout(self) -> bool:
        return self.election_elapsed >= self.randomized_election_timeout

    def reset_randomized_election_timeout(self) -> None:
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(
            self.election_timeout
        )

    # --- sending ------------------------------------------------------------------------

    def send(self, m: Message) -> None:
        self.msgs.append(m)

    def _msg(self, type: MessageType, to: int, **kw: object) -> Message:
        """A message from this node at the current term (the common case)."""
        return Message(type, to, self.id, self.term, **kw)  # type: ignore[arg-type]

    def send_append(self, to: int) -> None:
        self.maybe_send_append(to, send_if_empty=True)

    def maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        """Send an append (or a snapshot) to ``to`` if flow control allows; True if sent."""
        pr = self.prs.progress[to]
        if pr.is_paused():
            return False
        last_index = pr.next - 1
        try:
            last_term = self.raft_log.term(last_index)
            ents: list[Entry] = []
            if pr.state != ProgressState.REPLICATE or not pr.inflights.full():
                ents = self.raft_log.entries(pr.next, self.max_msg_size)
        except (Compacted, Unavailable):
            return self._send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        self.send(
            self._msg(
                MT.APP,
                to,
                log_term=last_term,
                index=last_index,
                entries=tuple(ents),
                commit=self.raft_log.committed,
            )
        )
        pr.update_on_entries_send(len(ents), pr.next)
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False
        try:
            snap = self.raft_log.snapshot()
        except SnapshotTemporarilyUnavailable:
            return False
        if snap.is_empty():
            raise AssertionError("need a non-empty snapshot to send")
        pr.become_snapshot(snap.meta.index)
        self.send(self._msg(MT.SNAP, to, snapshot=snap))
        return True

    def send_heartbeat(self, to: int, ctx: bytes) -> None:
        # Never send a commit index the follower may not have: it could not apply it.
        commit = min(self.prs.progress[to].match, self.raft_log.committed)
        self.send(self._msg(MT.HEARTBEAT, to, commit=commit, context=ctx))

    def bcast_append(self) -> None:
        for pid in self.prs.progress:
            if pid != self.id:
                self.send_append(pid)

    def bcast_heartbeat(self) -> None:
        self.bcast_heartbeat_with_ctx(self.read_only.last_pending_request_ctx())

    def bcast_heartbeat_with_ctx(self, ctx: bytes) -> None:
        for pid in self.prs.progress:
            if pid != self.id:
                self.send_heartbeat(pid, ctx)

    def flush_bcast(self) -> None:
        """Send the appends that proposals since the last Ready made necessary (batching)."""
        if self.bcast_pending:
            self.bcast_pending = False
            if self.state == StateRole.LEADER:
                for pid in self.prs.progress:
                    if pid != self.id:
                        self.maybe_send_append(pid, send_if_empty=False)

    # --- commit -------------------------------------------------------------------------

    def maybe_commit(self) -> bool:
        mci = self.prs.committed()
        if "commit_prev_term_by_counting" in self.mutations:
            if mci > self.raft_log.committed:
                self.raft_log.commit_to(mci)
                return True
            return False
        return self.raft_log.maybe_commit(mci, self.term)

    def committed_entry_in_current_term(self) -> bool:
        return self.raft_log.zero_term_on_err(self.raft_log.committed) == self.term

    # --- role changes -------------------------------------------------------------------

    def reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.reset_randomized_election_timeout()
        self.abort_leader_transfer()
        self.prs.reset_votes()
        last = self.raft_log.last_index()
        for pid, pr in list(self.prs.progress.items()):
            npr = Progress(last + 1, self.prs.max_inflight, pr.is_learner)
            if pid == self.id:
                npr.match = last
            self.prs.progress[pid] = npr
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.read_only = ReadOnly()
        self.bcast_pending = False

    def become_follower(self, term: int, lead: int) -> None:
        self._step_fn = self.step_follower
        self.reset(term)
        self._tick_fn = self.tick_election
        self.lead = lead
        self.state = StateRole.FOLLOWER

    def become_candidate(self) -> None:
        if self.state == StateRole.LEADER:
            raise AssertionError("invalid transition [leader -> candidate]")
        self._step_fn = self.step_candidate
        self.reset(self.term + 1)
        self._tick_fn = self.tick_election
        self.vote = self.id
        self.state = StateRole.CANDIDATE

    def become_pre_candidate(self) -> None:
        if self.state == StateRole.LEADER:
            raise AssertionError("invalid transition [leader -> pre-candidate]")
        # PreVote (thesis 9.6): neither the term nor the vote changes.
        self._step_fn = self.step_candidate
        self.prs.reset_votes()
        self._tick_fn = self.tick_election
        self.lead = NONE
        self.state = StateRole.PRE_CANDIDATE

    def become_leader(self) -> None:
        if self.state == StateRole.FOLLOWER:
            raise AssertionError("invalid transition [follower -> leader]")
        self._step_fn = self.step_leader
        self.reset(self.term)
        self._tick_fn = self.tick_heartbeat
        self.lead = self.id
        self.state = StateRole.LEADER
        pr = self.prs.progress.get(self.id)
        if pr is not None:
            pr.become_replicate()
            pr.recent_active = True
        # Raft 5.4.2 / thesis 3.6.2: a new leader appends a no-op to commit earlier entries.
        if not self.append_entries([Entry(term=0, index=0)]):
            raise AssertionError("empty entry was dropped")
        # Block conf changes until the no-op (an entry of this leader's own term) is applied:
        # the fix for the single-server membership bug (Ongaro, raft-dev, 2015).
        self.pending_conf_index = self.raft_log.last_index()

    def hup(self, transfer: bool = False) -> None:
        if self.state == StateRole.LEADER:
            return
        if not self.promotable():
            return
        if self.has_unapplied_conf_changes():
            return
        if transfer:
            self.campaign(CAMPAIGN_TRANSFER)
        elif self.pre_vote:
            self.campaign(CAMPAIGN_PRE_ELECTION)
        else:
            self.campaign(CAMPAIGN_ELECTION)

    def has_unapplied_conf_changes(self) -> bool:
        lo = self.raft_log.applied + 1
        hi = self.raft_log.committed + 1
        if lo >= hi:
            return False
        try:
            ents = self.raft_log.slice(max(lo, self.raft_log.first_index()), hi)
        except (Compacted, Unavailable):
            return False
        return any(e.type == EntryType.CONF_CHANGE for e in ents)

    def campaign(self, kind: bytes) -> None:
        if kind == CAMPAIGN_PRE_ELECTION:
            self.become_pre_candidate()
            vote_msg = MT.PRE_VOTE
            term = self.term + 1  # the term we would campaign in
        else:
            self.become_candidate()
            vote_msg = MT.VOTE
            term = self.term
        _, _, result = self.poll(self.id, vote_resp_type(vote_msg), True)
        if result == VoteResult.WON:
            # A single-voter cluster wins at once.
            if kind == CAMPAIGN_PRE_ELECTION:
                self.campaign(CAMPAIGN_ELECTION)
            else:
                self.become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if kind == CAMPAIGN_TRANSFER else b""
        last_index = self.raft_log.last_index()
        last_term = self.raft_log.last_term()
        for pid in sorted(self.prs.voters):
            if pid == self.id:
                continue
            self.send(
                Message(
                    vote_msg, pid, self.id, term, log_term=last_term, index=last_index, context=ctx
                )
            )

    def poll(self, pid: int, t: MessageType, granted: bool) -> tuple[int, int, VoteResult]:
        self.prs.record_vote(pid, granted)
        return self.prs.tally_votes()

    # --- ticks --------------------------------------------------------------------------

    def tick(self) -> None:
        self._tick_fn()

    def tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.past_election_timeout():
            self.election_elapsed = 0
            self.hup()

    def tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self.step(Message(MT.CHECK_QUORUM, frm=self.id))
            # A transfer that did not finish within an election timeout is abandoned.
            if self.state == StateRole.LEADER and self.lead_transferee != NONE:
                self.abort_leader_transfer()
        if self.state != StateRole.LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self.step(Message(MT.BEAT, frm=self.id))

    # --- step ---------------------------------------------------------------------------

    def step(self, m: Message) -> None:
        """Handle one message (network or local); the heart of the algorithm."""
        if m.term == 0:
            pass  # local message
        elif m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self.check_quorum
                    and self.lead != NONE
                    and self.election_elapsed < self.election_timeout
                )
                if not force and in_lease:
                    # Thesis 4.2.3: a node that heard from a live leader within the minimum
                    # election timeout ignores vote requests (stops disruptive servers).
                    return
            if m.type == MT.PRE_VOTE:
                pass  # never change our term in response to a PreVote
            elif m.type == MT.PRE_VOTE_RESP and not m.reject:
                # A granted pre-vote carries the future term; we bump it on winning.
                pass
            elif m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self.become_follower(m.term, m.frm)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and m.type in (MT.HEARTBEAT, MT.APP):
                # A stale leader (e.g. after a partition) learns of the newer term this way;
                # with CheckQuorum/PreVote our term would otherwise never reach it.
                self.send(self._msg(MT.APP_RESP, m.frm))
            elif m.type == MT.PRE_VOTE:
                self.send(self._msg(MT.PRE_VOTE_RESP, m.frm, reject=True))
            return

        if m.type == MT.HUP:
            self.hup()
        elif m.type in (MT.VOTE, MT.PRE_VOTE):
            can_vote = (
                self.vote == m.frm
                or (self.vote == NONE and self.lead == NONE)
                or (m.type == MT.PRE_VOTE and m.term > self.term)
            )
            up_to_date = self.raft_log.is_up_to_date(m.index, m.log_term)
            if "vote_ignores_log" in self.mutations:
                up_to_date = True
            if can_vote and up_to_date:
                # The response carries the candidate's term (for PreVote, the future term).
                self.send(Message(vote_resp_type(m.type), m.frm, self.id, m.term))
                if m.type == MT.VOTE:
                    self.election_elapsed = 0
                    self.vote = m.frm
            else:
                self.send(Message(vote_resp_type(m.type), m.frm, self.id, self.term, reject=True))
        else:
            self._step_fn(m)

    def step_leader(self, m: Message) -> None:
        t = m.type
        if t == MT.BEAT:
            self.bcast_heartbeat()
            return
        if t == MT.CHECK_QUORUM:
            # Thesis 6.2: a leader that cannot reach a quorum for an election timeout steps
            # down, so clients stop waiting on it and a minority leader cannot serve reads.
            if not self.prs.quorum_active():
                self.become_follower(self.term, NONE)
            for pid, pr in self.prs.progress.items():
                if pid != self.id:
                    pr.recent_active = False
            return
        if t == MT.PROP:
            raise AssertionError("proposals go through Raft.propose()")
        if t == MT.READ_INDEX:
            self._leader_read_index(m)
            return

        peer = self.prs.progress.get(m.frm)
        if peer is None:
            return
        pr = peer
        if t == MT.APP_RESP:
            self._handle_append_response(m, pr)
        elif t == MT.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE and pr.inflights.full():
                # An append in the window may have been lost: let one more go, so a lossy
                # link cannot stall replication for good (the follower's reject then
                # sends us back to probing).
                pr.inflights.free_first_one()
            if pr.state == ProgressState.SNAPSHOT:
                # The snapshot may have been lost; retry after an election timeout of silence.
                pr.snapshot_wait += 1
                if pr.snapshot_wait > self.election_timeout:
                    pr.become_probe()
            if pr.match < self.raft_log.last_index():
                self.send_append(m.frm)
            if not m.context:
                return
            acks = self.read_only.recv_ack(m.frm, m.context)
            if acks is None or self.prs.vote_result(acks) != VoteResult.WON:
                return
            for rs in self.read_only.advance(m.context):
                resp = self._response_to_read_index_req(rs.req, rs.index)
                if resp is not None:
                    self.send(resp)
        elif t == MT.SNAP_STATUS:
            if pr.state != ProgressState.SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            # Wait for an append response (success) or a heartbeat interval (failure).
            pr.probe_sent = True
        elif t == MT.UNREACHABLE:
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()
        elif t == MT.TRANSFER_LEADER:
            self._handle_transfer_leader(m, pr)

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                # Fast backtracking (thesis 5.3 / etcd): skip the follower's whole term.
                next_probe, _ = self.raft_log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self.send_append(m.frm)
            return
        old_paused = pr.is_paused()
        if pr.maybe_update(m.index) or (pr.match == m.index and pr.state == ProgressState.PROBE):
            if pr.state == ProgressState.PROBE:
                pr.become_replicate()
            elif pr.state == ProgressState.SNAPSHOT and pr.match + 1 >= self.raft_log.first_index():
                pr.become_probe()
                pr.become_replicate()
            elif pr.state == ProgressState.REPLICATE:
                pr.inflights.free_le(m.index)
            if self.maybe_commit():
                self._release_pending_read_index_messages()
                self.bcast_append()
            elif old_paused:
                self.send_append(m.frm)
            while self.maybe_send_append(m.frm, send_if_empty=False):
                pass
            if m.frm == self.lead_transferee and pr.match == self.raft_log.last_index():
                self.send_timeout_now(m.frm)

    def _handle_transfer_leader(self, m: Message, pr: Progress) -> None:
        if pr.is_learner:
            return
        transferee = m.frm
        if self.lead_transferee != NONE:
            if self.lead_transferee == transferee:
                return
            self.abort_leader_transfer()
        if transferee == self.id:
            return
        # Thesis 3.10: stop accepting proposals, catch the target up, then TimeoutNow.
        self.election_elapsed = 0
        self.lead_transferee = transferee
        if pr.match == self.raft_log.last_index():
            self.send_timeout_now(transferee)
        else:
            self.send_append(transferee)

    def send_timeout_now(self, to: int) -> None:
        self.send(self._msg(MT.TIMEOUT_NOW, to))

    def abort_leader_transfer(self) -> None:
        self.lead_transferee = NONE

    def _leader_read_index(self, m: Message) -> None:
        if self.prs.is_singleton():
            resp = self._response_to_read_index_req(m, self.raft_log.committed)
            if resp is not None:
                self.send(resp)
            return
        if not self.committed_entry_in_current_term():
            # Thesis 6.4 step 1: the leader's commit index is only known to be current once
            # it has committed an entry of its own term; park the request until then.
            self.pending_read_index_messages.append(m)
            return
        self._send_read_index_response(m)

    def _send_read_index_response(self, m: Message) -> None:
        if "read_index_without_heartbeat" in self.mutations:
            resp = self._response_to_read_index_req(m, self.raft_log.committed)
            if resp is not None:
                self.send(resp)
            return
        # Thesis 6.4 steps 2-3: record the commit index, then confirm leadership with a
        # heartbeat round; the read is released once a quorum acknowledged it.
        self.read_only.add_request(self.raft_log.committed, m)
        self.read_only.recv_ack(self.id, m.context)
        self.bcast_heartbeat_with_ctx(m.context)

    def _release_pending_read_index_messages(self) -> None:
        if not self.pending_read_index_messages:
            return
        if not self.committed_entry_in_current_term():
            return
        msgs, self.pending_read_index_messages = self.pending_read_index_messages, []
        for m in msgs:
            self._send_read_index_response(m)

    def _response_to_read_index_req(self, req: Message, read_index: int) -> Message | None:
        if req.frm in (NONE, self.id):
            self.read_states.append(ReadState(index=read_index, request_ctx=req.context))
            return None
        return self._msg(MT.READ_INDEX_RESP, req.frm, index=read_index, context=req.context)

    def step_candidate(self, m: Message) -> None:
        my_vote_resp = MT.PRE_VOTE_RESP if self.state == StateRole.PRE_CANDIDATE else MT.VOTE_RESP
        t = m.type
        if t == MT.APP:
            self.become_follower(m.term, m.frm)
            self.handle_append_entries(m)
        elif t == MT.HEARTBEAT:
            self.become_follower(m.term, m.frm)
            self.handle_heartbeat(m)
        elif t == MT.SNAP:
            self.become_follower(m.term, m.frm)
            self.handle_snapshot(m)
        elif t == my_vote_resp:
            _, _, result = self.poll(m.frm, t, not m.reject)
            if result == VoteResult.WON:
                if self.state == StateRole.PRE_CANDIDATE:
                    self.campaign(CAMPAIGN_ELECTION)
                else:
                    self.become_leader()
                    self.bcast_append()
            elif result == VoteResult.LOST:
                # A pre-candidate that lost keeps its term: become_follower(term) is a no-op
                # on the term, so the cluster is not disturbed.
                self.become_follower(self.term, NONE)

    def step_follower(self, m: Message) -> None:
        t = m.type
        if t == MT.APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self.handle_append_entries(m)
        elif t == MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self.handle_heartbeat(m)
        elif t == MT.SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self.handle_snapshot(m)
        elif t == MT.TRANSFER_LEADER:
            if self.lead != NONE:
                self.send(Message(MT.TRANSFER_LEADER, self.lead, m.frm))
        elif t == MT.TIMEOUT_NOW:
            # Leadership transfer: campaign at once, skipping PreVote and the leader lease.
            self.hup(transfer=True)
        elif t == MT.READ_INDEX:
            if self.lead == NONE:
                raise ProposalDropped("no leader to serve the read index")
            # Forwarded as a local message (term 0) so the leader treats it like its own.
            self.send(Message(MT.READ_INDEX, self.lead, m.frm or self.id, context=m.context))
        elif t == MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(index=m.index, request_ctx=m.context))

    # --- follower handlers -----------------------------------------------------------------

    def handle_append_entries(self, m: Message) -> None:
        if m.index < self.raft_log.committed:
            self.send(self._msg(MT.APP_RESP, m.frm, index=self.raft_log.committed))
            return
        check = True
        if "skip_log_matching_check" in self.mutations and m.index <= self.raft_log.last_index():
            check = False
        last_new = self.raft_log.maybe_append(m.index, m.log_term, m.commit, m.entries, check)
        if last_new is not None:
            self.send(self._msg(MT.APP_RESP, m.frm, index=last_new))
            return
        # Reject with a hint: the largest index <= m.index whose term <= m.log_term, so the
        # leader can skip all entries of terms we do not share in one round trip.
        hint_index = min(m.index, self.raft_log.last_index())
        hint_index, hint_term = self.raft_log.find_conflict_by_term(hint_index, m.log_term)
        self.send(
            self._msg(
                MT.APP_RESP,
                m.frm,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
                log_term=hint_term,
            )
        )

    def handle_heartbeat(self, m: Message) -> None:
        self.raft_log.commit_to(m.commit)
        self.send(self._msg(MT.HEARTBEAT_RESP, m.frm, context=m.context))

    def handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap is None:
            return
        if self.restore(snap):
            self.send(self._msg(MT.APP_RESP, m.frm, index=self.raft_log.last_index()))
        else:
            self.send(self._msg(MT.APP_RESP, m.frm, index=self.raft_log.committed))

    def restore(self, snap: Snapshot) -> bool:
        """Install a leader's snapshot; False if it is stale or our log already matches it."""
        if snap.meta.index <= self.raft_log.committed:
            return False
        if self.state != StateRole.FOLLOWER:
            # Defence in depth: only a follower may restore.
            self.become_follower(self.term + 1, NONE)
            return False
        if self.raft_log.match_term(snap.meta.index, snap.meta.term):
            # Our log already holds the snapshot's last entry: just fast-forward the commit.
            self.raft_log.commit_to(snap.meta.index)
            return False
        self.raft_log.restore(snap)
        self.prs = ProgressTracker(self.prs.max_inflight)
        self.apply_conf_state(snap.meta.conf_state)
        return True

    # --- proposals -----------------------------------------------------------------------

    def propose(self, entries: list[Entry]) -> None:
        """Append client data at the leader (entries' term and index are filled in here)."""
        if self.state != StateRole.LEADER:
            raise NotLeader(self.lead)
        if self.id not in self.prs.progress:
            raise ProposalDropped("this leader was removed from the cluster")
        if self.lead_transferee != NONE:
            raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee}")
        for i, e in enumerate(entries):
            if e.type == EntryType.CONF_CHANGE:
                self._check_conf_change(ConfChange.decode(e.data))
                self.pending_conf_index = self.raft_log.last_index() + i + 1
        if not self.append_entries(entries):
            raise ProposalDropped("too many uncommitted bytes")
        self.bcast_pending = True

    def _check_conf_change(self, cc: ConfChange) -> None:
        if self.pending_conf_index > self.raft_log.applied:
            raise ConfChangeRefused(
                "a membership change is pending, or this leader has not yet applied an entry "
                f"of its own term (pending conf index {self.pending_conf_index}, "
                f"applied {self.raft_log.applied})"
            )
        nid = cc.node_id
        if nid == NONE:
            raise ConfChangeRefused("node id 0 is not valid")
        voters, learners = self.prs.voters, self.prs.learners
        if cc.type == ConfChangeType.ADD_VOTER and nid in voters:
            raise ConfChangeRefused(f"node {nid} is already a voter")
        if cc.type == ConfChangeType.ADD_LEARNER and (nid in voters or nid in learners):
            raise ConfChangeRefused(f"node {nid} is already a member")
        if cc.type == ConfChangeType.PROMOTE_LEARNER and nid not in learners:
            raise ConfChangeRefused(f"node {nid} is not a learner")
        if cc.type == ConfChangeType.REMOVE_NODE:
            if nid not in voters and nid not in learners:
                raise ConfChangeRefused(f"node {nid} is not a member")
            if voters == {nid}:
                raise ConfChangeRefused("cannot remove the last voter")

    def append_entries(self, entries: list[Entry]) -> bool:
        li = self.raft_log.last_index()
        term = self.term
        ents = [Entry(term, li + 1 + i, e.type, e.data) for i, e in enumerate(entries)]
        size = sum(len(e.data) for e in ents)
        if (
            self.uncommitted_size > 0
            and size > 0
            and self.uncommitted_size + size > self.max_uncommitted_size
        ):
            return False
        self.uncommitted_size += size
        li = self.raft_log.append(ents)
        self.prs.progress[self.id].maybe_update(li)
        self.maybe_commit()
        return True

    def reduce_uncommitted_size(self, ents: list[Entry] | tuple[Entry, ...]) -> None:
        if self.state != StateRole.LEADER:
            return
        size = sum(len(e.data) for e in ents)
        self.uncommitted_size = max(0, self.uncommitted_size - size)

    # --- membership --------------------------------------------------------------------

    def apply_conf_state(self, cs: ConfState) -> None:
        """Set voters and learners (at start and on snapshot restore)."""
        last = self.raft_log.last_index()
        self.prs.voters = set(cs.voters)
        self.prs.learners = set(cs.learners)
        for nid in (*cs.voters, *cs.learners):
            if nid not in self.prs.progress:
                pr = Progress(last + 1, self.prs.max_inflight, nid in self.prs.learners)
                if nid == self.id:
                    pr.match = last
                self.prs.progress[nid] = pr
            else:
                self.prs.progress[nid].is_learner = nid in self.prs.learners
        for nid in list(self.prs.progress):
            if nid not in self.prs.voters and nid not in self.prs.learners:
                del self.prs.progress[nid]

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed membership change; called by the application when it applies it."""
        voters, learners = set(self.prs.voters), set(self.prs.learners)
        nid = cc.node_id
        if cc.type in (ConfChangeType.ADD_VOTER, ConfChangeType.PROMOTE_LEARNER):
            learners.discard(nid)
            voters.add(nid)
        elif cc.type == ConfChangeType.ADD_LEARNER:
            if nid not in voters:
                learners.add(nid)
        elif cc.type == ConfChangeType.REMOVE_NODE:
            voters.discard(nid)
            learners.discard(nid)
        cs = ConfState(tuple(sorted(voters)), tuple(sorted(learners)))
        was_member = nid in self.prs.progress
        self.apply_conf_state(cs)
        if nid in self.prs.progress and not was_member:
            self.prs.progress[nid].recent_active = True
        if self.state != StateRole.LEADER:
            return cs
        if self.id not in self.prs.voters:
            # A leader removed (or demoted) steps down; the remaining voters elect a new one.
            self.become_follower(self.term, NONE)
            return cs
        if not self.prs.voters:
            return cs
        if self.maybe_commit():
            self.bcast_append()
        else:
            for pid in self.prs.progress:
                if pid != self.id:
                    self.maybe_send_append(pid, send_if_empty=False)
        if self.lead_transferee != NONE and self.lead_transferee not in self.prs.voters:
            self.abort_leader_transfer()
        return cs
