"""The garbage nemesis: its frames are the real wire format with hostile values inside.

Fast tests check the generator (every kind appears, one seed gives the same frames, the frames
decode as the wire format says, the hostile part is there, nothing could change a workload's
data or the membership) and the sender against a small fake member; the slow one runs the
nemesis against a real cluster with kills and partitions and wants every member alive.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jepsen_like import garbage as g
from jepsen_like.nemesis import NEMESES, parse
from raftkv import api
from raftkv.errors import FrameTooLarge, ProtocolError, RemoteProtocolError
from raftkv.protocol import codec, wire
from raftkv.protocol.methods import Method, cluster_id, member_id
from raftkv.raft.types import LOCAL_MESSAGES
from raftkv.server.transport import messages

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("n1", "n2", "n3")
CLUSTER = g.Cluster(
    cluster_id({n: f"127.0.0.1:{2380 + i}" for i, n in enumerate(NAMES)}, "raftkv"),
    {n: member_id(n, "raftkv") for n in NAMES},
    term=7,
)
SHOTS = g.generate(CLUSTER, seed=11, per_kind=12)
_I64 = (1 << 63) - 1


def _frames(data: bytes, max_frame: int = wire.MAX_CLIENT_FRAME) -> list[Any]:
    return wire.FrameDecoder(max_frame).feed(data)


def _numbers(obj: Any) -> list[Any]:
    out: list[Any] = []
    stack = [obj]
    while stack:
        v = stack.pop()
        if type(v) in (int, float):
            out.append(v)
        elif type(v) is list:
            stack.extend(v)
        elif type(v) is dict:
            stack.extend(v.values())
    return out


def _hostile_number(obj: Any) -> bool:
    return any(
        (type(v) is float and not math.isfinite(v)) or (type(v) is int and not 0 <= v <= _I64)
        for v in _numbers(obj)
    )


def _plain(obj: Any) -> bool:
    """Only msgpack's plain types (no ext values such as timestamps)."""
    stack = [obj]
    while stack:
        v = stack.pop()
        if type(v) is list:
            stack.extend(v)
        elif type(v) is dict:
            stack.extend(v.keys())
            stack.extend(v.values())
        elif type(v) not in (int, float, str, bytes, bool, type(None)):
            return False
    return True


def _depth(obj: Any) -> int:
    best, stack = 0, [(obj, 1)]
    while stack:
        v, d = stack.pop()
        if type(v) is list:
            best = max(best, d)
            stack.extend((x, d + 1) for x in v)
    return best


def _of(kind: str) -> list[g.Shot]:
    out = [s for s in SHOTS if s.kind == kind]
    assert out, kind
    return out


def _requests(shot: g.Shot) -> list[list[Any]]:
    frames: list[Any] = []
    for ch in shot.chunks:
        frames += _frames(ch)
    return frames


# --- the generator ------------------------------------------------------------------------


def test_every_kind_is_generated_and_the_nemesis_is_registered() -> None:
    assert {s.kind for s in SHOTS} == set(g.CLIENT_KINDS) | set(g.PEER_KINDS)
    assert {s.port for s in _of("admin")} == {g.CLIENT}
    assert {s.port for s in _of("peer-term")} == {g.PEER}
    assert {s.member for s in SHOTS} == set(NAMES)
    assert isinstance(NEMESES["garbage"](), g.Garbage)
    assert [n.name for n in parse("garbage,kill")] == ["garbage", "kill"]


def test_one_seed_gives_the_same_frames() -> None:
    # Both drawn now, in the same process state: SHOTS was drawn at import, before other
    # test modules had run hypothesis, which can shift what a seed draws.
    first = g.generate(CLUSTER, seed=11, per_kind=12)
    again = g.generate(CLUSTER, seed=11, per_kind=12)
    assert again == first
    assert g.generate(CLUSTER, seed=12, per_kind=12) != first


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_the_valid_generator_follows_the_real_schemas(data: st.DataObject) -> None:
    cls = data.draw(st.sampled_from(g._REQUESTS))
    slots: list[g.Slot] = []
    plain = data.draw(st.composite(lambda draw: g.gen_plain(draw, cls, slots))())
    obj = codec.from_plain(cls, plain)  # the real codec accepts it: same layout, same types
    assert type(obj) is cls
    assert codec.from_plain(cls, codec.to_plain(obj)) == obj
    for seq, i, t in slots:
        assert g._fits(t, seq[i]), (cls, seq, i, t)


