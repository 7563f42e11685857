"""The Ready contract as the core states it: which messages may leave before the Ready is
durable (``Ready.early_messages``, thesis 10.2.1) and which wait (``Ready.messages``); the
(index, term) a proposal is given; the frozen status value."""

from __future__ import annotations

import dataclasses
import random

import pytest

from raftkv.errors import NotLeader
from raftkv.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    Ready,
    StateRole,
)

MT = MessageType


def make(nid: int, conf: ConfState) -> tuple[RawNode, MemoryStorage]:
    st = MemoryStorage(conf)
    cfg = Config(id=nid, storage=st, election_tick=10, heartbeat_tick=1, rng=random.Random(nid))
    return RawNode(cfg), st


def persist(st: MemoryStorage, rd: Ready) -> None:
    if rd.hard_state is not None:
        st.set_hard_state(rd.hard_state)
    if rd.snapshot is not None:
        st.apply_snapshot(rd.snapshot)
    st.append(rd.entries)


class Cluster:
    """Three voters; every Ready is persisted, then all its messages are delivered."""

    def __init__(self) -> None:
        conf = ConfState(voters=(1, 2, 3))
        self.nodes = {i: make(i, conf) for i in (1, 2, 3)}
        self.readies: dict[int, list[Ready]] = {i: [] for i in self.nodes}

    def pump(self) -> None:
        while True:
            out: list[Message] = []
            for i, (rn, st) in self.nodes.items():
                while rn.has_ready():
                    rd = rn.ready()
                    self.readies[i].append(rd)
                    persist(st, rd)
                    out += [*rd.early_messages, *rd.messages]
                    rn.advance(rd)
            if not out:
                return
            for m in out:
                self.nodes[m.to][0].step(m)

    def elect(self) -> RawNode:
        rn = self.nodes[1][0]
        rn.campaign()
        self.pump()
        assert rn.is_leader
        return rn


def test_a_leaders_appends_and_heartbeats_of_its_term_are_early() -> None:
    c = Cluster()
    rn = c.elect()
    index, term = rn.propose(b"x")
    assert (index, term) == (rn.last_index, rn.term)
    rd = rn.ready()
    assert [e.index for e in rd.entries] == [index]
    apps = [m for m in rd.early_messages if m.type == MT.APP]
    assert sorted(m.to for m in apps) == [2, 3]
    assert all(m.entries[-1].index == index and m.term == term for m in apps)
    assert not any(m.type in (MT.APP, MT.HEARTBEAT) for m in rd.messages)
    rn.advance(rd)
    rn.tick()  # heartbeat_tick=1: a heartbeat round
    rd = rn.ready()
    assert {m.type for m in rd.early_messages} == {MT.HEARTBEAT}
    assert rd.messages == ()


def test_what_promises_something_about_the_disk_waits_for_the_fsync() -> None:
    c = Cluster()
    rn1, _ = c.nodes[1]
    rn1.campaign()
    rd = rn1.ready()
    # A (pre-)candidate's vote requests, and the votes granted, carry a durable promise.
    assert rd.early_messages == ()
    assert {m.type for m in rd.messages} <= {MT.PRE_VOTE, MT.VOTE}
    assert rd.messages
    rn1.advance(rd)
    for m in rd.messages:
        c.nodes[m.to][0].step(m)
    c.pump()
    assert rn1.is_leader
    assert all(not rd.early_messages for rd in c.readies[2] + c.readies[3]), "followers"
    # A follower's acknowledgements are never early.
    rn1.propose(b"y")
    c.pump()
    acks = [m for rd in c.readies[2] for m in rd.messages if m.type == MT.APP_RESP]
    assert acks


def test_a_leader_whose_term_is_not_durable_yet_sends_nothing_early() -> None:
    """One voter and a learner: the voter wins its election within one Ready, which also
    raises its term; its first append to the learner must wait for that term on disk."""
    conf = ConfState(voters=(1,), learners=(2,))
    rn, st = make(1, conf)
    rn.campaign()
    assert rn.is_leader
    rn.tick()
    rn.propose(b"x")
    rd = rn.ready()
    assert rd.hard_state is not None and rd.hard_state.term == rn.term
    assert rd.early_messages == ()
    assert {m.type for m in rd.messages if m.to == 2} == {MT.APP, MT.HEARTBEAT}
    persist(st, rd)
    rn.advance(rd)
    rn.tick()  # now the term is durable: the same heartbeat is early
    rd = rn.ready()
    assert [m.type for m in rd.early_messages] == [MT.HEARTBEAT] and rd.messages == ()


def test_proposals_return_their_index_and_term() -> None:
    c = Cluster()
    rn = c.elect()
    last = rn.last_index
    assert rn.propose_batch([b"a", b"b", b"c"]) == (last + 3, rn.term)
    cc = ConfChange(ConfChangeType.ADD_LEARNER, 4)
    assert rn.propose_conf_change(cc) == (last + 4, rn.term)
    follower = c.nodes[2][0]
    with pytest.raises(NotLeader):
        follower.propose(b"no")


def test_status_is_a_frozen_value() -> None:
    c = Cluster()
    rn = c.elect()
    rn.propose(b"x")
    c.pump()
    st = rn.status()
    assert (st.id, st.role, st.leader_id, st.term) == (1, StateRole.LEADER, 1, rn.term)
    assert st.is_leader and st.committed_in_term
    assert (st.voters, st.learners) == ((1, 2, 3), ())
    assert st.commit == st.last_index == rn.commit_index == rn.last_index
    assert st.applied == rn.applied_index
    assert sorted(st.progress) == [1, 2, 3] and st.progress[2].match == st.last_index
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.term = 99  # type: ignore[misc]
    with pytest.raises(TypeError):
        st.progress[9] = st.progress[2]  # type: ignore[index]
    follower = c.nodes[2][0].status()
    assert follower.progress == {} and not follower.is_leader and follower.leader_id == 1
    log = rn.log_reader()
    assert log.term(log.last_index()) == rn.term


def test_unreachable_reports_for_non_members_are_ignored() -> None:
    c = Cluster()
    rn = c.elect()
    rn.report_unreachable(42)  # not a member: no effect, no error
    rn.report_unreachable(2)
    assert rn.status().progress[2].state.name == "PROBE"
