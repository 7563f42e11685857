"""The resilient client: circuit breakers (every transition, injected clock), dead and
partitioned endpoints skipped, serializable reads spread over members, keep-alive probes that
close a connection to a server that stopped answering, retry safety, full-jitter backoff."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from raftkv.client import BreakerState, CircuitBreaker, Client
from raftkv.errors import ConnectionLost, InvalidArgument, MemberNotFound, Timeout
from raftkv.protocol.methods import Method
from raftkv.testing import LocalCluster
from tests.client.fakes import FakeCluster


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def fc() -> AsyncIterator[FakeCluster]:
    async with FakeCluster(3) as cluster:
        yield cluster


@pytest.fixture
async def silent_addr() -> AsyncIterator[str]:
    """An endpoint that accepts TCP connections and never answers the handshake (a paused
    process looks like this: the kernel still accepts)."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    for w in writers:
        w.transport.abort()
    await server.wait_closed()


def _served(fc: FakeCluster, method: str) -> list[str]:
    return [name for name, meth, _ in fc.shared.requests if meth == method]


# --- the breaker itself --------------------------------------------------------------------


def test_breaker_opens_after_k_consecutive_failures_only() -> None:
    clock = FakeClock()
    b = CircuitBreaker(threshold=3, cooldown=5.0, clock=clock)
    b.record_failure()
    b.record_failure()
    b.record_success()  # a success resets the run
    b.record_failure()
    b.record_failure()
    assert b.state == BreakerState.CLOSED and b.allow()
    b.record_failure()
    assert b.state == BreakerState.OPEN
    assert not b.allow()


def test_breaker_half_opens_after_the_cooldown_and_closes_on_success() -> None:
    clock = FakeClock()
    b = CircuitBreaker(threshold=1, cooldown=5.0, clock=clock)
    b.record_failure()
    clock.now += 4.9
    assert not b.allow() and b.state == BreakerState.OPEN
    clock.now += 0.1
    assert b.allow() and b.state == BreakerState.HALF_OPEN
    b.record_success()
    assert b.state == BreakerState.CLOSED and b.failures == 0


def test_breaker_half_open_failure_reopens_for_a_full_cooldown() -> None:
    clock = FakeClock()
    b = CircuitBreaker(threshold=3, cooldown=2.0, clock=clock)
    for _ in range(3):
        b.record_failure()
    clock.now += 2.0
    assert b.allow() and b.state == BreakerState.HALF_OPEN
    b.record_failure()  # one failure is enough in half-open
    assert b.state == BreakerState.OPEN
    clock.now += 1.9
    assert not b.allow()
    clock.now += 0.1
    assert b.allow()


def test_breaker_knobs_are_validated() -> None:
    with pytest.raises(InvalidArgument):
        CircuitBreaker(threshold=0)
    with pytest.raises(InvalidArgument):
        Client(["127.0.0.1:1"], breaker_cooldown=-1)
    with pytest.raises(InvalidArgument):
        Client(["127.0.0.1:1"], keepalive_interval=0)


# --- the breaker in the client --------------------------------------------------------------


async def test_application_errors_do_not_trip_the_breaker(fc: FakeCluster) -> None:
    async with Client([fc.members[0].addr], breaker_threshold=2, command_timeout=2.0) as c:
        for _ in range(4):
            with pytest.raises(MemberNotFound):
                await c.member_remove(12345)
        assert c.breaker(fc.members[0].addr).state == BreakerState.CLOSED


async def test_an_open_endpoint_is_skipped_without_a_dial_timeout(
    fc: FakeCluster, silent_addr: str
) -> None:
    clock = FakeClock()
    loop = asyncio.get_running_loop()
    good = fc.members[1].addr
    async with Client(
        [silent_addr, good],
        dial_timeout=0.3,
        command_timeout=3.0,
        breaker_threshold=1,
        breaker_cooldown=10.0,
        clock=clock,
    ) as c:
        t0 = loop.time()
        await c.get("k", serializable=True)  # round robin starts at the silent endpoint
        assert loop.time() - t0 >= 0.3  # paid one dial timeout
        assert c.breaker(silent_addr).state == BreakerState.OPEN
        t0 = loop.time()
        for _ in range(6):  # round robin would return to the silent one every other call
            await c.get("k", serializable=True)
        assert loop.time() - t0 < 0.3
        # pinned to the open endpoint: fails at once instead of dialling
        t0 = loop.time()
        with pytest.raises(ConnectionLost, match="circuit breaker open"):
            await c.status(silent_addr)
        assert loop.time() - t0 < 0.1
        # after the cool-down one call probes it (half-open), fails, and re-opens it
        clock.now += 10.0
        t0 = loop.time()
        with pytest.raises(ConnectionLost, match="no answer"):
            await c.status(silent_addr)
        assert loop.time() - t0 >= 0.3
        assert c.breaker(silent_addr).state == BreakerState.OPEN
    assert _served(fc, Method.RANGE) == ["n2"] * 7