def test_client_frames_are_the_wire_format_with_a_client_handshake() -> None:
    framed = set(g.CLIENT_KINDS) - {
        "oversized",
        "truncated",
        "bad-msgpack",
        "bad-handshake",
        "bad-frame",
        "deep-nesting",
    }
    for s in SHOTS:
        if s.port != g.CLIENT or s.kind not in framed:
            continue
        (hello,) = _frames(s.handshake)
        hs = wire.Handshake.from_wire(hello)
        assert (hs.role, hs.protocol_version) == (wire.ROLE_CLIENT, wire.PROTOCOL_VERSION)
        reqs = _requests(s)
        assert reqs and s.replies == len(reqs)
        for r in reqs:
            assert type(r) is list and len(r) == 3 and type(r[0]) is int, (s.kind, r)
            if s.kind != "bad-method":
                assert r[1] in {str(m) for m in Method} - g.NEVER_SENT


def test_each_client_kind_carries_its_hostility() -> None:
    writes = {str(m) for m in g._WRITE_METHODS.values()}

    def inner(r: list[Any]) -> Any:
        wrapped = type(r[2]) is list and r[2][0] == codec.TAGS[api.Command]
        return r[2][1] if wrapped else r[2]

    for s in _of("wrong-type"):
        for r in _requests(s):
            cls = next(c for c, m in {**g._WRITE_METHODS, **g._READ_METHODS}.items() if m == r[1])
            want = api.Command if r[1] in writes else cls
            with pytest.raises(RemoteProtocolError):
                codec.from_plain(want, r[2])
    for s in _of("non-finite"):
        assert any(
            type(v) is float and not math.isfinite(v) for r in _requests(s) for v in _numbers(r[2])
        ), s
    for s in _of("out-of-range"):
        assert all(_hostile_number(r[2]) for r in _requests(s)), s
    for s in _of("wrong-method"):
        for r in _requests(s):
            own = {**g._WRITE_METHODS, **g._READ_METHODS}
            tag = r[2][1][0] if r[2][0] == codec.TAGS[api.Command] else r[2][0]
            assert str(own[codec._CLASS_BY_TAG[tag]]) != r[1], r
    internal = {codec.TAGS[api.LeaseCheckpointRequest], codec.TAGS[api.LeaseExpireRequest]}
    for s in _of("internal-command"):
        assert any(inner(r)[0] in internal for r in _requests(s)), s
    more = g.draw(g.strategy("internal-command", CLUSTER), 60, 1)
    assert any(s.sequential and s.replies == 4 and s.benign == (1, 4) for s in more)
    for s in _of("deep-nesting"):
        body = s.chunks[0][4:]
        try:
            obj = msgpack.unpackb(body, raw=False, strict_map_key=False)
        except Exception:
            continue  # deeper than msgpack itself unpacks: refused all the same
        deep = _depth(obj) > codec.MAX_NESTING
        assert deep or body.count(b"\x81\xa1k") > codec.MAX_NESTING, s
    for s in _of("bad-method"):
        for r in _requests(s):
            assert type(r[1]) is not str or r[1] not in {str(m) for m in Method}


def test_broken_frames_are_broken_the_way_they_say() -> None:
    for s in _of("oversized"):
        with pytest.raises(FrameTooLarge):
            _frames(s.chunks[0])
    for s in _of("truncated"):
        dec = wire.FrameDecoder(wire.MAX_CLIENT_FRAME)
        assert dec.feed(s.chunks[0]) == [] and dec.buffered > 0
    for s in _of("bad-frame"):
        for f in _requests(s):
            ok = type(f) is list and len(f) == 3 and type(f[0]) is int and 0 <= f[0] <= _I64
            assert not ok, f
    for s in _of("bad-msgpack"):
        try:
            frames = _frames(s.chunks[0])
        except RemoteProtocolError:
            continue
        assert all(not (type(f) is list and len(f) == 3) or not _plain(f) for f in frames), frames
    for s in _of("bad-handshake"):
        assert s.handshake == b""
        first, *more = _frames(s.chunks[0])
        # a hostile handshake, or a valid one with a request before the welcome
        assert first != g.client_hello_list() or more, s


