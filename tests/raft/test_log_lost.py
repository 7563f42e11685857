"""A follower whose log lost entries it acknowledged is told so by the leader's commit index.

The leader never sends a follower a commit index above what that follower acknowledged
(``min(match, committed)``, heartbeats included), so a lagging follower never sees one beyond
its log, and a follower that does has lost acknowledged entries: ``LogLost``, raised from
``step`` with nothing changed (etcd: "tocommit is out of range").
"""

from __future__ import annotations

import pytest

from raftkv.errors import CorruptionError
from raftkv.raft import HardState, LogLost, MemoryStorage, Message, MessageType, StateRole
from tests.raft.harness import Network


def _cluster() -> Network:
    net = Network()
    net.elect(1)
    for i in range(5):
        net.propose(1, b"v%d" % i)
    return net


def test_a_lagging_follower_never_gets_a_commit_beyond_its_log() -> None:
    net = _cluster()
    net.crash(3)
    for i in range(10):
        net.propose(1, b"w%d" % i)
    committed = net.nodes[1].rn.raft.raft_log.committed
    net.restart(3)
    # Heartbeats reach 3 before any append (appends to it are dropped): no LogLost.
    beats: list[int] = []

    def only_heartbeats(m: Message) -> bool:
        if m.to == 3 and m.type == MessageType.HEARTBEAT:
            beats.append(m.commit)
        return not (m.to == 3 and m.type == MessageType.APP)

    for _ in range(3):
        net.nodes[1].rn.tick()
        net.deliver(only_heartbeats)
    assert beats and max(beats) <= net.nodes[3].rn.raft.raft_log.last_index() < committed
    net.tick(1, ids=[1])  # appends flow again: it catches up
    assert net.nodes[3].rn.raft.raft_log.committed == committed


def test_a_follower_that_lost_acknowledged_entries_raises_log_lost() -> None:
    net = _cluster()
    old = net.nodes[3].storage
    last = old.last_index()
    assert net.nodes[1].rn.raft.prs.progress[3].match == last  # it acknowledged them all
    # Its disk loses the last 3 entries (and the hard state rolls back with them).
    keep = last - 3
    lost = MemoryStorage(net.conf)
    lost.append(old.entries(1, keep + 1))
    hs = old.initial_state()[0]
    lost.set_hard_state(HardState(hs.term, hs.vote, min(hs.commit, keep)))
    net.crash(3)
    net.nodes[3].storage = lost
    net.restart(3)
    node3 = net.nodes[3].rn
    before = (node3.raft.raft_log.committed, node3.raft.raft_log.last_index())
    with pytest.raises(LogLost) as ei:
        net.tick(1, ids=[1])  # the leader's next heartbeat carries commit = match = last
    assert isinstance(ei.value, CorruptionError)
    assert ei.value.last_index == keep and ei.value.to_commit > keep
    assert (node3.raft.raft_log.committed, node3.raft.raft_log.last_index()) == before
    assert net.role(1) == StateRole.LEADER
