"""The simulated cluster's own mechanics: crash semantics, restart and replay, snapshots."""

from __future__ import annotations

from jepsen_like.sim import network as net
from jepsen_like.sim.cluster import Cluster, SimNode
from jepsen_like.sim.faults import Fault, FaultKind, Target

LOCKSTEP = net.NetConfig(drop=0.0, duplicate=0.0, min_delay=1, max_delay=1)


def state_of(n: SimNode) -> tuple[int, bytes]:
    """(applied index, hash chain) of a live node's app."""
    assert n.app is not None, f"node {n.id} is down"
    return n.app.applied, n.app.chain


def elected(c: Cluster) -> SimNode:
    for _ in range(200):
        c.step()
        lead = c.leader()
        if lead is not None:
            return lead
    raise AssertionError("no leader on a clean network")


def test_a_crash_loses_the_commit_index_written_without_fsync() -> None:
    c = Cluster(seed=2, n=3, net_config=LOCKSTEP, max_size_per_msg=1 << 20, max_inflight=256)
    lead = elected(c)
    follower = next(n for n in c.nodes.values() if n is not lead)
    c.step((Fault(0, FaultKind.PROPOSE, Target.LEADER, arg=3),))
    for _ in range(10):
        c.step()
        if follower.storage.hard_state.commit > follower.synced_commit:
            break  # the commit came in a must_sync=False Ready (no entries, same term/vote)
    before = follower.storage.hard_state
    assert before.commit > follower.synced_commit
    c.tags[9] = follower.id
    c.step((Fault(0, FaultKind.CRASH, Target.TAGGED, tag=9),))
    after = follower.storage.hard_state
    assert follower.rn is None and follower.app is None
    assert (after.term, after.vote) == (before.term, before.vote)
    assert after.commit == follower.synced_commit < before.commit
    c.step((Fault(0, FaultKind.RESTART, Target.TAGGED, tag=9),))
    for _ in range(20):
        c.step()
    assert state_of(follower) == state_of(lead)
    assert c.checker.ok, c.checker.violations


def test_restart_restores_the_app_from_the_snapshot_and_replays_the_log() -> None:
    c = Cluster(seed=4, n=3, net_config=LOCKSTEP)
    lead = elected(c)
    for _ in range(3):
        c.step((Fault(0, FaultKind.PROPOSE, Target.LEADER, arg=2),))
    for _ in range(5):
        c.step()
    node = next(n for n in c.nodes.values() if n is not lead)
    c.tags[1] = node.id
    c.step((Fault(0, FaultKind.SNAPSHOT, Target.TAGGED, tag=1, arg=1),))
    snap_index = node.storage.snapshot().meta.index
    assert snap_index > 1 and node.storage.first_index() == snap_index
    c.step((Fault(0, FaultKind.PROPOSE, Target.LEADER, arg=2),))
    for _ in range(10):
        c.step()
    want = state_of(node)
    assert want == state_of(lead) and want[0] > snap_index
    c.step((Fault(0, FaultKind.CRASH, Target.TAGGED, tag=1),))
    c.step((Fault(0, FaultKind.RESTART, Target.TAGGED, tag=1),))
    for _ in range(10):
        c.step()
    assert c.leader() is lead
    assert state_of(node) == want
    assert c.checker.ok, c.checker.violations


def test_crash_between_persist_and_send_keeps_the_entries_and_sends_nothing() -> None:
    c = Cluster(seed=5, n=3, net_config=LOCKSTEP)
    lead = elected(c)
    for _ in range(5):
        c.step()
    last = lead.storage.last_index()
    sent = c.net.sent
    c.step(
        (
            Fault(0, FaultKind.PROPOSE, Target.LEADER, arg=1, tag=1),
            Fault(0, FaultKind.CRASH, Target.TAGGED, arg=1, tag=1),
        )
    )
    assert lead.rn is None
    assert lead.storage.last_index() == last + 1
    others = [n for n in c.nodes.values() if n is not lead]
    assert all(n.storage.last_index() == last for n in others)
    # the followers still send (heartbeat responses and the like), the leader nothing
    assert c.net.sent - sent < 3


def test_liveness_check_fails_when_the_cluster_cannot_make_progress() -> None:
    c = Cluster(seed=6, n=3, net_config=LOCKSTEP)
    elected(c)
    c.heal_all()
    c.net.set_partition(net.split([[1], [2], [3]]))  # nobody reaches anybody
    assert not c.check_liveness(50)
    assert [v.invariant for v in c.checker.violations] == ["liveness"]


def test_liveness_check_passes_on_a_healed_cluster() -> None:
    c = Cluster(seed=6, n=3, net_config=LOCKSTEP)
    c.step((Fault(0, FaultKind.PARTITION, Target.ANY),))
    c.heal_all()
    assert c.check_liveness(20 * c.election_tick)
    assert c.checker.ok
