"""The sans-IO codec: frames, limits, handshake, raft values."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv import wire
from raftkv.errors import (
    FrameTooLarge,
    HandshakeRefused,
    LocalProtocolError,
    RemoteProtocolError,
)
from raftkv.raft.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

u64 = st.integers(0, 2**64 - 1)
entries = st.builds(Entry, u64, u64, st.sampled_from(EntryType), st.binary(max_size=64))
conf_states = st.builds(
    ConfState,
    st.lists(u64, max_size=4).map(tuple),
    st.lists(u64, max_size=2).map(tuple),
)
snapshots = st.builds(
    Snapshot, st.builds(SnapshotMeta, u64, u64, conf_states), st.binary(max_size=64)
)
messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    to=u64,
    frm=u64,
    term=u64,
    log_term=u64,
    index=u64,
    entries=st.lists(entries, max_size=4).map(tuple),
    commit=u64,
    reject=st.booleans(),
    reject_hint=u64,
    snapshot=st.none() | snapshots,
    context=st.binary(max_size=16),
)


@given(m=messages)
@settings(max_examples=200, deadline=None)
def test_message_round_trip_through_frames(m: Message) -> None:
    frame = wire.encode_frame(wire.message_to_wire(m))
    (obj,) = wire.FrameDecoder(wire.MAX_PEER_FRAME).feed(frame)
    back = wire.message_from_wire(obj)
    assert back == m
    assert type(back.type) is MessageType and all(type(e.type) is EntryType for e in back.entries)


def test_decoder_reassembles_frames_split_anywhere() -> None:
    objs: list[Any] = [[1, b"a" * 300], "x", {"k": [1, 2]}, []]
    stream = b"".join(wire.encode_frame(o) for o in objs)
    dec = wire.FrameDecoder()
    out: list[Any] = []
    for i in range(len(stream)):
        out += dec.feed(stream[i : i + 1])
    assert out == objs and dec.buffered == 0
    assert wire.FrameDecoder().feed(stream) == objs


def test_oversized_frame_refused_from_header_alone() -> None:
    dec = wire.FrameDecoder(max_frame=1000)
    with pytest.raises(FrameTooLarge, match="1001 bytes exceeds the limit of 1000"):
        dec.feed((1001).to_bytes(4, "big"))
    with pytest.raises(FrameTooLarge):  # stays broken: the stream is out of sync
        dec.feed(wire.encode_frame(1))
    with pytest.raises(FrameTooLarge):
        wire.encode_frame(b"x" * 2000, max_frame=1000)


def test_garbage_body_is_a_remote_protocol_error() -> None:
    body = b"\xc1"  # a byte msgpack never uses
    with pytest.raises(RemoteProtocolError, match="malformed msgpack"):
        wire.FrameDecoder().feed(len(body).to_bytes(4, "big") + body)
    with pytest.raises(RemoteProtocolError):  # two objects in one frame
        wire.FrameDecoder().feed((2).to_bytes(4, "big") + b"\x01\x02")


@given(data=st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_fuzz_decoder_raises_only_protocol_errors(data: bytes) -> None:
    dec = wire.FrameDecoder(max_frame=256)
    try:
        for obj in dec.feed(data):
            with contextlib.suppress(RemoteProtocolError):
                wire.message_from_wire(obj)
    except (FrameTooLarge, RemoteProtocolError):
        pass


@pytest.mark.parametrize(
    "mutate",
    [
        lambda w: w[:5],
        lambda w: [99, *w[1:]],
        lambda w: [*w[:1], -1, *w[2:]],
        lambda w: [*w[:3], 2**64, *w[4:]],
        lambda w: [*w[:3], "1", *w[4:]],
        lambda w: [*w[:6], [[1, 2, 9, b""]], *w[7:]],
        lambda w: [*w[:6], [[1, 2, 0, "str"]], *w[7:]],
        lambda w: [*w[:8], 1, *w[9:]],
        lambda w: [*w[:10], [[1, 1, [[1], "x"]], b""], w[11]],
        lambda w: [*w[:11], "ctx"],
        lambda w: {"type": 3},
    ],
)
def test_malformed_messages_rejected(mutate: Any) -> None:
    good = wire.message_to_wire(
        Message(MessageType.APP, to=2, frm=1, term=3, entries=(Entry(3, 1, data=b"x"),))
    )
    wire.message_from_wire(good)
    bad = mutate(good)
    with pytest.raises(RemoteProtocolError):
        wire.message_from_wire(bad)


def test_unencodable_object_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        wire.encode_frame(object())


def hello(**kw: Any) -> wire.Handshake:
    base: dict[str, Any] = dict(
        protocol_version=wire.PROTOCOL_VERSION, cluster_id=0xC1, node_id=2, role="peer"
    )
    return wire.Handshake(**{**base, **kw})


def test_handshake_checks() -> None:
    ok = wire.Handshake.from_wire(msgpack.unpackb(msgpack.packb(hello().to_wire())))
    wire.check_handshake(ok, cluster_id=0xC1, role="peer", allowed_node_ids=frozenset({2}))
    cases = [
        (hello(cluster_id=0xC2), "cluster id mismatch"),
        (hello(protocol_version=99), "protocol version 99"),
        (hello(role="client"), "role 'client'"),
        (hello(node_id=5), "node 5 is not a member"),
        (hello(node_id=1), "our own node id"),
    ]
    for hs, reason in cases:
        with pytest.raises(HandshakeRefused, match=reason):
            wire.check_handshake(
                hs, cluster_id=0xC1, role="peer", allowed_node_ids=frozenset({2}), own_node_id=1
            )
    with pytest.raises(RemoteProtocolError):
        wire.Handshake.from_wire(["raftkv-hello", 1, 1, 1, "admin"])
    wire.check_handshake_reply(wire.handshake_reply())
    with pytest.raises(HandshakeRefused, match="refused by peer: nope"):
        wire.check_handshake_reply(wire.handshake_reply("nope"))


def test_snapshot_chunk_frames_cover_data() -> None:
    data = bytes(range(256)) * 40
    m = Message(MessageType.SNAP, to=2, frm=1, term=4, snapshot=Snapshot(SnapshotMeta(9, 4), data))
    frames = list(wire.snapshot_chunk_frames(5, m, 1000, 0))
    assert frames[0][0] == wire.FRAME_SNAP_BEGIN and frames[-1] == [wire.FRAME_SNAP_END, 5]
    chunks = frames[1:-1]
    assert len(chunks) == 11
    assert b"".join(c[3] for c in chunks) == data
    head = wire.message_from_wire(frames[0][2])
    assert head.snapshot is not None and head.snapshot.data == b""
    assert head.snapshot.meta == m.snapshot.meta  # type: ignore[union-attr]
