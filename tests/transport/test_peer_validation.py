"""A peer that sends impossible values, or is not who it says, never reaches the core.

Raw frames go to a real transport listening on 127.0.0.1; each must close that connection
with one logged warning (no traceback), deliver nothing, and leave the transport serving its
legitimate peers.  The last test sends a term 2^63 heartbeat to a real node.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from raftkv.api import PutRequest
from raftkv.protocol import wire
from raftkv.protocol.methods import member_id, split_addr
from raftkv.raft.types import Entry, Message, MessageType
from raftkv.server.transport import messages
from raftkv.testing import LocalCluster
from tests.transport.test_peer_transport import (
    Node,
    app,
    assert_closed_by_peer,
    raw_connect,
    raw_handshake,
)

BIG = 2**63  # beyond int64: SQLite cannot store it
SANE_MAX = 2**62


def hb(frm: int = 2, to: int = 1, **kw: Any) -> list[Any]:
    return messages.message_to_wire(Message(MessageType.HEARTBEAT, to=to, frm=frm, term=3, **kw))


def with_field(msg: list[Any], index: int, value: Any) -> list[Any]:
    out = list(msg)
    out[index] = value
    return out


# Field positions in a wire message: 3 term, 4 log_term, 5 index, 6 entries, 7 commit,
# 9 reject_hint, 10 snapshot.
IMPOSSIBLE: list[tuple[str, list[Any], str]] = [
    ("term 2^63", with_field(hb(), 3, BIG), "message.term: expected an int in 0..2\\^63-1"),
    ("term 2^64-1", with_field(hb(), 3, 2**64 - 1), "message.term"),
    ("term 2^63-1", with_field(hb(), 3, BIG - 1), "term .* beyond 2\\^62"),
    ("log_term 2^63", with_field(hb(), 4, BIG), "message.log_term"),
    ("index 2^63", with_field(hb(), 5, BIG), "message.index"),
    ("commit 2^63", with_field(hb(), 7, BIG), "message.commit"),
    ("commit 2^62+1", with_field(hb(), 7, SANE_MAX + 1), "commit .* beyond 2\\^62"),
    ("reject_hint 2^63", with_field(hb(), 9, BIG), "message.reject_hint"),
    (
        "entry term 2^63",
        with_field(messages.message_to_wire(app(2, 1, 0)), 6, [[BIG, 1, 0, b""]]),
        "entry.term",
    ),
    (
        "entry index 2^63",
        with_field(messages.message_to_wire(app(2, 1, 0)), 6, [[1, BIG, 0, b""]]),
        "entry.index",
    ),
    (
        "entry index gap",
        messages.message_to_wire(
            Message(MessageType.APP, to=1, frm=2, term=1, index=4, entries=(Entry(1, 9),))
        ),
        "entry 0 has index 9, expected 5",
    ),
    (
        "snapshot term 2^63",
        with_field(hb(), 10, [[5, BIG, [[1, 2], []]], b""]),
        "snapshot.term",
    ),
    (
        "snapshot index 2^62+1",
        with_field(hb(), 10, [[SANE_MAX + 1, 3, [[1, 2], []]], b""]),
        "snapshot index .* beyond 2\\^62",
    ),
    ("spoofed sender (the other peer)", hb(frm=3), "message 3->1 on the connection of node 2"),
    ("sender not a member", hb(frm=77), "message 77->1 on the connection of node 2"),
    ("not for this node", hb(to=3), "message 2->3 on the connection of node 2"),
    (
        "local type",
        messages.message_to_wire(Message(MessageType.HUP, to=1, frm=2)),
        "local message",
    ),
]


@pytest.fixture
async def trio() -> AsyncIterator[tuple[Node, Node, Node]]:
    """Node 1 (the one under test) with peers 2 and 3, all real transports on 127.0.0.1."""
    a, b, c = Node(1), Node(2), Node(3)
    for n in (a, b, c):
        await n.t.start()
    a.t.add_peer(2, b.t.listen_addr)
    a.t.add_peer(3, c.t.listen_addr)
    b.t.add_peer(1, a.t.listen_addr)
    c.t.add_peer(1, a.t.listen_addr)
    try:
        yield a, b, c
    finally:
        for n in (a, b, c):
            await n.t.stop()


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition that no event signals (the server side of a socket)."""
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.01)


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "raftkv.server.transport"
        and r.levelno == logging.WARNING
        and text in r.getMessage()
    ]


