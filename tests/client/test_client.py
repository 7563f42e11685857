"""The async client against a fake cluster: multiplexing, redirects, exactly-once retries,
failover, backoff, timeouts, watch resume, snapshots."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from raftkv.api import Command
from raftkv.client import Client, WatchFilter, key_range
from raftkv.errors import (
    HandshakeRefused,
    InvalidArgument,
    MemberNotFound,
    RemoteProtocolError,
    Timeout,
)
from raftkv.protocol.codec import from_plain
from raftkv.protocol.methods import Method
from tests.client.fakes import FakeCluster


@pytest.fixture
async def fc() -> AsyncIterator[FakeCluster]:
    async with FakeCluster(3) as cluster:
        yield cluster


def _dead_addr() -> str:
    """An address nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _write_tags(fc: FakeCluster, method: str) -> list[tuple[str, int, int]]:
    """(member, client_id, seq) of every write request of ``method`` the fake received."""
    out = []
    for name, meth, payload in fc.shared.requests:
        if meth == method:
            cmd = from_plain(Command, payload)
            out.append((name, cmd.client_id, cmd.seq))
    return out


def test_key_range_prefix_and_all_keys() -> None:
    assert key_range("a", prefix=True) == (b"a", b"b")
    assert key_range(b"a\xff", prefix=True) == (b"a\xff", b"b")
    assert key_range("", prefix=True) == (b"\0", b"\0")
    assert key_range("a", range_end="c") == (b"a", b"c")
    with pytest.raises(InvalidArgument):
        key_range("a", prefix=True, range_end="b")


async def test_put_get_delete_accept_str_and_bytes(fc: FakeCluster) -> None:
    async with Client(fc.endpoints, command_timeout=2.0) as c:
        await c.put("foo", "bar")
        await c.put(b"foo2", b"\x00\x01")
        r = await c.get(b"foo")
        assert [(kv.key, kv.value) for kv in r.kvs] == [(b"foo", b"bar")]
        r = await c.get("foo", prefix=True, keys_only=True)
        assert [kv.key for kv in r.kvs] == [b"foo", b"foo2"]
        assert all(kv.value == b"" for kv in r.kvs)
        assert (await c.get("f", prefix=True, count_only=True)).count == 2
        d = await c.delete("foo", prefix=True, prev_kv=True)
        assert d.deleted == 2
        assert {kv.value for kv in d.prev_kvs} == {b"bar", b"\x00\x01"}
        assert (await c.get("foo")).kvs == ()


async def test_concurrent_requests_share_one_connection(fc: FakeCluster) -> None:
    leader = fc.members[0]
    async with Client([leader.addr], command_timeout=5.0) as c:
        await asyncio.gather(*(c.put(f"k{i}", f"v{i}") for i in range(200)))
        leader.delay = 0.1  # every answer waits, so requests pile up on the connection
        results = await asyncio.gather(*(c.get(f"k{i}") for i in range(200)))
    assert [r.kvs[0].value for r in results] == [f"v{i}".encode() for i in range(200)]
    assert leader.connections == 1
    assert leader.max_in_flight >= 150  # multiplexed, not one at a time


async def test_write_is_redirected_to_the_leader(fc: FakeCluster) -> None:
    follower, leader = fc.members[1], fc.members[0]
    async with Client([follower.addr], command_timeout=2.0) as c:
        await c.put("k", "v")
        assert c.leader_endpoint == leader.addr
        await c.put("k", "w")
    tags = _write_tags(fc, Method.PUT)
    # first attempt at the follower, then the redirect with the same tag; then straight there
    assert [t[0] for t in tags] == ["n2", "n1", "n1"]
    assert tags[0][1:] == tags[1][1:]
    assert tags[2][2] == tags[1][2] + 1
    assert len(fc.shared.applied) == 2


async def test_leader_hint_without_address_is_resolved_from_earlier_answers(
    fc: FakeCluster,
) -> None:
    leader, n2, n3 = fc.members
    n2.no_leader_addr = n3.no_leader_addr = True
    async with Client([n2.addr, n3.addr, leader.addr], command_timeout=2.0) as c:
        await c.status(leader.addr)  # the client learns which member answers there
        await c.put("k", "v")
        assert c.leader_endpoint == leader.addr
    # straight from n2 to the leader, not via n3
    assert [t[0] for t in _write_tags(fc, Method.PUT)] == ["n2", "n1"]


async def test_leader_hint_without_address_falls_back_to_the_next_endpoint(
    fc: FakeCluster,
) -> None:
    follower, leader = fc.members[1], fc.members[0]
    follower.no_leader_addr = True
    async with Client([follower.addr, leader.addr], command_timeout=2.0) as c:
        await c.put("k", "v")
        await c.put("k", "w")
        assert c.leader_endpoint == leader.addr
    assert [t[0] for t in _write_tags(fc, Method.PUT)] == ["n2", "n1", "n1"]