def _walk_requests(obj: Any) -> list[list[Any]]:
    """Every tagged request array inside ``obj``."""
    out, stack = [], [obj]
    while stack:
        v = stack.pop()
        if type(v) is list:
            if v and type(v[0]) is int and v[0] in codec._CLASS_BY_TAG:
                out.append(v)
            stack.extend(v)
    return out


def test_nothing_sent_could_touch_workload_data_or_the_membership() -> None:
    keyed = {codec.TAGS[c] for c in (api.RangeRequest, api.PutRequest, api.DeleteRangeRequest)}
    keyed.add(codec.TAGS[api.Compare])
    for s in SHOTS:
        if s.port != g.CLIENT:
            continue
        for ch in s.chunks:
            try:
                frames = _frames(ch)
            except (RemoteProtocolError, FrameTooLarge):
                continue
            for f in frames:
                if type(f) is not list or len(f) != 3:
                    continue
                assert type(f[1]) is not str or f[1] not in g.NEVER_SENT
                for req in _walk_requests(f[2]):
                    tag = req[0]
                    if tag in keyed and len(req) > 1 and type(req[1]) is bytes:
                        assert req[1].startswith(g.NAMESPACE), (s.kind, req)
                    if tag == codec.TAGS[api.CompactionRequest] and len(req) > 1:
                        assert type(req[1]) is not int or req[1] >= 1 << 40 or req[1] < 0, req
                    if tag == codec.TAGS[api.LeaseRevokeRequest] and len(req) > 1:
                        assert type(req[1]) is not int or req[1] <= 0 or req[1] >= 1 << 62, req
                if f[1] == Method.MEMBER_ADD and type(f[2]) is dict:
                    usable = type(f[2].get("name")) is str and type(f[2].get("peer_addr")) is str
                    assert not usable, f
                if f[1] in (Method.MEMBER_REMOVE, Method.MEMBER_PROMOTE, Method.MOVE_LEADER):
                    pid = f[2].get("id") if type(f[2]) is dict else None
                    assert pid not in CLUSTER.members.values()


def _refusable(m: Any, to: int, frm: int) -> bool:
    """A peer message that a validating transport must refuse."""
    try:
        msg = messages.message_from_wire(m)
    except RemoteProtocolError:
        return True
    huge = [msg.term, msg.log_term, msg.index, msg.commit, msg.reject_hint]
    huge += [x for e in msg.entries for x in (e.term, e.index)]
    return (
        any(v > _I64 for v in huge)
        or msg.frm != frm
        or msg.to != to
        or msg.type in LOCAL_MESSAGES
        or msg.frm not in CLUSTER.members.values()
    )


def test_peer_frames_follow_the_wire_format_and_every_message_is_impossible() -> None:
    ids = CLUSTER.members
    n_messages = 0
    for s in SHOTS:
        if s.port != g.PEER:
            continue
        if s.handshake:
            (hello,) = _frames(s.handshake)
            hs = wire.Handshake.from_wire(hello)
            assert hs.role == wire.ROLE_PEER and hs.cluster_id == CLUSTER.cluster_id
            assert hs.node_id in ids.values() and hs.node_id != ids[s.member], "a real handshake"
            frm = hs.node_id
        else:
            frm = -1
        if s.kind in ("peer-oversized",):
            with pytest.raises(FrameTooLarge):
                _frames(s.chunks[0], wire.MAX_PEER_FRAME)
            continue
        data = b"".join(s.chunks)
        dec = wire.FrameDecoder(wire.MAX_PEER_FRAME)
        frames = dec.feed(data)
        if s.kind == "peer-truncated":
            assert frames == [] and dec.buffered > 0
            continue
        if s.kind == "peer-handshake":
            hs_obj, *frames = frames
            with pytest.raises(ProtocolError):
                hs = wire.Handshake.from_wire(hs_obj)
                wire.check_handshake(
                    hs,
                    cluster_id=CLUSTER.cluster_id,
                    role=wire.ROLE_PEER,
                    allowed_node_ids=frozenset(i for n, i in ids.items() if n != s.member),
                    own_node_id=ids[s.member],
                )
        for f in frames:
            if (
                type(f) is list
                and len(f) == 2
                and f[0] == messages.FRAME_MSGS
                and type(f[1]) is list
            ):
                for m in f[1]:
                    n_messages += 1
                    assert _refusable(m, ids[s.member], frm), (s.kind, m)
            if type(f) is list and f and f[0] == messages.FRAME_SNAP_BEGIN and len(f) == 5:
                assert _refusable(f[2], ids[s.member], frm), f
    assert n_messages > 50