async def test_without_a_breaker_round_robin_pays_the_dial_timeout_again(
    fc: FakeCluster, silent_addr: str
) -> None:
    """The control for the test above: a threshold that never trips costs a dial timeout on
    every pass of the round robin (so the fast path above is the breaker's doing)."""
    loop = asyncio.get_running_loop()
    async with Client(
        [silent_addr, fc.members[1].addr], dial_timeout=0.3, breaker_threshold=100
    ) as c:
        await c.get("k", serializable=True)
        t0 = loop.time()
        await c.get("k", serializable=True)
        await c.get("k", serializable=True)
        assert loop.time() - t0 >= 0.3


async def test_a_breaker_closes_again_when_the_endpoint_answers(fc: FakeCluster) -> None:
    clock = FakeClock()
    n1 = fc.members[0]
    await n1.stop()
    async with Client(
        [n1.addr], breaker_threshold=1, breaker_cooldown=1.0, clock=clock, command_timeout=2.0
    ) as c:
        with pytest.raises(ConnectionLost):
            await c.status(n1.addr)
        assert c.breaker(n1.addr).state == BreakerState.OPEN
        host, port = n1.addr.split(":")
        n1._server = await asyncio.start_server(n1._on_connect, host, int(port))
        clock.now += 1.0
        assert (await c.status(n1.addr)).name == "n1"
        assert c.breaker(n1.addr).state == BreakerState.CLOSED


# --- spreading reads ------------------------------------------------------------------------


async def test_serializable_reads_spread_linearizable_reads_stay(fc: FakeCluster) -> None:
    async with Client(fc.endpoints, command_timeout=2.0) as c:
        for _ in range(6):
            await c.get("k", serializable=True)
        spread = _served(fc, Method.RANGE)
        assert sorted(spread) == ["n1", "n1", "n2", "n2", "n3", "n3"]
        fc.shared.requests.clear()
        for _ in range(4):
            await c.get("k")
        assert len(set(_served(fc, Method.RANGE))) == 1


async def test_serializable_reads_skip_an_open_endpoint(fc: FakeCluster) -> None:
    await fc.members[2].stop()
    async with Client(fc.endpoints, breaker_threshold=1, command_timeout=2.0) as c:
        for _ in range(6):
            await c.get("k", serializable=True)
    assert sorted(set(_served(fc, Method.RANGE))) == ["n1", "n2"]
    assert len(_served(fc, Method.RANGE)) == 6


# --- keep-alive -----------------------------------------------------------------------------


async def test_keepalive_closes_a_connection_to_a_server_that_stopped_answering(
    fc: FakeCluster,
) -> None:
    n2 = fc.members[1]
    async with Client(
        [n2.addr], keepalive_interval=0.1, keepalive_timeout=0.5, command_timeout=2.0
    ) as c:
        await c.get("k", serializable=True)
        conn = c.router.conns[n2.addr]
        for _ in range(50):  # healthy: probed, answered, kept
            await asyncio.sleep(0.02)
        assert conn.alive and fc.count(Method.STATUS) >= 1
        n2.black_hole = True  # "SIGSTOP": the socket stays open, nothing answers
        for _ in range(100):
            if not conn.alive:
                break
            await asyncio.sleep(0.02)
        assert not conn.alive
        assert conn.error is not None and "keep-alive" in str(conn.error)
        assert c.breaker(n2.addr).failures == 1


