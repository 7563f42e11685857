"""Admission control: token buckets (injected clock), the server's rate-limit hook answering
TooManyRequests(retry_after), the client backing off until it succeeds, the bound on pending
proposals under 2,000 concurrent writes, and the ``raftkv serve`` flags."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from raftkv.api import RangeRequest
from raftkv.client.client import Client, _Conn
from raftkv.errors import InvalidArgument, TooManyRequests
from raftkv.protocol import wire
from raftkv.protocol.codec import to_plain
from raftkv.protocol.methods import Method
from raftkv.server.admission import AdmissionConfig, AdmissionControl, TokenBucket
from raftkv.server.node import Node
from raftkv.testing import LocalCluster, Process, ProcessCluster


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


# --- buckets --------------------------------------------------------------------------------


def test_bucket_starts_full_refills_at_rate_and_caps_at_burst() -> None:
    clock = FakeClock()
    b = TokenBucket(rate=10.0, burst=3, clock=clock)
    for _ in range(3):
        assert b.wait_time() == 0.0
        b.take()
    assert b.wait_time() == pytest.approx(0.1)
    clock.now += 0.05
    assert b.wait_time() == pytest.approx(0.05)
    clock.now += 0.05
    assert b.wait_time() == 0.0
    clock.now += 100.0  # a long idle period stores no more than the burst
    b.wait_time()
    assert b.tokens == 3


def test_bucket_rejects_nonsense() -> None:
    with pytest.raises(InvalidArgument):
        TokenBucket(0, 1)
    with pytest.raises(InvalidArgument):
        TokenBucket(1, 0.5)
    with pytest.raises(InvalidArgument):
        AdmissionControl(AdmissionConfig(per_conn=-1))


def test_per_connection_limit_with_retry_after_from_the_bucket() -> None:
    clock = FakeClock()
    ac = AdmissionControl(AdmissionConfig(per_conn=4.0, burst=2), clock)
    a, b = ac.conn_bucket(), ac.conn_bucket()
    ac.admit(a)
    ac.admit(a)
    with pytest.raises(TooManyRequests) as e:
        ac.admit(a)
    assert e.value.retry_after == pytest.approx(0.25)
    ac.admit(b)  # another connection has its own allowance
    clock.now += 0.25
    ac.admit(a)
    assert ac.refused == 1


def test_node_limit_is_shared_and_a_refusal_spends_nothing() -> None:
    clock = FakeClock()
    ac = AdmissionControl(AdmissionConfig(per_conn=100.0, per_node=2.0, burst=2), clock)
    a, b = ac.conn_bucket(), ac.conn_bucket()
    assert a is not None
    ac.admit(a)
    ac.admit(b)
    tokens_before = a.tokens
    with pytest.raises(TooManyRequests) as e:
        ac.admit(a)
    assert e.value.retry_after == pytest.approx(0.5)
    assert a.tokens == tokens_before  # the node refused: the connection keeps its token


def test_default_burst_is_one_second_of_rate_and_off_means_off() -> None:
    assert AdmissionConfig(per_node=7.5).burst_for(7.5) == 8
    assert AdmissionConfig(per_node=0.2).burst_for(0.2) == 1
    off = AdmissionControl(AdmissionConfig())
    assert not off.cfg.enabled and off.conn_bucket() is None and off.node_bucket is None
    for _ in range(1000):
        off.admit(None)


# --- the server hook, end to end ------------------------------------------------------------


async def test_server_refuses_over_the_limit_and_the_client_backs_off(tmp_path: Path) -> None:
    async with LocalCluster(1, tmp_path) as cl:
        m = next(iter(cl.members.values()))
        assert m.server is not None
        ac = AdmissionControl(AdmissionConfig(per_conn=40.0, burst=5))
        m.server.admission = ac
        # raw: a burst over the bucket is answered TooManyRequests with a useful retry_after
        conn = await _Conn.open(m.client_addr, 2.0, 0, wire.MAX_CLIENT_FRAME)
        try:
            payload = to_plain(RangeRequest(b"k", serializable=True))
            results = await asyncio.gather(
                *(conn.call(Method.RANGE, payload) for _ in range(12)), return_exceptions=True
            )
        finally:
            await conn.close()
        refused = [r for r in results if isinstance(r, TooManyRequests)]
        assert len(refused) == 7
        assert all(0 < r.retry_after <= 1 / 40 * 7 + 0.01 for r in refused)
        # the client honours retry_after: 45 reads through a 40/s bucket (burst 5) all
        # succeed, and take at least the (45 - 5) / 40 = 1 s the bucket allows
        loop = asyncio.get_running_loop()
        async with Client([m.client_addr], command_timeout=10.0) as c:
            t0 = loop.time()
            await asyncio.gather(*(c.get("k", serializable=True) for _ in range(45)))
            took = loop.time() - t0
        assert took >= 0.9
        assert ac.refused > 7


async def test_pending_proposals_stay_bounded_under_2000_concurrent_writes(
    tmp_path: Path,
) -> None:
    bound = 8
    async with LocalCluster(1, tmp_path, max_pending_proposals=bound) as cl:
        node = next(iter(cl.members.values())).node
        assert node is not None

        refused = 0
        propose = node.propose

        async def counting_propose(*a: Any, **kw: Any) -> Any:
            nonlocal refused
            try:
                return await propose(*a, **kw)
            except TooManyRequests:
                refused += 1
                raise

        node.propose = counting_propose  # type: ignore[method-assign]
        clients = [
            Client(cl.endpoints, command_timeout=60.0, keepalive_interval=None) for _ in range(32)
        ]
        try:
            await asyncio.gather(
                *(c.put(f"c{i}/k{j}", "v") for i, c in enumerate(clients) for j in range(63))
            )
        finally:
            for c in clients:
                await c.close()
        assert node.fsm.range(RangeRequest(b"c", b"d", count_only=True)).count == 32 * 63
        assert refused > 0  # the bound was hit and answered, not queued
        assert 0 < node.proposals.peak <= bound


def test_node_propose_is_patchable() -> None:
    """The test above replaces Node.propose on an instance: keep that possible."""
    assert not hasattr(Node, "__slots__")


# --- raftkv serve flags ---------------------------------------------------------------------


def test_serve_has_the_admission_flags_and_refuses_negative_rates(tmp_path: Path) -> None:
    from raftkv_cli.serve import serve

    runner = CliRunner()
    help_text = runner.invoke(serve, ["--help"]).output
    for flag in (
        "--rate-limit-per-conn",
        "--rate-limit-per-node",
        "--burst",
        "--max-pending-proposals",
    ):
        assert flag in help_text
    base = [
        "--name=n1",
        f"--data-dir={tmp_path / 'd'}",
        "--listen-client=127.0.0.1:1",
        "--listen-peer=127.0.0.1:2",
        "--initial-cluster=n1=127.0.0.1:2",
    ]
    res = runner.invoke(serve, [*base, "--rate-limit-per-conn=-1"])
    assert res.exit_code == 2 and "rate limits" in res.output
    res = runner.invoke(serve, [*base, "--max-pending-proposals=0"])
    assert res.exit_code == 2


async def test_a_watch_refused_by_the_rate_limit_is_created_after_a_pause(tmp_path: Path) -> None:
    async with LocalCluster(1, tmp_path) as cl:
        m = next(iter(cl.members.values()))
        assert m.server is not None
        ac = AdmissionControl(AdmissionConfig(per_conn=10.0, burst=1))
        m.server.admission = ac
        async with Client([m.client_addr], command_timeout=5.0) as c:
            await c.get("w")  # spends the connection's only token
            async with c.watch("w") as w:  # refused (END + TooManyRequests), then created
                await c.put("w", "1")
                resp = await asyncio.wait_for(w.__anext__(), 5.0)
        assert [e.kv.value for e in resp.events] == [b"1"]
        assert ac.refused >= 1


class _LimitedProcessCluster(ProcessCluster):
    def command(self, p: Process) -> list[str]:
        return [*super().command(p), "--rate-limit-per-conn=20", "--burst=2"]


async def test_real_member_with_rate_limit_flags_and_sigstop(tmp_path: Path) -> None:
    """One real ``raftkv serve`` process: the flags limit a connection to 20 requests/s (the
    client still gets every answer, no faster than the bucket allows); then SIGSTOP, and the
    client's keep-alive closes the connection and counts a breaker failure."""
    pc = _LimitedProcessCluster(1, tmp_path)
    pc.start()
    try:
        await asyncio.to_thread(pc.wait_healthy, 20.0)
        addr = pc.endpoints[0]
        loop = asyncio.get_running_loop()
        async with Client(
            [addr], command_timeout=10.0, keepalive_interval=0.3, keepalive_timeout=0.3
        ) as c:
            t0 = loop.time()
            await asyncio.gather(*(c.get("k", serializable=True) for _ in range(22)))
            assert loop.time() - t0 >= (22 - 2) / 20 * 0.9
            conn = c._conns[addr]
            assert conn.alive
            pc.pause("n1")
            for _ in range(150):
                if not conn.alive:
                    break
                await asyncio.sleep(0.02)
            assert not conn.alive and "keep-alive" in str(conn.error)
            assert c.breaker(addr).failures >= 1
            pc.resume("n1")
    finally:
        pc.stop()
