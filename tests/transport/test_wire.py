"""The sans-IO codec: frames, limits, handshake, raft values."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.errors import (
    FrameTooLarge,
    HandshakeRefused,
    LocalProtocolError,
    RemoteProtocolError,
)
from raftkv.protocol import wire
from raftkv.raft.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)
from raftkv.server.transport import messages

i64 = st.integers(0, 2**63 - 1)  # raft integers are bounded to int64 at decode
entries = st.builds(Entry, i64, i64, st.sampled_from(EntryType), st.binary(max_size=64))
conf_states = st.builds(
    ConfState,
    st.lists(i64, max_size=4).map(tuple),
    st.lists(i64, max_size=2).map(tuple),
)
snapshots = st.builds(
    Snapshot, st.builds(SnapshotMeta, i64, i64, conf_states), st.binary(max_size=64)
)
raft_messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    to=i64,
    frm=i64,
    term=i64,
    log_term=i64,
    index=i64,
    entries=st.lists(entries, max_size=4).map(tuple),
    commit=i64,
    reject=st.booleans(),
    reject_hint=i64,
    snapshot=st.none() | snapshots,
    context=st.binary(max_size=16),
)


@given(m=raft_messages)
@settings(max_examples=200, deadline=None)
def test_message_round_trip_through_frames(m: Message) -> None:
    frame = wire.encode_frame(messages.message_to_wire(m))
    (obj,) = wire.FrameDecoder(wire.MAX_PEER_FRAME).feed(frame)
    back = messages.message_from_wire(obj)
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
                messages.message_from_wire(obj)
    except (FrameTooLarge, RemoteProtocolError):
        pass


@pytest.mark.parametrize(
    "mutate",
    [
        lambda w: w[:5],
        lambda w: [99, *w[1:]],
        lambda w: [*w[:1], -1, *w[2:]],
        lambda w: [*w[:3], 2**64, *w[4:]],
        lambda w: [*w[:3], 2**63, *w[4:]],  # term beyond int64 (SQLite's INTEGER)
        lambda w: [*w[:7], 2**63, *w[8:]],  # commit
        lambda w: [*w[:6], [[2**63, 1, 0, b""]], *w[7:]],  # entry term
        lambda w: [*w[:6], [[1, 2**63, 0, b""]], *w[7:]],  # entry index
        lambda w: [*w[:10], [[2**63, 1, [[1], []]], b""], w[11]],  # snapshot index
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
    good = messages.message_to_wire(
        Message(MessageType.APP, to=2, frm=1, term=3, entries=(Entry(3, 1, data=b"x"),))
    )
    messages.message_from_wire(good)
    bad = mutate(good)
    with pytest.raises(RemoteProtocolError):
        messages.message_from_wire(bad)


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
    frames = list(messages.snapshot_chunk_frames(5, m, 1000, 0))
    assert frames[0][0] == messages.FRAME_SNAP_BEGIN and frames[-1] == [messages.FRAME_SNAP_END, 5]
    chunks = frames[1:-1]
    assert len(chunks) == 11
    assert b"".join(c[3] for c in chunks) == data
    head = messages.message_from_wire(frames[0][2])
    assert head.snapshot is not None and head.snapshot.data == b""
    assert head.snapshot.meta == m.snapshot.meta  # type: ignore[union-attr]


def test_decoder_limit_raised_after_the_first_frame() -> None:
    """A small pre-handshake limit; what follows the handshake is checked only once raised."""
    hs = wire.encode_frame(hello().to_wire())
    big = wire.encode_frame(b"x" * 10_000)
    dec = wire.FrameDecoder(max_frame=1000)
    assert dec.feed(hs + big[:10], max_frames=1) == [hello().to_wire()]
    dec.max_frame = 1 << 20
    assert dec.feed(b"") == []
    assert dec.feed(big[10:]) == [b"x" * 10_000]
    small = wire.FrameDecoder(max_frame=1000)
    with pytest.raises(FrameTooLarge, match="10003 bytes exceeds the limit of 1000"):
        small.feed(big[:4])


def _msg(t: MessageType = MessageType.APP, **kw: Any) -> Message:
    base: dict[str, Any] = dict(to=2, frm=1, term=5, log_term=4, index=10, commit=9)
    base.update(kw)
    return Message(t, **base)


@given(m=raft_messages)
@settings(max_examples=200, deadline=None)
def test_check_message_refuses_only_with_a_protocol_error(m: Message) -> None:
    with contextlib.suppress(RemoteProtocolError):
        messages.check_message(m)


def test_check_message_accepts_what_the_core_sends() -> None:
    for m in [
        _msg(entries=(Entry(4, 11, data=b"a"), Entry(5, 12, data=b"b"))),
        _msg(entries=(), commit=2**40),  # an APP probe: commit may exceed index + entries
        _msg(MessageType.HEARTBEAT, log_term=0, index=0, commit=7),
        _msg(MessageType.HEARTBEAT, log_term=0, index=0, commit=messages.MAX_SANE_RAFT_INT),
        _msg(MessageType.PRE_VOTE, term=6, log_term=5, index=20, commit=0),
        _msg(MessageType.APP_RESP, term=5, log_term=3, index=10, reject=True, reject_hint=8),
        _msg(MessageType.SNAP, snapshot=Snapshot(SnapshotMeta(9, 5), b"")),
        _msg(MessageType.PROP, term=0, log_term=0, index=0, entries=(Entry(0, 0, data=b"m"),)),
        _msg(MessageType.READ_INDEX, term=0, log_term=0, index=0, commit=0, context=b"r"),
    ]:
        messages.check_message(m)


@pytest.mark.parametrize(
    ("m", "reason"),
    [
        (_msg(MessageType.HEARTBEAT, term=2**62 + 1), "term .* beyond 2\\^62"),
        (_msg(MessageType.HEARTBEAT, commit=2**62 + 1), "commit .* beyond 2\\^62"),
        (_msg(MessageType.APP_RESP, index=2**63 - 1), "index .* beyond 2\\^62"),
        (_msg(log_term=6), "log_term 6 above term 5"),
        (_msg(entries=(Entry(5, 12, data=b""),)), "index 12, expected 11"),
        (_msg(entries=(Entry(5, 11), Entry(5, 13))), "index 13, expected 12"),
        (_msg(entries=(Entry(6, 11, data=b""),)), "entry term 6 above term 5"),
        (_msg(MessageType.VOTE, log_term=9), "last log term 9 above term 5"),
        (_msg(MessageType.SNAP), "without a snapshot"),
        (_msg(MessageType.SNAP, snapshot=Snapshot(SnapshotMeta(9, 6), b"")), "term 6 above"),
        (
            _msg(MessageType.SNAP, snapshot=Snapshot(SnapshotMeta(2**62 + 1, 5), b"")),
            "snapshot index .* beyond 2\\^62",
        ),
        (
            _msg(MessageType.PROP, term=0, entries=(Entry(0, 2**62 + 1),)),
            "entry index .* beyond",
        ),
    ],
)
def test_check_message_refuses_impossible_values(m: Message, reason: str) -> None:
    with pytest.raises(RemoteProtocolError, match=reason):
        messages.check_message(m)
