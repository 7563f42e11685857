"""Service registry, discovery and the balancers."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Sequence

import pytest

from raftkv.client import Client
from raftkv.recipes import (
    ConsistentHash,
    PickFirst,
    Random,
    RoundRobin,
    ServiceInstance,
    ServiceRegistry,
)


async def test_register_discover_deregister_and_expire(client: Client) -> None:
    reg = ServiceRegistry(client)
    a = await reg.register("api", "10.0.0.1:80", {"zone": "a"}, ttl=10, instance_id="a")
    async with await reg.discover("api") as d:
        assert [(i.id, i.address, dict(i.metadata)) for i in d.instances()] == [
            ("a", "10.0.0.1:80", {"zone": "a"})
        ]
        b = await reg.register("api", "10.0.0.2:80", ttl=1, instance_id="b")
        await d.wait_for(lambda xs: [i.id for i in xs] == ["a", "b"], timeout=3)
        assert [i.id for i in await reg.list("api")] == ["a", "b"]
        # b's process "dies": nothing renews its lease any more; it vanishes within TTL+1s
        b.session.orphan()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await d.wait_for(lambda xs: [i.id for i in xs] == ["a"], timeout=5)
        assert loop.time() - t0 <= 1 + 1
        # deregistering (revoke) removes at once
        await reg.deregister(a)
        await d.wait_for(lambda xs: xs == [], timeout=2)
        assert d.error is None


class _Static:
    def __init__(self, insts: Sequence[ServiceInstance]) -> None:
        self.insts = list(insts)

    def instances(self) -> list[ServiceInstance]:
        return sorted(self.insts, key=lambda i: i.id)


def _insts(n: int) -> list[ServiceInstance]:
    return [ServiceInstance("s", f"i{k:02d}", f"10.0.0.{k}:1") for k in range(n)]


def test_round_robin_pick_first_random() -> None:
    src = _Static(_insts(3))
    rr = RoundRobin(src)
    assert [rr.pick().id for _ in range(6)] == ["i00", "i01", "i02"] * 2  # type: ignore[union-attr]
    assert PickFirst(src).pick() == src.instances()[0]
    a = Random(src, random.Random(42))
    b = Random(src, random.Random(42))
    seq_a = [a.pick() for _ in range(300)]
    assert seq_a == [b.pick() for _ in range(300)]  # seeded: reproducible
    counts = Counter(i.id for i in seq_a if i is not None)
    assert set(counts) == {"i00", "i01", "i02"} and min(counts.values()) > 50
    assert RoundRobin(_Static([])).pick() is None


@pytest.mark.parametrize("n", [3, 5, 10])
def test_consistent_hash_moves_about_one_nth(n: int) -> None:
    keys = [f"key-{k}" for k in range(10_000)]
    src = _Static(_insts(n))
    ring = ConsistentHash(src, vnodes=100)
    before = {k: ring.pick(k).id for k in keys}  # type: ignore[union-attr]
    # add one instance
    src.insts.append(ServiceInstance("s", "new", "10.0.1.1:1"))
    after_add = {k: ring.pick(k).id for k in keys}  # type: ignore[union-attr]
    moved = [k for k in keys if before[k] != after_add[k]]
    assert all(after_add[k] == "new" for k in moved)  # nothing moves between old instances
    assert 0.5 / (n + 1) <= len(moved) / len(keys) <= 2 / (n + 1)
    # remove one of the original instances
    src.insts = [i for i in src.insts if i.id not in ("new", "i01")]
    after_rm = {k: ring.pick(k).id for k in keys}  # type: ignore[union-attr]
    moved = [k for k in keys if before[k] != after_rm[k]]
    assert all(before[k] == "i01" for k in moved)  # only the removed one's keys move
    assert 0.5 / n <= len(moved) / len(keys) <= 2 / n