async def test_retried_write_reuses_its_seq_and_applies_once(fc: FakeCluster) -> None:
    leader = fc.members[0]
    leader.drop_after_apply = 1  # apply, then lose the connection before the answer
    async with Client([leader.addr], command_timeout=3.0, backoff_base=0.01) as c:
        resp = await c.put("k", "v")
        before = fc.shared.fsm.revision
        await c.put("k2", "v2")
    tags = _write_tags(fc, Method.PUT)
    assert len(tags) == 3
    assert tags[0] == tags[1]  # the retry carries the same (client_id, seq)
    assert tags[2][2] == tags[0][2] + 1
    assert fc.shared.applied == [(c.client_id, 1), (c.client_id, 2)]
    # the retry got the original answer (the revision of the first apply)
    assert resp.header.revision == before
    assert fc.shared.fsm.revision == before + 1


async def test_client_ids_are_random_and_nonzero() -> None:
    ids = {Client(["127.0.0.1:1"]).client_id for _ in range(20)}
    assert len(ids) == 20
    assert all(0 < i < (1 << 63) for i in ids)


async def test_write_window_bounds_writes_in_flight(fc: FakeCluster) -> None:
    leader = fc.members[0]
    leader.delay = 0.02
    async with Client([leader.addr], write_window=4, command_timeout=5.0) as c:
        await asyncio.gather(*(c.put(f"k{i}", "v") for i in range(24)))
    assert leader.max_in_flight <= 4
    assert sorted(seq for _, seq in fc.shared.applied) == list(range(1, 25))


async def test_failover_from_an_unreachable_endpoint(fc: FakeCluster) -> None:
    async with Client([_dead_addr(), fc.members[1].addr], command_timeout=2.0) as c:
        await c.put("k", "v")
        assert (await c.get("k")).kvs[0].value == b"v"


async def test_failover_from_a_silent_endpoint(fc: FakeCluster) -> None:
    silent, good = fc.members[1], fc.members[2]
    await fc.members[0].stop()  # only n2 (silent) and n3 are reachable
    silent.black_hole = True
    fc.set_leader(good)
    loop = asyncio.get_running_loop()
    async with Client([silent.addr, good.addr], command_timeout=3.0, attempt_timeout=0.2) as c:
        t0 = loop.time()
        assert (await c.get("k")).kvs == ()
        assert loop.time() - t0 < 1.0  # one attempt timeout, not the whole budget
        await c.put("k", "v")
        assert (await c.get("k")).kvs[0].value == b"v"
    served = [name for name, meth, _ in fc.shared.requests if meth == Method.RANGE]
    assert served == ["n2", "n3", "n3"]
    assert [t[0] for t in _write_tags(fc, Method.PUT)] == ["n3"]


async def test_timeout_when_there_is_no_leader(fc: FakeCluster) -> None:
    fc.set_leader(None)
    loop = asyncio.get_running_loop()
    async with Client(fc.endpoints, command_timeout=0.5, backoff_cap=0.1) as c:
        t0 = loop.time()
        with pytest.raises(Timeout, match="NotLeader"):
            await c.put("k", "v")
        took = loop.time() - t0
    assert 0.3 <= took < 1.5
    assert fc.count(Method.PUT) >= 3  # it kept retrying, with backoff, until the deadline
    assert fc.shared.applied == []


async def test_per_call_timeout_overrides_the_default(fc: FakeCluster) -> None:
    fc.members[0].delay = 2.0
    loop = asyncio.get_running_loop()
    async with Client([fc.members[0].addr], command_timeout=10.0) as c:
        t0 = loop.time()
        with pytest.raises(Timeout):
            await c.get("k", timeout=0.3)
        assert loop.time() - t0 < 1.5


async def test_too_many_requests_is_retried_after_a_pause(fc: FakeCluster) -> None:
    fc.members[0].busy = 3
    async with Client([fc.members[0].addr], command_timeout=3.0) as c:
        await c.get("k")
    assert fc.count(Method.RANGE) == 4


async def test_handshake_refusal_is_not_retried(fc: FakeCluster) -> None:
    fc.members[0].refuse_handshake = "cluster id mismatch"
    async with Client([fc.members[0].addr], command_timeout=2.0) as c:
        with pytest.raises(HandshakeRefused, match="cluster id mismatch"):
            await c.get("k")
    assert fc.members[0].connections == 1


async def test_server_errors_arrive_typed(fc: FakeCluster) -> None:
    async with Client(fc.endpoints, command_timeout=2.0) as c:
        with pytest.raises(MemberNotFound):
            await c.member_remove(12345)


