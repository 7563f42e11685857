"""Found by the simulator: a node added later never learns the initial voters from the log.

The initial members start with ``MemoryStorage(ConfState(voters=(1, 2, 3)))`` and nothing
else, so the initial configuration lives only in each member's storage, not in the log.  A
node added later starts empty; the leader catches it up with appends from index 1 (its log
is not compacted, so no snapshot is sent), and the new node's configuration becomes just the
conf changes it applies: ``(4,)``.  It then elects itself leader alone, in a term where the
real cluster has another leader (Election Safety broken).  etcd avoids this by writing the
initial members as ConfChange entries at the head of the log (``raft.Bootstrap``); raftkv
starts every initial member from the same bootstrap snapshot.
"""

from __future__ import annotations

import pytest

from jepsen_like.sim import network as net
from jepsen_like.sim.cluster import Cluster
from jepsen_like.sim.faults import Fault, FaultKind, Target

_CLEAN = net.NetConfig(drop=0.0, duplicate=0.0, min_delay=1, max_delay=1)


@pytest.mark.parametrize("bootstrap_snapshot", [True, False], ids=["snapshot", "conf-only"])
def test_node_added_through_the_log_learns_the_initial_voters(bootstrap_snapshot: bool) -> None:
    """With the bootstrap contract (docs/raft.md: initial members start from a snapshot at
    (1, 1) holding the configuration) the new node learns the voters.  The "conf-only"
    case is the broken convention; it must still fail, which shows the check can fail."""
    c = Cluster(seed=3, n=3, net_config=_CLEAN, bootstrap_snapshot=bootstrap_snapshot)
    for _ in range(200):
        c.step()
        if c.leader() is not None:
            break
    assert c.leader() is not None
    for _ in range(10):
        c.step()
    c.step((Fault(0, FaultKind.ADD_VOTER, Target.LEADER),))
    assert 4 in c.nodes, "the add-voter fault creates node 4"
    for _ in range(10 * c.election_tick):
        c.step()
    new = c.nodes[4].rn
    assert new is not None
    learned = set(new.status().conf_state.voters) == {1, 2, 3, 4}
    assert learned is bootstrap_snapshot
