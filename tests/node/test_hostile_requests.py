"""Requests crafted to break a member: each gets a clear, typed error and the cluster goes on.

Every test here reproduces an outage from raw frames in raftkv's own wire format (issue:
nothing a client sends can stop the apply loop), against a 127.0.0.1 cluster it started.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from raftkv.api import (
    Command,
    Compare,
    CompareResult,
    CompareTarget,
    LeaseCheckpoint,
    LeaseCheckpointRequest,
    LeaseExpireRequest,
    LeaseGrantRequest,
    LeaseTimeToLiveRequest,
    PutRequest,
    RangeRequest,
    TxnRequest,
)
from raftkv.client import Client
from raftkv.errors import ReplyTooLarge
from raftkv.protocol import codec, wire
from raftkv.protocol.methods import split_addr
from raftkv.testing import LocalCluster


class Raw:
    """One hand-driven client connection: the handshake, then ``call`` frame by frame."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.dec = wire.FrameDecoder(64 << 20)
        self.frames: list[Any] = []
        self.next_id = 1

    @classmethod
    async def open(cls, addr: str) -> Raw:
        host, port = split_addr(addr)
        raw = cls(*await asyncio.open_connection(host, port))
        hs = wire.Handshake(wire.PROTOCOL_VERSION, 0, 0, "client")
        raw.writer.write(wire.encode_frame(hs.to_wire()))
        wire.check_handshake_reply(await raw.frame())
        return raw

    async def frame(self) -> Any:
        while not self.frames:
            data = await asyncio.wait_for(self.reader.read(1 << 16), 10.0)
            assert data, "the member closed the connection instead of answering"
            self.frames += self.dec.feed(data)
        return self.frames.pop(0)

    async def call(self, method: Any, payload: Any) -> tuple[int, Any]:
        rid = self.next_id
        self.next_id += 1
        self.writer.write(wire.encode_frame([rid, method, payload]))
        reply = await self.frame()
        assert reply[0] == rid
        return reply[1], reply[2]

    def close(self) -> None:
        self.writer.close()


async def _leader_raw(cluster: LocalCluster) -> Raw:
    leader = await cluster.wait_leader()
    return await Raw.open(leader.client_addr)


def _cmd(req: Any, client_id: int = 0, seq: int = 0) -> Any:
    return codec.to_plain(Command(req, client_id, seq))


async def test_internal_commands_through_client_methods_are_refused(tmp_path: Path) -> None:
    """The reported outage: lease_grant 777, then through ``put`` a Command wrapping a
    LeaseCheckpointRequest with remaining TTL NaN, then a LeaseTimeToLiveRequest.  It stopped
    the Ready loop on every member, for good."""
    async with LocalCluster(3, tmp_path) as cluster:
        raw = await _leader_raw(cluster)
        try:
            kind, _ = await raw.call("lease_grant", _cmd(LeaseGrantRequest(ttl=60, id=777)))
            assert kind == 0
            nan_cp = _cmd(LeaseCheckpointRequest((LeaseCheckpoint(777, 1.0),)))
            nan_cp[1][1][0][2] = float("nan")
            kind, err = await raw.call("put", nan_cp)
            assert kind == 1 and err[0] == "remote_protocol" and "not finite" in err[1]
            finite_cp = _cmd(LeaseCheckpointRequest((LeaseCheckpoint(777, 1.0),)))
            for method in ("put", "txn", "lease_grant", "delete_range", "compact"):
                kind, err = await raw.call(method, finite_cp)
                assert kind == 1 and err[0] == "invalid_argument", (method, err)
                assert "LeaseCheckpointRequest" in err[1]
            kind, err = await raw.call("put", _cmd(LeaseExpireRequest((777,))))
            assert kind == 1 and err[0] == "invalid_argument"
            kind, err = await raw.call("put", _cmd(LeaseTimeToLiveRequest(777)))
            assert kind == 1 and err[0] == "invalid_argument"
            kind, err = await raw.call("lease_grant", _cmd(RangeRequest(b"k")))
            assert kind == 1 and err[0] == "invalid_argument"
            ttl_req = codec.to_plain(LeaseTimeToLiveRequest(777))
            kind, ttl = await raw.call("lease_time_to_live", ttl_req)
            assert kind == 0 and ttl[3] > 0, ttl
        finally:
            raw.close()
        leader = await cluster.wait_leader()
        assert leader.node is not None
        assert (await leader.node.propose(PutRequest(b"still", b"alive"))).error is None
        await cluster.wait_converged()
        assert all(n.fatal is None for n in cluster.nodes())


async def test_out_of_range_integers_and_non_finite_floats_are_refused(tmp_path: Path) -> None:
    async with LocalCluster(1, tmp_path) as cluster:
        raw = await _leader_raw(cluster)
        try:
            for bad in (1 << 63, (1 << 64) - 1):  # inside msgpack's u64, outside int64
                grant = _cmd(LeaseGrantRequest(ttl=60, id=1))
                grant[1][2] = bad
                kind, err = await raw.call("lease_grant", grant)
                assert kind == 1 and "64-bit" in err[1], err
            plain = _cmd(PutRequest(b"k", b"v"), client_id=1, seq=1)
            for bad_now in (float("inf"), float("-inf"), float("nan")):
                plain[4] = bad_now
                kind, err = await raw.call("put", plain)
                assert kind == 1 and "not finite" in err[1]
            kind, _ = await raw.call("put", _cmd(PutRequest(b"k", b"v"), client_id=1, seq=1))
            assert kind == 0
        finally:
            raw.close()
        assert all(n.fatal is None for n in cluster.nodes())