@pytest.mark.parametrize(
    ("msg", "reason"), [(m, r) for _, m, r in IMPOSSIBLE], ids=[i for i, _, _ in IMPOSSIBLE]
)
async def test_impossible_message_is_refused_and_never_delivered(
    trio: tuple[Node, Node, Node], caplog: pytest.LogCaptureFixture, msg: list[Any], reason: str
) -> None:
    a, b, _ = trio
    caplog.set_level(logging.WARNING, logger="raftkv.server.transport")
    r, w, reply = await raw_handshake(a.t.listen_addr, node_id=2)
    assert reply[0] == "raftkv-welcome"
    # A good message first in the same batch: the batch is checked whole, nothing delivered.
    good = messages.message_to_wire(Message(MessageType.HEARTBEAT, to=1, frm=2, term=3))
    w.write(wire.encode_frame([messages.FRAME_MSGS, [good, msg]]))
    await assert_closed_by_peer(r)
    w.close()
    assert a.msgs == []
    assert a.t.stats.protocol_errors == 1
    lines = warnings_about(caplog, "closing connection from")
    assert len(lines) == 1 and lines[0].exc_info is None
    assert re.search(reason, lines[0].getMessage()), lines[0].getMessage()
    # The legitimate peer 2 still reaches node 1.
    b.t.send([app(2, 1, 5)])
    await a.wait(lambda: a.msgs == [app(2, 1, 5)])


async def test_impossible_snapshot_stream_head_is_refused(trio: tuple[Node, Node, Node]) -> None:
    a, b, _ = trio
    head = messages.message_to_wire(Message(MessageType.SNAP, to=1, frm=2, term=3))
    head[10] = [[5, BIG, [[1, 2], []]], b""]
    r, w, _ = await raw_handshake(a.t.listen_addr, node_id=2)
    w.write(wire.encode_frame([messages.FRAME_SNAP_BEGIN, 1, head, 10, 0]))
    await assert_closed_by_peer(r)
    w.close()
    assert a.msgs == [] and a.t.stats.protocol_errors == 1
    b.t.send([app(2, 1, 1)])
    await a.wait(lambda: a.msgs == [app(2, 1, 1)])


async def test_unknown_node_is_refused_at_the_handshake(
    trio: tuple[Node, Node, Node], caplog: pytest.LogCaptureFixture
) -> None:
    a, _, _ = trio
    caplog.set_level(logging.WARNING, logger="raftkv.server.transport")
    r, w, reply = await raw_handshake(a.t.listen_addr, node_id=77)
    assert reply[0] == "raftkv-refused" and "node 77 is not a member" in reply[1]
    await assert_closed_by_peer(r)
    w.close()
    assert len(warnings_about(caplog, "node 77 is not a member")) == 1


async def test_removed_peer_is_refused(trio: tuple[Node, Node, Node]) -> None:
    a, _, _ = trio
    a.t.remove_peer(3)
    r, w, reply = await raw_handshake(a.t.listen_addr, node_id=3)
    assert reply[0] == "raftkv-refused" and "node 3 is not a member" in reply[1]
    await assert_closed_by_peer(r)
    w.close()
    assert a.msgs == []


# --- connection limits on the peer port ----------------------------------------------------