async def test_keepalive_fails_a_hung_call_over_to_another_member(fc: FakeCluster) -> None:
    """A call waiting on a paused member is released by the keep-alive (not by its long
    attempt timeout) and answered by the next endpoint."""
    n2, n3 = fc.members[1], fc.members[2]
    n2.black_hole = True
    loop = asyncio.get_running_loop()
    async with Client(
        [n2.addr, n3.addr],
        keepalive_interval=0.2,
        keepalive_timeout=0.2,
        command_timeout=20.0,
        attempt_timeout=20.0,
    ) as c:
        t0 = loop.time()
        assert (await c.get("k")).kvs == ()
        assert loop.time() - t0 < 2.0
    assert _served(fc, Method.RANGE) == ["n2", "n3"]


async def test_keepalive_off_sends_no_probes(fc: FakeCluster) -> None:
    async with Client([fc.members[0].addr], keepalive_interval=None) as c:
        await c.get("k")
        await asyncio.sleep(0.2)
        assert c.router.keepalive_task is None
    assert fc.count(Method.STATUS) == 0


# --- retry safety and backoff ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "method"),
    [
        (lambda c, fc: c.move_leader(fc.members[1].id), Method.MOVE_LEADER),
        (lambda c, fc: c.member_remove(fc.members[2].id), Method.MEMBER_REMOVE),
        (lambda c, fc: c.member_promote(fc.members[2].id), Method.MEMBER_PROMOTE),
    ],
)
async def test_unsafe_operations_are_sent_once(fc: FakeCluster, call: object, method: str) -> None:
    fc.members[0].black_hole = True
    async with Client(fc.endpoints, command_timeout=1.0, attempt_timeout=0.2) as c:
        with pytest.raises(Timeout):
            await call(c, fc)  # type: ignore[operator]
    assert fc.count(method) == 1


async def test_reads_and_exactly_once_writes_are_retried_elsewhere(fc: FakeCluster) -> None:
    fc.members[0].black_hole = True
    async with Client(fc.endpoints, command_timeout=3.0, attempt_timeout=0.2) as c:
        assert (await c.get("k")).kvs == ()
        fc.members[0].black_hole = False
        fc.members[0].drop_after_apply = 1
        await c.put("k", "v")
    assert [seq for _, seq in fc.shared.applied] == [1]
    assert fc.count(Method.PUT) >= 2


def test_backoff_is_exponential_with_full_jitter() -> None:
    c = Client(["127.0.0.1:1"], backoff_base=0.1, backoff_cap=1.0, rng=random.Random(7))
    for attempt, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (9, 1.0)]:
        xs = [c.router.backoff(attempt) for _ in range(300)]
        assert all(0 <= x <= ceiling for x in xs)
        assert min(xs) < 0.1 * ceiling and max(xs) > 0.9 * ceiling  # the full range is used


# --- a partitioned member in a real cluster -------------------------------------------------


async def test_a_partitioned_member_does_not_stall_the_client(tmp_path: Path) -> None:
    async with LocalCluster(3, tmp_path) as cl:
        leader = await cl.wait_leader()
        await cl.wait_converged()  # a member still catching up may answer NotLeader instead
        cut = next(m for m in cl.members.values() if m is not leader)
        assert cut.node is not None
        for peer in cl.nodes():
            if peer.id != cut.node.id:
                cut.node.transport.inner.faults.block(peer.id)  # type: ignore[attr-defined]
        others = [m.client_addr for m in cl.members.values() if m is not cut]
        loop = asyncio.get_running_loop()
        async with Client(
            [cut.client_addr, *others], command_timeout=5.0, attempt_timeout=0.5
        ) as c:
            tried: list[str] = []
            connect = c.router.connect
            c.router.connect = lambda addr, t: (tried.append(addr), connect(addr, t))[1]  # type: ignore[method-assign]
            t0 = loop.time()
            for i in range(10):
                # a linearizable read first: the cut-off member cannot serve it
                assert (await c.get(f"k{i}")).kvs == ()
                await c.put(f"k{i}", "v")
                assert (await c.get(f"k{i}")).kvs[0].value == b"v"
            took = loop.time() - t0
        # The cut-off member was tried first, found out (an attempt timeout, a Timeout or
        # NoLeader answer, or NotLeader once it lost its leader) and then left alone.
        assert tried[0] == cut.client_addr
        assert tried.count(cut.client_addr) <= 2, tried
        # at most one attempt timeout was spent on the cut-off member
        assert took < 2.5, took
