"""raftkv.testing.free_port: the ports tests give their servers."""

from __future__ import annotations

from raftkv.testing import free_port


def test_free_port_never_hands_out_a_port_twice() -> None:
    # members are given their ports before any of them binds: a port handed out twice would
    # make two listeners of one cluster collide (seen in CI)
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)
    assert all(20_000 <= p < 32_000 for p in ports)
