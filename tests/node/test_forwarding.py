"""Any member accepts any call: a client that knows only a follower does everything.

The follower forwards writes, lease calls and membership changes to the leader
(raftkv.server.forward); reads it serves itself.  The leader must never see a direct client
connection from this client: every connection it holds comes from the forwarding member.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from raftkv.api import Compare, CompareResult, CompareTarget, LeaseKeepAliveRequest, PutRequest
from raftkv.client import Client, ClientConfig, op_get, op_put
from raftkv.errors import ConfChangeRefused, ConnectionLost, LeaseNotFound, NoLeader, NotLeader
from raftkv.protocol.methods import Method
from raftkv.server.service import CallContext, Forwarder
from raftkv.testing import LocalCluster, LocalMember


def _follower(cluster: LocalCluster, leader: LocalMember) -> LocalMember:
    return next(m for m in cluster.members.values() if m is not leader and m.running)


async def _knows_leader_addr(follower: LocalMember, leader: LocalMember) -> None:
    """Client addresses are published through the log a moment after the election."""
    assert follower.node is not None and leader.node is not None
    lid = leader.node.id
    await asyncio.wait_for(
        _until(lambda: bool(follower.node and follower.node.client_addr_of(lid))), 10
    )


async def _until(cond: Callable[[], bool]) -> None:
    while not cond():
        await asyncio.sleep(0.01)


def _direct_client_conns(m: LocalMember) -> int:
    """Client connections ``m`` holds that did not come from a forwarding member."""
    assert m.server is not None
    return sum(1 for c in m.server._conns if not c.forwarded)


async def test_the_whole_api_through_one_follower(tmp_path: Path) -> None:
    async with LocalCluster(3, tmp_path) as cluster:
        leader = await cluster.wait_leader()
        await cluster.wait_converged()
        follower = _follower(cluster, leader)
        assert follower.server is not None and follower.node is not None
        assert leader.node is not None
        # leader_affinity off: every call goes to the follower, which must handle it
        cfg = ClientConfig(leader_affinity=False)
        async with Client([follower.client_addr], config=cfg, command_timeout=10.0) as c:
            # KV
            put = await c.put("a", "1")
            assert put.header.member_id == follower.node.id
            assert (await c.get("a")).kvs[0].value == b"1"
            assert (await c.get("a", serializable=True)).count in (0, 1)
            t = await c.txn(
                [Compare(b"a", CompareTarget.VALUE, CompareResult.EQUAL, value=b"1")],
                [op_put(b"b", b"2")],
                [],
            )
            assert t.succeeded
            ro = await c.txn([], [op_get(b"b")], [])
            assert ro.responses[0].kvs[0].value == b"2"  # type: ignore[union-attr]
            d = await c.delete("b")
            assert d.deleted == 1
            rev = (await c.get("a")).header.revision
            await c.compact(rev)
            # leases: grant, keep alive, time to live, list, revoke
            g = await c.lease_grant(30)
            ka = await c.lease_keep_alive_once(g.id)
            assert ka.ttl == 30
            ttl = await c.lease_time_to_live(g.id)
            assert 0 < ttl.ttl <= 30
            assert g.id in (await c.lease_leases()).leases
            await c.put("leased", "x", lease=g.id)
            await c.lease_revoke(g.id)
            assert (await c.get("leased")).count == 0
            with pytest.raises(LeaseNotFound):
                await c.lease_revoke(g.id)
            # watch
            async with c.watch("w") as w:
                await c.put("w", "event")
                ev = await anext(aiter(w))
                assert ev.events[0].kv.value == b"event"
            # cluster and maintenance
            assert len(await c.member_list()) == 3
            st = await c.status()
            assert st.id == follower.node.id
            assert (await c.health()).health
            assert (await c.hash_kv()).hash != 0
            info = await c.snapshot_save(tmp_path / "snap.db")
            assert info.size > 0
            assert await c.alarm_list() == ()
            d = await c.defragment(follower.client_addr)
            assert d.size_before > 0 and d.size_after > 0
            assert d.header.member_id == follower.node.id
            # membership changes, forwarded: a learner on a port that never answers
            with socket.socket() as silent:
                silent.bind(("127.0.0.1", 0))
                silent.listen()
                port = silent.getsockname()[1]
                added = await c.member_add("n9", f"127.0.0.1:{port}", learner=True)
                assert added.member.is_learner
                assert len(await c.member_list()) == 4
                with socket.socket() as silent2:
                    silent2.bind(("127.0.0.1", 0))
                    silent2.listen()
                    moved = f"127.0.0.1:{silent2.getsockname()[1]}"
                    after = await c.member_update(added.member.id, moved)
                    assert {m.id: m.peer_addr for m in after}[added.member.id] == moved
                with pytest.raises(ConfChangeRefused):
                    await c.member_promote(leader.node.id)  # already a voter: the leader says
                await c.member_remove(added.member.id)
                assert len(await c.member_list()) == 3
            # every write above reached the leader through the follower
            assert follower.server.service.forwarded > 0
            assert _direct_client_conns(leader) == 0
            # and last, leadership moves to the follower, asked of the follower
            assert await c.move_leader(follower.node.id) == follower.node.id


async def test_without_forwarding_the_client_goes_to_the_leader(tmp_path: Path) -> None:
    """The control: a follower that does not forward answers NotLeader, and the client dials
    the leader itself; the check of the test above sees it."""
    async with LocalCluster(3, tmp_path) as cluster:
        leader = await cluster.wait_leader()
        await cluster.wait_converged()
        follower = _follower(cluster, leader)
        assert follower.server is not None
        follower.server.service.forwarder = None
        async with Client([follower.client_addr]) as c:
            await c.put("a", "1")
            assert _direct_client_conns(leader) >= 1
        assert follower.server.service.forwarded == 0


class _LoseFirstAnswer:
    """A forwarder whose first answer from the leader is lost on the way back."""

    def __init__(self, inner: Forwarder) -> None:
        self.inner = inner
        self.calls = 0

    async def call(self, leader_addr: str, method: Method, payload: Any) -> Any:
        self.calls += 1
        answer = await self.inner.call(leader_addr, method, payload)
        if self.calls == 1:
            raise ConnectionLost("the answer from the leader was lost")
        return answer

    async def close(self) -> None:
        await self.inner.close()


async def test_a_retried_forwarded_write_is_applied_once(tmp_path: Path) -> None:
    async with LocalCluster(3, tmp_path) as cluster:
        leader = await cluster.wait_leader()
        await cluster.wait_converged()
        follower = _follower(cluster, leader)
        assert follower.server is not None and follower.node is not None
        await _knows_leader_addr(follower, leader)
        svc = follower.server.service
        assert svc.forwarder is not None
        lossy = _LoseFirstAnswer(svc.forwarder)
        svc.forwarder = lossy
        ctx = CallContext(client_id=77, seq=1)
        with pytest.raises(ConnectionLost):
            await svc.put(PutRequest(b"once", b"v"), ctx)
        retried = await svc.put(PutRequest(b"once", b"v"), ctx)  # the client's retry
        assert lossy.calls == 2
        r = await svc.range(op_get(b"once"))
        assert r.kvs[0].version == 1  # applied once
        assert r.kvs[0].mod_revision == retried.header.revision


async def test_a_forwarded_call_is_not_forwarded_again(tmp_path: Path) -> None:
    """A member that receives a forwarded call and does not lead answers NotLeader: calls
    never bounce between members."""
    async with LocalCluster(3, tmp_path) as cluster:
        leader = await cluster.wait_leader()
        await cluster.wait_converged()
        follower = _follower(cluster, leader)
        assert follower.server is not None
        svc = follower.server.service
        # NoLeader too: on a loaded machine the follower may be between two leaders
        with pytest.raises((NotLeader, NoLeader)):
            await svc.put(PutRequest(b"k", b"v"), CallContext(forwarded=True))
        with pytest.raises((NotLeader, NoLeader)):
            await svc.lease_keep_alive(LeaseKeepAliveRequest(1), CallContext(forwarded=True))
        assert svc.forwarded == 0


async def test_a_follower_waits_for_the_leaders_address_instead_of_refusing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Right after start-up the leader's client address reaches a follower through the log
    a moment later; a write arriving in between is forwarded once it is known."""
    async with LocalCluster(3, tmp_path) as cluster:
        leader = await cluster.wait_leader()
        follower = _follower(cluster, leader)
        await _knows_leader_addr(follower, leader)
        assert follower.node is not None and follower.server is not None
        real = follower.node.not_leader
        unknown = [3]

        def not_leader() -> NotLeader:
            err = real()
            if unknown[0] > 0:
                unknown[0] -= 1
                return NotLeader(err.leader_hint, "")  # not published yet
            return err

        monkeypatch.setattr(follower.node, "not_leader", not_leader)
        r = await follower.server.service.put(PutRequest(b"early", b"v"), CallContext(5, 1))
        assert unknown[0] == 0 and r.header.member_id == follower.node.id
        assert follower.server.service.forwarded == 1


async def test_with_leader_affinity_the_client_finds_the_leader_through_a_follower(
    tmp_path: Path,
) -> None:
    """The default client: its first write is forwarded; the answer names the leader, whose
    address the client looks up, and the next writes go there directly (one hop fewer)."""
    async with LocalCluster(3, tmp_path) as cluster:
        leader = await cluster.wait_leader()
        follower = _follower(cluster, leader)
        await _knows_leader_addr(follower, leader)
        assert follower.server is not None and leader.node is not None
        async with Client([follower.client_addr], command_timeout=10.0) as c:
            first = await c.put("a", "1")
            assert first.header.leader_id == leader.node.id
            async with asyncio.timeout(10):
                while c.leader_endpoint != leader.client_addr:
                    await c.put("a", "again")
            before = follower.server.service.forwarded
            for i in range(5):
                await c.put(f"direct{i}", "v")
            assert follower.server.service.forwarded == before
            assert _direct_client_conns(leader) == 1
