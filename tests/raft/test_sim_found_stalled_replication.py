"""Found by the simulator (seed 7, 300 steps): a lost append stalls a follower for good.

Fixed by the lead in 0fcddc5; this stays as the regression test.

A follower in REPLICATE state whose in-flight window is full (``max_inflight_msgs=1`` makes it
easy; any window fills under load) never receives the entries of an append that the network
lost: heartbeat responses call ``send_append``, which is paused because the window is still
full, and nothing else ever frees it.  etcd-io/raft frees one slot on every heartbeat response
in that state (``pr.Inflights.FreeFirstOne()``) so the retransmission goes out; raftkv's
core does the same.
"""

from __future__ import annotations

from jepsen_like.sim import network as net
from jepsen_like.sim.cluster import Cluster, SimNode
from jepsen_like.sim.faults import Fault, FaultKind, Target

_CLEAN = net.NetConfig(drop=0.0, duplicate=0.0, min_delay=1, max_delay=1)


def _elect(c: Cluster) -> SimNode:
    for _ in range(200):
        c.step()
        lead = c.leader()
        if lead is not None:
            return lead
    raise AssertionError("no leader elected on a clean network")


def test_lost_append_is_retransmitted_when_the_inflight_window_is_full() -> None:
    c = Cluster(seed=1, n=3, net_config=_CLEAN, max_size_per_msg=1 << 20, max_inflight=1)
    lead = _elect(c)
    for _ in range(10):
        c.step()
    victim = next(i for i in sorted(c.nodes) if i != lead.id)
    # Exactly the step that carries the append to ``victim`` loses it, then the link heals.
    c.net.set_partition(net.one_way([lead.id], [victim]))
    c.step((Fault(0, FaultKind.PROPOSE, Target.LEADER, arg=1),))
    c.net.heal()
    for _ in range(20 * c.election_tick):
        c.step()
    assert c.leader() is lead, "the scenario needs a stable leader"
    assert c.checker.ok, c.checker.violations
    assert c.nodes[victim].storage.last_index() == lead.storage.last_index(), (
        f"follower {victim} is stuck at {c.nodes[victim].storage.last_index()}, "
        f"leader at {lead.storage.last_index()}"
    )
