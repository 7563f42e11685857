"""The simulated network: partition shapes, loss, duplication, delay and reordering."""

from __future__ import annotations

import random

import pytest

from jepsen_like.sim import network as net
from raftkv.raft.types import Message, MessageType

NODES = [1, 2, 3, 4, 5]


def reach(blocked: frozenset[net.Link], src: int) -> set[int]:
    return net.reachable(blocked, src, NODES)


def test_isolate_cuts_both_directions_and_nothing_else() -> None:
    b = net.isolate(3, NODES)
    assert reach(b, 3) == {3}
    for n in (1, 2, 4, 5):
        assert reach(b, n) == {1, 2, 4, 5}


def test_split_blocks_only_between_groups() -> None:
    b = net.split([[1, 2], [3, 4, 5]])
    assert reach(b, 1) == {1, 2}
    assert reach(b, 4) == {3, 4, 5}
    assert len(b) == 2 * 2 * 3


@pytest.mark.parametrize("seed", range(20))
def test_minority_majority_leaves_exactly_one_majority(seed: int) -> None:
    b = net.minority_majority(NODES, random.Random(seed))
    groups = {frozenset(reach(b, n)) for n in NODES}
    assert len(groups) == 2
    sizes = sorted(len(g) for g in groups)
    assert sizes[0] >= 1 and sizes[1] > len(NODES) // 2
    assert sum(sizes) == len(NODES)


def test_ring_gives_each_node_its_two_neighbours_only() -> None:
    order = [3, 1, 4, 5, 2]
    b = net.ring(order)
    assert reach(b, 3) == {2, 3, 1}
    assert reach(b, 4) == {1, 4, 5}
    assert reach(b, 2) == {5, 2, 3}
    # overlapping majorities: every node reaches a majority, but no two majorities are equal
    views = [frozenset(reach(b, n)) for n in NODES]
    assert all(len(v) == 3 for v in views)
    assert len(set(views)) == len(NODES)


def test_ring_of_three_is_fully_connected() -> None:
    assert net.ring([1, 2, 3]) == frozenset()


def test_bridge_node_sees_both_halves_that_cannot_see_each_other() -> None:
    b = net.bridge([3, 1, 2, 4, 5])
    assert reach(b, 3) == set(NODES)
    assert reach(b, 1) == {1, 2, 3}
    assert reach(b, 4) == {3, 4, 5}


def test_one_way_link_blocks_one_direction() -> None:
    b = net.one_way([1], [2, 3])
    assert not net.Network(random.Random(0)).blocked
    assert (1, 2) in b and (1, 3) in b
    assert (2, 1) not in b and (3, 1) not in b


def _msg(frm: int, to: int, index: int = 0) -> Message:
    return Message(MessageType.APP, to=to, frm=frm, term=1, index=index)


def test_messages_arrive_within_the_delay_window_in_time_order() -> None:
    n = net.Network(random.Random(1), net.NetConfig(min_delay=2, max_delay=5))
    for i in range(200):
        n.send(_msg(1, 2, i), now=0)
    assert n.due(1) == []
    got: list[int] = []
    for t in range(2, 6):
        got.extend(m.index for m in n.due(t))
    assert sorted(got) == list(range(200))
    assert got != list(range(200)), "random delays must reorder some messages"
    assert n.in_flight() == 0


def test_a_partition_loses_messages_sent_and_already_in_flight() -> None:
    n = net.Network(random.Random(1), net.NetConfig(min_delay=3, max_delay=3))
    n.send(_msg(1, 2, 1), now=0)
    n.set_partition(net.isolate(2, [1, 2, 3]))
    assert not n.send(_msg(1, 2, 2), now=0)
    assert n.send(_msg(1, 3, 3), now=0)
    assert [m.index for m in n.due(3)] == [3]
    n.heal()
    assert n.send(_msg(1, 2, 4), now=3)
    assert [m.index for m in n.due(6)] == [4]


def test_drop_and_duplicate_rates_follow_the_config() -> None:
    n = net.Network(random.Random(7), net.NetConfig(drop=0.3, duplicate=0.2))
    for i in range(2000):
        n.send(_msg(1, 2, i), now=0)
    out = n.due(10)
    kept = {m.index for m in out}
    assert 0.62 < len(kept) / 2000 < 0.78
    dups = len(out) - len(kept)
    assert 0.15 < dups / len(kept) < 0.25


def test_same_seed_same_delivery_order() -> None:
    def order(seed: int) -> list[int]:
        n = net.Network(random.Random(seed), net.NetConfig(drop=0.1, duplicate=0.1))
        for i in range(100):
            n.send(_msg(1, 2, i), now=i // 10)
        return [m.index for m in n.due(100)]

    assert order(3) == order(3)
    assert order(3) != order(4)