async def test_membership_change_is_not_resent_after_it_may_have_arrived(
    fc: FakeCluster,
) -> None:
    fc.members[0].black_hole = True
    async with Client([fc.members[0].addr], command_timeout=0.6, attempt_timeout=0.2) as c:
        with pytest.raises(Timeout):
            await c.member_add("n9", "127.0.0.1:1", "127.0.0.1:2")
    assert fc.count(Method.MEMBER_ADD) == 1


async def test_admin_answers_are_parsed(fc: FakeCluster) -> None:
    async with Client(fc.endpoints, command_timeout=2.0) as c:
        await c.put("k", "v")
        st = await c.status(fc.members[1].addr)
        assert (st.endpoint, st.name, st.is_leader, st.revision) == (
            fc.members[1].addr,
            "n2",
            False,
            fc.shared.fsm.revision,
        )
        assert (await c.status(fc.members[0].addr)).is_leader
        members = await c.member_list()
        assert [m.name for m in members] == ["n1", "n2", "n3"]
        assert (await c.health(fc.members[2].addr)).health
        dead = await c.health(_dead_addr(), timeout=0.5)
        assert not dead.health and "connect" in dead.reason
        h = await c.hash_kv()
        assert h.hash == fc.shared.fsm.hash()
        assert await c.move_leader(members[2].id) == members[2].id
        assert fc.leader is fc.members[2]
        await c.put("k", "after move")  # finds the new leader through a redirect
        assert c.leader_endpoint == fc.members[2].addr


async def test_watch_delivers_each_revision_once_across_a_reconnect(fc: FakeCluster) -> None:
    async with Client(fc.endpoints, command_timeout=3.0, backoff_base=0.01) as c:
        w = c.watch("a", prefix=True, filters=[WatchFilter.NODELETE])
        await w.start()
        await c.put("a1", "1")
        await c.put("b1", "ignored")
        await c.delete("a1")  # filtered out
        first = await w.__anext__()
        assert [(e.kv.key, e.kv.value) for e in first.events] == [(b"a1", b"1")]
        for m in fc.members:
            m.drop_connections()  # the watch's connection dies
        await c.put("a2", "2")
        await c.put("a3", "3")
        got = [await w.__anext__(), await w.__anext__()]
        assert [e.kv.key for r in got for e in r.events] == [b"a2", b"a3"]
        assert [r.revision for r in got] == sorted({r.revision for r in got})
        w.cancel()
        with pytest.raises(StopAsyncIteration):
            await w.__anext__()
    watches = [p for _, meth, p in fc.shared.requests if meth == Method.WATCH]
    assert len(watches) == 2
    assert watches[1]["start_revision"] == first.revision + 1  # resumed, not restarted


async def test_watch_cancel_tells_the_server(fc: FakeCluster) -> None:
    async with Client(fc.endpoints, command_timeout=2.0) as c, c.watch("k") as w:
        assert w.revision == fc.shared.fsm.revision
    await asyncio.sleep(0)  # let the cancel frame reach the fake
    for _ in range(50):
        if fc.count(Method.CANCEL):
            break
        await asyncio.sleep(0.01)
    assert fc.count(Method.CANCEL) == 1


async def test_watch_ends_when_the_client_closes(fc: FakeCluster) -> None:
    c = Client(fc.endpoints, command_timeout=2.0)
    w = c.watch("k")
    await w.start()
    waiter = asyncio.ensure_future(w.__anext__())
    await asyncio.sleep(0.05)
    await c.close()
    with pytest.raises(StopAsyncIteration):
        await waiter


async def test_snapshot_save_writes_a_verified_file(fc: FakeCluster, tmp_path: Path) -> None:
    data = os.urandom(5500)
    for m in fc.members:
        m.snapshot_data = data
    async with Client(fc.endpoints, command_timeout=2.0) as c:
        info = await c.snapshot_save(tmp_path / "snap.db")
        assert (tmp_path / "snap.db").read_bytes() == data
        assert info.size == len(data)
        for m in fc.members:
            m.corrupt_snapshot = True
        with pytest.raises(RemoteProtocolError, match="checksum"):
            await c.snapshot_save(tmp_path / "bad.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap.db"]


async def test_pending_calls_fail_when_the_client_closes(fc: FakeCluster) -> None:
    fc.members[0].black_hole = True
    c = Client([fc.members[0].addr], command_timeout=5.0)
    call = asyncio.ensure_future(c.get("k"))
    await asyncio.sleep(0.1)
    await c.close()
    with pytest.raises(Exception) as ei:
        await call
    assert type(ei.value).__name__ == "ConnectionLost"