# --- the sender, against a fake member ----------------------------------------------------


async def _fake_member(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: int
) -> None:
    dec = wire.FrameDecoder(wire.MAX_CLIENT_FRAME)
    welcomed = False
    try:
        while data := await reader.read(1 << 16):
            for f in dec.feed(data):
                if not welcomed:
                    welcomed = True
                    writer.write(wire.encode_frame(wire.handshake_reply()))
                    continue
                if answer < 0:
                    return
                writer.write(wire.encode_frame([f[0], answer, ["InvalidArgument", "no", {}]]))
    except Exception:
        return
    finally:
        writer.close()


@pytest.mark.parametrize(("answer", "outcome"), [(1, "error"), (0, "ok"), (-1, "closed")])
async def test_sender_tells_refusals_from_acceptance(answer: int, outcome: str) -> None:
    server = await asyncio.start_server(lambda r, w: _fake_member(r, w, answer), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tally = g.Tally()
    sender = g.Sender({("n1", g.CLIENT): f"127.0.0.1:{port}"}, tally)
    try:
        shot = next(s for s in _of("wrong-method"))
        shot = g.Shot(shot.kind, g.CLIENT, "n1", shot.handshake, shot.chunks, shot.replies)
        assert await sender.fire(shot) == outcome
        assert tally.sent["wrong-method"] == 1
        assert bool(tally.accepted) == (outcome == "ok")
        sender.spawn(sender.idle("n1", g.CLIENT, "handshake"))
        await asyncio.sleep(0.1)
        assert sender.writers
    finally:
        await sender.close()
        server.close()
        await server.wait_closed()
    assert not sender.writers and not sender.tasks
    assert tally.outcomes["idle"]["held"] == 1


def test_crash_line_finds_the_last_error_in_json_and_text_logs() -> None:
    lines = [
        {"level": "info", "msg": "node started"},
        {"level": "error", "msg": "storage commit failed", "exc": "Traceback\nOverflowError: x"},
        {"level": "info", "msg": "later"},
    ]
    text = "\n".join(json.dumps(x) for x in lines)
    assert g.crash_line(text) == "storage commit failed | OverflowError: x"
    assert g.crash_line("ok\nValueError: cannot convert float NaN\n\n") == (
        "ValueError: cannot convert float NaN"
    )
    assert g.crash_line("") == ""


# --- a real cluster -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.e2e
def test_garbage_with_kills_and_partitions_leaves_every_member_alive(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "jepsen_like", "run", "--out", str(out), "--workload", "register",
        "--nemesis", "garbage,kill,partition", "--time", "20", "--seed", "0",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    doc = json.loads((out / "results.json").read_text())
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text + json.dumps(doc["checks"], default=str)[:3000]
    assert text.strip().splitlines()[-1].startswith("VALID")
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    stops = [
        e["value"]
        for e in history
        if e["process"] == -1 and e["type"] == "info" and e["f"] == "stop-garbage"
    ]
    assert stops, "seed 0 draws the garbage nemesis first"
    for v in stops:
        assert not v.get("error") and v["dead"] == {} and v["unresponsive"] == [], v
        assert sorted(v["alive"]) == ["n1", "n2", "n3"], v
        # a short fault on a loaded machine may end before every kind went out
        assert len(set(v["sent"]) & set(g.CLIENT_KINDS)) >= 8, v["sent"]
        assert len(set(v["sent"]) & set(g.PEER_KINDS)) >= 6, v["sent"]
    assert doc["checks"]["convergence"]["valid"] is True
