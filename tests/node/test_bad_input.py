"""Bad input on every door: a clear, typed error, the node keeps running, nothing is lost."""

from __future__ import annotations

import asyncio
import sqlite3
import struct
from pathlib import Path

import pytest

from raftkv.api import LeaseRevokeRequest, PutRequest, RangeRequest
from raftkv.errors import CorruptionError, LeaseNotFound, RequestTooLarge
from raftkv.protocol import wire
from raftkv.protocol.methods import split_addr
from raftkv.testing import LocalCluster


async def _open(addr: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = split_addr(addr)
    return await asyncio.open_connection(host, port)


async def _closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """True once the server has closed the connection (EOF), within a bounded wait."""
    try:
        while True:
            data = await asyncio.wait_for(reader.read(1 << 16), 5.0)
            if not data:
                return True
    except (ConnectionError, TimeoutError):
        return True


async def _client_roundtrip(addr: str) -> None:
    """A well-behaved client still gets served: handshake, then a serializable range."""
    reader, writer = await _open(addr)
    try:
        writer.write(
            wire.encode_frame(wire.Handshake(wire.PROTOCOL_VERSION, 0, 0, "client").to_wire())
        )
        dec = wire.FrameDecoder()
        frames: list[object] = []
        while len(frames) < 1:
            frames += dec.feed(await asyncio.wait_for(reader.read(1 << 16), 5.0))
        wire.check_handshake_reply(frames[0])
        from raftkv.protocol import codec

        req = codec.to_plain(RangeRequest(b"k", serializable=True))
        writer.write(wire.encode_frame([7, "range", req]))
        frames = frames[1:]
        while not frames:
            frames += dec.feed(await asyncio.wait_for(reader.read(1 << 16), 5.0))
        reply = frames[0]
        assert isinstance(reply, list) and reply[0] == 7 and reply[1] == 0
    finally:
        writer.close()


async def _commit_works(cluster: LocalCluster) -> None:
    leader = await cluster.wait_leader()
    assert leader.node is not None
    r = await leader.node.propose(PutRequest(b"still", b"alive"))
    assert r.error is None


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\x00\x00\x05\xc1\xc1\xc1\xc1\xc1",  # a frame of reserved msgpack bytes
        b"\xff\xff\xff\xff" + b"x" * 100,  # a length over the limit
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # the wrong protocol entirely
    ],
    ids=["garbage", "oversized", "http"],
)
async def test_garbage_on_client_and_peer_ports_closes_only_that_connection(
    tmp_path: Path, payload: bytes
) -> None:
    async with LocalCluster(3, tmp_path) as cluster:
        m = next(iter(cluster.members.values()))
        for addr in (m.client_addr, m.peer_addr):
            reader, writer = await _open(addr)
            writer.write(payload)
            await writer.drain()
            assert await _closed_by_peer(reader)
            writer.close()
        await _client_roundtrip(m.client_addr)
        await _commit_works(cluster)
        assert all(n.fatal is None for n in cluster.nodes())


async def test_wrong_cluster_id_is_refused_with_a_reason(tmp_path: Path) -> None:
    async with LocalCluster(3, tmp_path) as cluster:
        m = next(iter(cluster.members.values()))
        assert m.node is not None
        for addr, role in ((m.peer_addr, "peer"), (m.client_addr, "client")):
            reader, writer = await _open(addr)
            hs = wire.Handshake(wire.PROTOCOL_VERSION, m.node.cluster_id ^ 0xBAD, 99, role)
            writer.write(wire.encode_frame(hs.to_wire()))
            dec = wire.FrameDecoder()
            frames: list[object] = []
            while not frames:
                data = await asyncio.wait_for(reader.read(1 << 16), 5.0)
                assert data, "the refusal must come with a reason before the close"
                frames = dec.feed(data)
            with pytest.raises(Exception, match="cluster id mismatch"):
                wire.check_handshake_reply(frames[0])
            writer.close()
        await _commit_works(cluster)


async def test_oversized_value_and_unknown_lease_are_typed_errors(tmp_path: Path) -> None:
    async with LocalCluster(3, tmp_path) as cluster:
        leader = await cluster.wait_leader()
        assert leader.node is not None
        big = await leader.node.propose(PutRequest(b"big", b"x" * (2 * 1024 * 1024)))
        assert isinstance(big.error, RequestTooLarge)
        gone = await leader.node.propose(LeaseRevokeRequest(12345))
        assert isinstance(gone.error, LeaseNotFound)
        ok = await leader.node.propose(PutRequest(b"after", b"fine"))
        assert ok.error is None
        await cluster.wait_converged()