async def test_handshake_deadline_is_total_not_per_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A slow-loris dialler that trickles its handshake is closed at the total deadline."""
    caplog.set_level(logging.WARNING, logger="raftkv.server.transport")
    a = Node(1, handshake_timeout=0.5)
    await a.t.start()
    try:
        r, w = await raw_connect(a.t.listen_addr)
        hello = wire.encode_frame(
            wire.Handshake(wire.PROTOCOL_VERSION, 0xC0FFEE, 2, "peer").to_wire()
        )
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def trickle() -> None:  # the attack: one byte every 0.2 s, well under 0.5 s
            for i in range(len(hello) - 1):
                w.write(hello[i : i + 1])
                await asyncio.sleep(0.2)

        sender = asyncio.create_task(trickle())
        try:
            await assert_closed_by_peer(r)
        finally:
            sender.cancel()
            w.close()
        elapsed = loop.time() - started
        assert 0.4 < elapsed < 3.0  # closed at the deadline, not trickled on
        assert len(hello) - 1 > 20  # the trickle alone would have lasted over 4 s
        lines = warnings_about(caplog, "no handshake within 0.5s")
        assert len(lines) == 1 and lines[0].exc_info is None
        assert a.msgs == []
    finally:
        await a.t.stop()


async def test_oversized_pre_handshake_frame_is_refused_from_its_header(
    trio: tuple[Node, Node, Node], caplog: pytest.LogCaptureFixture
) -> None:
    a, b, _ = trio
    caplog.set_level(logging.WARNING, logger="raftkv.server.transport")
    r, w = await raw_connect(a.t.listen_addr)
    w.write((4 * 1024 * 1024).to_bytes(4, "big") + b"x" * 1000)  # a 4 MiB "handshake"
    await assert_closed_by_peer(r)
    w.close()
    lines = warnings_about(caplog, "exceeds the limit of 65536")
    assert len(lines) == 1 and lines[0].exc_info is None
    # After the handshake the full limit applies: a large message still goes through.
    big = Message(
        MessageType.APP, to=1, frm=2, term=1, index=0, entries=(Entry(1, 1, data=b"y" * 200_000),)
    )
    b.t.send([big])
    await a.wait(lambda: a.msgs == [big])


async def test_connection_cap_refuses_the_extra_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="raftkv.server.transport")
    a, b = Node(1, max_inbound=2, handshake_timeout=30.0), Node(2)
    await a.t.start()
    await b.t.start()
    a.t.add_peer(2, b.t.listen_addr)
    try:
        held = [await raw_connect(a.t.listen_addr) for _ in range(2)]
        await until(lambda: a.t.inbound_connections == 2)  # both accepted and counted
        r, w = await raw_connect(a.t.listen_addr)
        await assert_closed_by_peer(r)
        w.close()
        assert a.t.stats.connections_refused == 1
        lines = warnings_about(caplog, "2 peer connections already open")
        assert len(lines) == 1 and lines[0].exc_info is None
        for _, hw in held:
            hw.close()
        await until(lambda: a.t.inbound_connections == 0)
        # With the slots free again, the real peer gets in.
        b.t.add_peer(1, a.t.listen_addr)
        b.t.send([app(2, 1, 0)])
        await a.wait(lambda: a.msgs == [app(2, 1, 0)])
    finally:
        await a.t.stop()
        await b.t.stop()


# --- a real node ---------------------------------------------------------------------------


async def test_term_2_63_heartbeat_does_not_poison_a_real_node(tmp_path: Path) -> None:
    """Once, this heartbeat made the leader adopt term 2^63 and SQLite fail with
    OverflowError; now the transport refuses it and the member carries on."""
    async with LocalCluster(3, tmp_path) as cluster:
        leader = await cluster.wait_leader()
        assert leader.node is not None
        node = leader.node
        other = next(m for m in cluster.members.values() if m is not leader)
        spoofed = member_id(other.name, "raftkv")  # anyone can claim a member's id
        for term in (BIG, BIG - 1, SANE_MAX + 1):
            r, w, reply = await raw_handshake(
                split_addr(leader.peer_addr), node_id=spoofed, cluster_id=node.cluster_id
            )
            assert reply[0] == "raftkv-welcome"
            msg = hb(frm=spoofed, to=node.id, commit=0)
            msg[3] = term
            w.write(wire.encode_frame([messages.FRAME_MSGS, [msg]]))
            await assert_closed_by_peer(r)
            w.close()
        assert node.term < SANE_MAX and node.fatal is None
        r2 = await node.propose(PutRequest(b"after-2^63", b"still here"))
        assert r2.error is None
        await cluster.wait_converged()
        assert all(n.fatal is None and n.term < SANE_MAX for n in cluster.nodes())
