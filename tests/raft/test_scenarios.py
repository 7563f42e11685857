"""Scripted scenarios for the known Raft pitfalls, driven message by message."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from raftkv.errors import ConfChangeRefused, NotLeader, ProposalDropped
from raftkv.raft import ConfChange, ConfChangeType, Message, MessageType, StateRole
from tests.raft.harness import Network

MT = MessageType


def only_entries_up_to(
    index: int, leader: int, to: tuple[int, ...]
) -> Callable[[Message], bool | Message]:
    """Appends from ``leader`` reach only ``to``, and carry no entry past ``index``."""

    def keep(m: Message) -> bool | Message:
        if m.type != MT.APP or m.frm != leader:
            return True
        if m.to not in to:
            return False
        return replace(m, entries=tuple(e for e in m.entries if e.index <= index))

    return keep


def test_election_and_replication() -> None:
    net = Network()
    net.elect(1)
    assert net.leaders() == [1]
    for k in range(5):
        net.propose(1, b"v%d" % k)
    assert net.data(1) == net.data(2) == net.data(3) == [b"v%d" % k for k in range(5)]


def test_randomized_timeout_elects_exactly_one_leader() -> None:
    net = Network(seed=7)
    net.tick(40)
    assert len(net.leaders()) == 1


def test_proposal_on_follower_raises_not_leader_with_hint() -> None:
    net = Network()
    net.elect(2)
    with pytest.raises(NotLeader) as exc:
        net.nodes[1].rn.propose(b"x")
    assert exc.value.leader_hint == 2


def test_batching_many_proposals_travel_in_one_append() -> None:
    net = Network()
    net.elect(1)
    net.nodes[1].sent.clear()
    for k in range(100):
        net.nodes[1].rn.propose(b"p%d" % k)
    net.process(1)
    apps = [m for m in net.nodes[1].sent if m.type == MT.APP and m.to == 2]
    assert len(apps) == 1 and len(apps[0].entries) == 100
    net.deliver()
    assert len(net.data(3)) == 100


def test_flow_control_caps_inflight_appends() -> None:
    net = Network(max_inflight=2, max_size_per_msg=1)
    net.elect(1)
    net.isolate(2)
    net.nodes[1].sent.clear()
    for k in range(10):
        net.nodes[1].rn.propose(b"p%d" % k)
        net.process(1)
    apps = [m for m in net.nodes[1].sent if m.type == MT.APP and m.to == 2]
    assert len(apps) == 2  # max_inflight, not 10
    net.heal()
    net.deliver()
    net.tick(3)
    assert len(net.data(2)) == 10


def test_figure8_previous_term_entry_is_not_committed_by_counting() -> None:
    # Raft paper figure 8 / thesis 3.6.2.  One entry per append makes the race visible.
    # The paper's setting: no PreVote / CheckQuorum leases, so crashed leaders are replaced
    # at once.
    net = Network(ids=[1, 2, 3, 4, 5], max_size_per_msg=1, pre_vote=False, check_quorum=False)
    net.elect(1)
    t1 = net.term(1)
    # (a) S1 replicates an entry of its term to S2 only.
    net.nodes[1].rn.propose(b"old")
    net.deliver(keep=lambda m: not (m.frm == 1 and m.to in (3, 4, 5) and m.type == MT.APP))
    old_index = net.nodes[1].rn.raft.raft_log.last_index()
    assert net.commit(1) < old_index
    # (b) S1 crashes; S5 wins with S3, S4 and appends an entry locally only.
    net.crash(1)
    net.crash(2)
    net.nodes[5].rn.campaign()
    net.deliver(keep=lambda m: not (m.frm == 5 and m.type == MT.APP))
    assert net.role(5) == StateRole.LEADER
    net.nodes[5].rn.propose(b"new")
    net.deliver(keep=lambda m: not (m.frm == 5 and m.type == MT.APP))
    # (c) S5 crashes; S1 comes back and is elected by S2, S3.
    net.crash(5)
    net.restart(1)
    net.restart(2)
    for _ in range(3):  # S3 already voted in S5's term: S1 may need a second round
        if net.role(1) != StateRole.LEADER:
            net.nodes[1].rn.campaign()
            net.deliver(keep=lambda m: not (m.type == MT.APP and m.frm == 1))
    assert net.role(1) == StateRole.LEADER and net.term(1) > t1
    # S1 replicates the old-term entry to S3 but its own no-op never arrives anywhere.
    net.nodes[1].rn.tick()  # a heartbeat round restarts the paused probe
    net.deliver(keep=only_entries_up_to(old_index, leader=1, to=(2, 3)))
    raft3 = net.nodes[3].rn.raft
    assert raft3.raft_log.zero_term_on_err(old_index) == t1  # on S1, S2, S3: a majority
    # The safety rule: S1 must not count replicas of an earlier term's entry.
    assert net.commit(1) < old_index
    # (d) If S1 crashes now, S5 can win and overwrite the entry: it was rightly not committed.
    net.crash(1)
    net.restart(5)
    for _ in range(4):
        if net.role(5) != StateRole.LEADER:
            net.nodes[5].rn.campaign()
            net.deliver()
    assert net.role(5) == StateRole.LEADER
    net.tick(3)
    assert net.nodes[3].rn.raft.raft_log.zero_term_on_err(old_index) != t1


def test_figure8_mutation_commits_previous_term_entry() -> None:
    """The same scenario with the broken commit rule commits an entry that S5 later erases."""
    net = Network(
        ids=[1, 2, 3, 4, 5],
        max_size_per_msg=1,
        pre_vote=False,
        check_quorum=False,
        mutations=frozenset({"commit_prev_term_by_counting"}),
    )
    net.elect(1)
    net.nodes[1].rn.propose(b"old")
    net.deliver(keep=lambda m: not (m.frm == 1 and m.to in (3, 4, 5) and m.type == MT.APP))
    old_index = net.nodes[1].rn.raft.raft_log.last_index()
    net.crash(1)
    net.crash(2)
    net.nodes[5].rn.campaign()
    net.deliver(keep=lambda m: not (m.frm == 5 and m.type == MT.APP))
    net.nodes[5].rn.propose(b"new")
    net.deliver(keep=lambda m: not (m.frm == 5 and m.type == MT.APP))
    net.crash(5)
    net.restart(1)
    net.restart(2)
    for _ in range(3):
        if net.role(1) != StateRole.LEADER:
            net.nodes[1].rn.campaign()
            net.deliver(keep=lambda m: not (m.type == MT.APP and m.frm == 1))
    assert net.role(1) == StateRole.LEADER
    net.nodes[1].rn.tick()  # a heartbeat round restarts the paused probe
    net.deliver(keep=only_entries_up_to(old_index, leader=1, to=(2, 3)))
    assert net.commit(1) >= old_index  # the broken rule commits it


def test_isolated_old_leader_cannot_commit_or_serve_read_index() -> None:
    net = Network(check_quorum=False, pre_vote=False)
    net.elect(1)
    net.propose(1, b"a")
    net.isolate(1)
    net.elect(2)
    net.propose(2, b"b")
    # Node 1 still believes it leads (no CheckQuorum), but can neither commit nor read.
    assert net.role(1) == StateRole.LEADER
    before = net.commit(1)
    net.nodes[1].rn.propose(b"stale")
    net.nodes[1].rn.read_index(b"r1")
    net.deliver()
    net.tick(30, ids=[1])
    assert net.commit(1) == before
    assert net.nodes[1].read_states == []
    # Once healed, the old leader steps down and the stale proposal is discarded.
    net.heal()
    net.tick(5)
    assert net.role(1) == StateRole.FOLLOWER
    assert b"stale" not in net.data(1)
    assert net.data(1) == net.data(2)


def test_read_index_without_heartbeat_mutation_serves_stale_read() -> None:
    net = Network(
        check_quorum=False, pre_vote=False, mutations=frozenset({"read_index_without_heartbeat"})
    )
    net.elect(1)
    net.isolate(1)
    net.elect(2)
    net.propose(2, b"b")
    net.nodes[1].rn.read_index(b"r1")
    net.deliver()
    assert net.nodes[1].read_states and net.nodes[1].read_states[0].index < net.commit(2)


def test_read_index_on_leader_and_follower() -> None:
    net = Network()
    net.elect(1)
    net.propose(1, b"a")
    net.nodes[1].rn.read_index(b"lead")
    net.nodes[3].rn.read_index(b"foll")
    net.deliver()
    (rs1,) = net.nodes[1].read_states
    (rs3,) = net.nodes[3].read_states
    assert rs1.request_ctx == b"lead" and rs1.index == net.commit(1)
    assert rs3.request_ctx == b"foll" and rs3.index == net.commit(1)


def test_check_quorum_leader_steps_down_when_isolated() -> None:
    net = Network()
    net.elect(1)
    net.isolate(1)
    net.tick(25, ids=[1])
    assert net.role(1) == StateRole.FOLLOWER


def test_prevote_checkquorum_partial_partition_keeps_stable_leader() -> None:
    # Node 3 cannot reach the leader but can reach node 2.  Without PreVote it would bump its
    # term forever and disrupt the cluster; with PreVote + CheckQuorum nothing changes.
    net = Network()
    net.elect(1)
    term = net.term(1)
    net.cut(1, 3)
    net.tick(100)
    assert net.leaders() == [1]
    assert net.term(1) == term and net.term(3) == term
    net.propose(1, b"still-works")
    assert b"still-works" in net.data(2)


def test_without_prevote_partial_partition_disrupts() -> None:
    """Control experiment: the previous test would fail without PreVote/CheckQuorum."""
    net = Network(pre_vote=False, check_quorum=False)
    net.elect(1)
    term = net.term(1)
    net.cut(1, 3)
    net.tick(100)
    assert net.term(3) > term


def test_conf_change_refused_until_leader_commits_in_its_term() -> None:
    net = Network()
    net.nodes[1].rn.campaign()
    # Deliver the election but no appends: the leader's no-op is not committed yet.
    net.deliver(keep=lambda m: m.type != MT.APP)
    assert net.role(1) == StateRole.LEADER
    with pytest.raises(ConfChangeRefused):
        net.nodes[1].rn.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    net.tick(2)
    net.deliver()
    net.add_node(4)
    net.nodes[1].rn.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    # One change at a time: a second one is refused until the first is applied.
    with pytest.raises(ConfChangeRefused):
        net.nodes[1].rn.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 3))
    net.deliver()
    net.tick(3)
    assert net.nodes[1].rn.status().conf_state.learners == (4,)


def test_learner_catches_up_is_promoted_and_votes() -> None:
    net = Network()
    net.elect(1)
    for k in range(10):
        net.propose(1, b"k%d" % k)
    net.add_node(4)
    net.nodes[1].rn.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    net.deliver()
    net.tick(5)
    assert net.data(4) == net.data(1)
    # A learner does not count for the quorum: with 2 and 3 down nothing commits.
    net.crash(2)
    net.crash(3)
    before = net.commit(1)
    net.nodes[1].rn.propose(b"needs-quorum")
    net.deliver()
    assert net.commit(1) == before
    net.restart(2)
    net.restart(3)
    net.tick(5)
    net.nodes[net.leaders()[0]].rn.propose_conf_change(
        ConfChange(ConfChangeType.PROMOTE_LEARNER, 4)
    )
    net.deliver()
    net.tick(5)
    assert set(net.nodes[1].rn.status().conf_state.voters) == {1, 2, 3, 4}


def test_remove_leader_steps_down_and_cluster_reelects() -> None:
    net = Network()
    net.elect(1)
    net.propose(1, b"x")
    net.nodes[1].rn.propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 1))
    net.deliver()
    assert net.role(1) != StateRole.LEADER
    net.tick(40, ids=[2, 3])
    (leader,) = [i for i in (2, 3) if net.role(i) == StateRole.LEADER]
    net.propose(leader, b"after")
    assert b"after" in net.data(2) and b"after" in net.data(3)


def test_follower_behind_compaction_restores_from_snapshot() -> None:
    net = Network()
    net.elect(1)
    net.isolate(3)
    for k in range(50):
        net.propose(1, b"s%d" % k)
    net.snapshot_and_compact(1)
    assert net.nodes[1].storage.first_index() > 2
    net.heal()
    net.tick(5)
    snaps = [m for m in net.nodes[1].sent if m.type == MT.SNAP and m.to == 3]
    assert snaps, "the leader should have sent a snapshot"
    assert net.data(3) == net.data(1)
    net.propose(1, b"after-snap")
    assert net.data(3)[-1] == b"after-snap"


def test_leadership_transfer_to_lagging_node() -> None:
    net = Network()
    net.elect(1)
    net.isolate(3)
    for k in range(20):
        net.propose(1, b"t%d" % k)
    net.heal()
    net.nodes[1].rn.transfer_leadership(3)
    # While transferring, proposals are refused.
    with pytest.raises(ProposalDropped):
        net.nodes[1].rn.propose(b"during")
    net.deliver()
    assert net.role(3) == StateRole.LEADER
    assert net.data(3)[:20] == [b"t%d" % k for k in range(20)]
    net.propose(3, b"new-leader")
    assert net.data(1)[-1] == b"new-leader"


def test_fast_backtracking_skips_a_whole_term() -> None:
    net = Network()
    net.elect(1)
    # Node 1 keeps leading alone for a while: 50 entries of its term nobody else has.
    net.isolate(1)
    for k in range(50):
        net.nodes[1].rn.propose(b"orphan%d" % k)
    net.process(1)
    net.inflight.clear()
    # Meanwhile 2 and 3 elect a leader that writes 30 entries of a newer term, then hand
    # leadership over, so the final leader's first probe lands far beyond the divergence.
    net.tick(30, ids=[2, 3])
    (lead,) = [i for i in (2, 3) if net.role(i) == StateRole.LEADER]
    for k in range(30):
        net.propose(lead, b"real%d" % k)
    other = 5 - lead
    net.nodes[lead].rn.transfer_leadership(other)
    net.deliver()
    assert net.role(other) == StateRole.LEADER
    net.nodes[1].sent.clear()
    net.heal()
    net.tick(3)
    rejects = [m for m in net.nodes[1].sent if m.type == MT.APP_RESP and m.reject]
    assert 1 <= len(rejects) <= 3  # one round trip per term, not one per divergent entry
    assert net.data(1) == net.data(2) == net.data(3)


def test_vote_is_persisted_before_the_vote_response_leaves() -> None:
    net = Network()
    net.nodes[1].rn.campaign()
    net.process(1)
    node2 = net.nodes[2]
    for m in net.inflight:
        if m.to == 2:
            node2.rn.step(m)
    rd = node2.rn.ready()
    grants = [m for m in rd.messages if m.type in (MT.PRE_VOTE_RESP, MT.VOTE_RESP) and not m.reject]
    assert grants
    if any(m.type == MT.VOTE_RESP for m in grants):
        assert rd.hard_state is not None and rd.hard_state.vote == 1


def test_lost_append_with_full_inflight_window_does_not_stall() -> None:
    # Found by the simulator (seed 2): with a full in-flight window a lost append used to
    # stall a follower for good; heartbeat responses now free a slot.
    net = Network(max_inflight=1)
    net.elect(1)
    net.propose(1, b"a")
    net.nodes[1].rn.propose(b"lost")
    net.deliver(keep=lambda m: not (m.type == MT.APP and m.to == 3))
    net.nodes[1].rn.propose(b"b")
    net.deliver(keep=lambda m: not (m.type == MT.APP and m.to == 3))
    assert net.data(3) == [b"a"]
    net.tick(3)
    assert net.data(3) == [b"a", b"lost", b"b"]