async def test_a_method_that_is_not_a_string_gets_a_typed_error(tmp_path: Path) -> None:
    async with LocalCluster(1, tmp_path) as cluster:
        raw = await _leader_raw(cluster)
        try:
            for method in (["put"], {"put": 1}, 7, None, b"put"):
                kind, err = await raw.call(method, None)
                assert kind == 1 and err[0] == "invalid_argument", (method, err)
            kind, _ = await raw.call("range", codec.to_plain(RangeRequest(b"k")))
            assert kind == 0, "the same connection still serves"
        finally:
            raw.close()


async def test_read_only_txns_are_served_by_read_index_not_the_log(tmp_path: Path) -> None:
    async with LocalCluster(3, tmp_path) as cluster:
        leader = await cluster.wait_leader()
        assert leader.node is not None
        async with Client(cluster.endpoints) as c:
            await c.put(b"a", b"1")
            # Members publish their client addresses through the log after start: wait
            # until every one has, so only this test's requests can add entries.
            for _ in range(500):
                if all(n.membership.published for n in cluster.nodes()):
                    break
                await asyncio.sleep(0.01)
            await cluster.wait_converged()
            before = leader.node.last_index
            is_one = Compare(b"a", CompareTarget.VALUE, CompareResult.EQUAL, b"1")
            for _ in range(20):
                nested = TxnRequest((), (RangeRequest(b"\0", b"\0"),))
                r = await c.txn([is_one], [RangeRequest(b"a"), nested], [])
                assert r.succeeded and r.responses[0].kvs[0].value == b"1"
            assert leader.node.last_index == before, "no entry for a read"
            w = await c.txn([is_one], [PutRequest(b"b", b"2")], [])
            assert w.succeeded
            assert leader.node.last_index > before, "writes still go through it"


async def test_large_replies_up_to_the_limit_are_accepted_and_beyond_it_refused(
    tmp_path: Path,
) -> None:
    """7 values of 1 MiB each (within every limit) failed with one ``get --prefix``: the
    7 MiB reply exceeded the client's frame limit and ended in Timeout."""
    async with LocalCluster(1, tmp_path) as cluster:
        m = await cluster.wait_leader()
        async with Client(cluster.endpoints) as c:
            for i in range(7):
                await c.put(b"big/%d" % i, bytes([i]) * (1 << 20))
            resp = await c.get(b"big/", prefix=True)
            assert [len(kv.value) for kv in resp.kvs] == [1 << 20] * 7
            assert m.server is not None
            m.server.max_reply_bytes = 3 << 20
            try:
                await c.get(b"big/", prefix=True)
            except ReplyTooLarge as e:
                assert "reply limit" in str(e) and "limit" in str(e)
            else:
                raise AssertionError("a reply over the limit must be refused")
            many = TxnRequest((), tuple(RangeRequest(b"big/", b"big0") for _ in range(8)))
            raw = await Raw.open(m.client_addr)
            try:
                kind, err = await raw.call("txn", _cmd(many))
                assert kind == 1 and err[0] == "reply_too_large"
            finally:
                raw.close()
            paged = await c.get(b"big/", prefix=True, limit=2)
            assert len(paged.kvs) == 2 and paged.more


async def test_a_retry_is_applied_once_across_a_leader_whose_clock_runs_790s_ahead(
    tmp_path: Path,
) -> None:
    """Exactly-once must not depend on a leader's clock: leadership passes to a member whose
    (injected) clock runs 790 s ahead, more than the 600 s session TTL, and the retry of the
    same (client id, seq) still gets the stored result."""
    async with LocalCluster(3, tmp_path) as cluster:
        old = await cluster.wait_leader()
        assert old.node is not None
        first = await old.node.propose_client(PutRequest(b"once", b"v", prev_kv=True), 42, 1)
        assert first.error is None
        skewed = next(m for m in cluster.members.values() if m is not old)
        assert skewed.node is not None
        skewed.node.clock_skew = 790.0
        await old.node.transfer_leadership(skewed.node.id)
        new = await cluster.wait_leader()
        assert new is skewed
        for i in range(5):
            assert (
                await skewed.node.propose_client(PutRequest(b"o%d" % i), 43, i + 1)
            ).error is None
        again = await skewed.node.propose_client(PutRequest(b"once", b"v", prev_kv=True), 42, 1)
        assert again.duplicate and again.response == first.response
        assert skewed.node.fsm.range(RangeRequest(b"once")).kvs[0].version == 1
        await cluster.wait_converged()


async def test_a_member_that_stops_serving_ends_its_watches_and_refuses_new_ones(
    tmp_path: Path,
) -> None:
    from raftkv.errors import StorageError

    async with LocalCluster(3, tmp_path) as cluster:
        leader = await cluster.wait_leader()
        follower = next(m for m in cluster.members.values() if m is not leader)
        assert follower.node is not None
        raw = await Raw.open(follower.client_addr)
        try:
            raw.writer.write(wire.encode_frame([1, "watch", {"key": b"w"}]))
            await raw.writer.drain()
            for _ in range(100):  # the watch task is registered once the frame is read
                assert follower.server is not None
                if any(c.tasks for c in follower.server._conns):
                    break
                await asyncio.sleep(0.01)
            follower.node.stop_serving(StorageError("injected: the disk is gone"))
            while True:  # the member closes the watching connection: clients resume elsewhere
                data = await asyncio.wait_for(raw.reader.read(1 << 16), 10.0)
                if not data:
                    break
        finally:
            raw.close()
        again = await Raw.open(follower.client_addr)
        try:
            kind, err = await again.call("watch", {"key": b"w"})
            assert kind == 3 and err[0] == "storage", (kind, err)  # END with the error
            kind, err = await again.call(
                "range", codec.to_plain(RangeRequest(b"w", serializable=True))
            )
            assert kind == 1 and "not serving" in err[1]
        finally:
            again.close()