async def test_corrupt_snapshot_is_detected_and_never_loaded(tmp_path: Path) -> None:
    async with LocalCluster(3, tmp_path, snapshot_count=50) as cluster:
        leader = await cluster.wait_leader()
        assert leader.node is not None
        for i in range(120):
            await leader.node.propose(PutRequest(b"c%03d" % i, b"v"))
        await cluster.wait_converged()
        victim = next(m for m in cluster.members.values() if m is not leader)
        await cluster.stop_member(victim.name)
        snaps = sorted((victim.data_dir / "snap").glob("*.snap"))
        assert snaps, "a snapshot should have been taken"
        raw = bytearray(snaps[-1].read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        snaps[-1].write_bytes(bytes(raw))
        with pytest.raises(CorruptionError):
            await cluster.start_member(victim.name)
        # The rest of the cluster keeps serving and lost nothing.
        r = await leader.node.propose(PutRequest(b"after-corruption", b"ok"))
        assert r.error is None
        resp = leader.node.fsm.range(RangeRequest(b"c", b"d", count_only=True))
        assert resp.count == 120


async def test_corrupt_log_row_is_detected(tmp_path: Path) -> None:
    async with LocalCluster(3, tmp_path) as cluster:
        leader = await cluster.wait_leader()
        assert leader.node is not None
        for i in range(30):
            await leader.node.propose(PutRequest(b"r%03d" % i, b"v"))
        await cluster.wait_converged()
        victim = next(m for m in cluster.members.values() if m is not leader)
        await cluster.stop_member(victim.name)
        db = sqlite3.connect(victim.data_dir / "raft.db")
        db.execute(
            "UPDATE entries SET data = X'4B00' WHERE idx = (SELECT MAX(idx) - 3 FROM entries)"
        )
        db.commit()
        db.close()
        with pytest.raises(CorruptionError):
            await cluster.start_member(victim.name)
        r = await leader.node.propose(PutRequest(b"still", b"ok"))
        assert r.error is None


async def test_truncated_log_tail_is_detected_and_the_cluster_loses_nothing(
    tmp_path: Path,
) -> None:
    """Rows missing from the end of a member's log are corruption (SQLite commits are atomic,
    so a crash cannot tear them): the member refuses to start, the others keep everything."""
    async with LocalCluster(3, tmp_path) as cluster:
        leader = await cluster.wait_leader()
        assert leader.node is not None
        for i in range(30):
            await leader.node.propose(PutRequest(b"t%03d" % i, b"v"))
        await cluster.wait_converged()
        victim = next(m for m in cluster.members.values() if m is not leader)
        await cluster.stop_member(victim.name)
        db = sqlite3.connect(victim.data_dir / "raft.db")
        db.execute("DELETE FROM entries WHERE idx > (SELECT MAX(idx) - 5 FROM entries)")
        db.commit()
        db.close()
        with pytest.raises(CorruptionError, match="log truncated"):
            await cluster.start_member(victim.name)
        r = await leader.node.propose(PutRequest(b"after", b"ok"))
        assert r.error is None
        resp = leader.node.fsm.range(RangeRequest(b"t", b"u", count_only=True))
        assert resp.count == 30


def test_frame_header_is_four_byte_big_endian() -> None:
    """The fixture payloads above rely on the frame layout; keep them honest."""
    frame = wire.encode_frame([1])
    assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4


async def test_configured_limits_are_enforced_with_typed_errors(tmp_path: Path) -> None:
    from raftkv import Client
    from raftkv.api import Limits
    from raftkv.errors import TooManyOps
    from raftkv.server.node import fsm_with_limits

    limits = Limits(max_txn_ops=2, max_value_bytes=1000, max_request_bytes=4096)
    async with (
        LocalCluster(3, tmp_path, fsm_factory=fsm_with_limits(limits)) as cluster,
        Client(cluster.endpoints) as c,
    ):
        with pytest.raises(TooManyOps):
            await c.txn(
                [], [PutRequest(b"a", b"1"), PutRequest(b"b", b"2"), PutRequest(b"c", b"3")], []
            )
        with pytest.raises(RequestTooLarge):
            await c.put(b"big", b"x" * 2000)
        assert (await c.put(b"ok", b"x" * 900)).header.revision > 1
