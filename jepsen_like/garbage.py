"""The ``garbage`` nemesis: hostile input on the members' client and peer ports.

While the fault lasts, frames generated from the real schemas are sent to the members:

* **client port** (after a client handshake, unless the handshake itself is the attack): the
  request dataclasses of :mod:`raftkv.api` in their :mod:`raftkv.protocol.codec` plain form (``[tag,
  field, ...]`` from :data:`raftkv.protocol.codec.TAGS` and the dataclass annotations) with one
  field replaced by a value of another type (``wrong-type``), by NaN or an infinity
  (``non-finite``) or by an integer outside int64 or below zero (``out-of-range``); requests
  sent with the method of another request type (``wrong-method``: a RangeRequest through
  ``lease_grant``, a ``Command`` wrapping a PutRequest through ``txn``...); the leader-only
  commands :class:`~raftkv.api.LeaseCheckpointRequest` and
  :class:`~raftkv.api.LeaseExpireRequest` wrapped in a ``Command`` and sent through ``put``,
  including the sequence "grant a lease, checkpoint it with a NaN TTL, ask its TTL through
  ``put``"
  (``internal-command``); txns and arrays nested far beyond the codec's limit
  (``deep-nesting``); ``method`` as a list, a map, an int, bytes or an unknown name
  (``bad-method``); frames that are not ``[req_id, method, payload]`` (``bad-frame``);
  undecodable msgpack bodies (``bad-msgpack``); length prefixes beyond the frame limit
  (``oversized``); frames cut short (``truncated``); hostile handshakes (``bad-handshake``);
  admin requests with hostile payloads (``admin``).
* **peer port**: a real peer handshake (the cluster id and the member ids derive from the
  initial member list, :func:`raftkv.protocol.methods.cluster_id` /
  :func:`~raftkv.protocol.methods.member_id`), impersonating another member, then raft messages in
  the layout of
  :func:`raftkv.server.transport.messages.message_to_wire` with terms, indexes or commits beyond
  int64 (``peer-term``, ``peer-index``, ``peer-commit``), a sender that is not a member or not the
  connection's (``peer-sender``), broken entries (``peer-entries``), unknown or local message
  types (``peer-type``), broken frames and snapshot streams (``peer-frame``), hostile
  handshakes (``peer-handshake``), oversized and truncated frames (``peer-oversized``,
  ``peer-truncated``).
* **connections**: slow senders that dribble a handshake or a large frame a byte or a
  kilobyte at a time (``slow-loris``), and a bounded flood of idle connections (``idle``, at
  most :data:`MAX_IDLE`), all closed when the fault stops.

Generation: each kind is a hypothesis strategy, drawn by hypothesis's own engine in one
``@given`` run per kind, ``@seed``-ed from the run's nemesis RNG (:func:`draw`), so the frames
of a run are reproducible from ``--seed`` and come from the same machinery the unit tests
use.  ``strategy.example()`` is not used: it is neither seedable nor meant for this.

Safety of the run itself: the attacks must not change the data the workloads check, on a
server that refuses them or on one that lets some through.  Every key a generated request
names lies in :data:`NAMESPACE` (above every workload key), lease ids are drawn from
``[2^62, 2^63)`` (never one the workloads hold), a compaction targets a future revision,
``member_add`` never carries a usable name and address, member ids are never a member's,
and every peer message carries at least one impossible value, so that no well-formed raft
message (which a peer impersonating a member could use to rewrite a log) is ever sent.
The test hook ``debug_fault`` and the ``snapshot`` method are never called.

``stop`` closes every connection, records what was sent (counts by kind, and how the members
answered: ``error`` replies, ``closed`` connections, ``ok`` for an accepted request), then
checks every member: process running, answering ``status``; a member found dead is
restarted and recorded with the last error line of its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import random
import struct
import time
import types
import typing
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgpack
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hseed
from hypothesis import strategies as st
from hypothesis.strategies import DrawFn, SearchStrategy

from raftkv import api
from raftkv.errors import HandshakeRefused, ProtocolError, RaftKVError
from raftkv.protocol import codec, wire
from raftkv.protocol.methods import Method, cluster_id, member_id, parse_initial_cluster, split_addr
from raftkv.raft.types import LOCAL_MESSAGES, Message, MessageType
from raftkv.server.transport import messages

if TYPE_CHECKING:
    from jepsen_like.control import Control

T = TypeVar("T")
Info = dict[str, Any]

NAMESPACE: Final = b"\xff\xfegarbage/"
"""Every key a generated request names starts with this: above every workload key."""
OWN_LEASES: Final = (1 << 62, (1 << 63) - 1)
"""Lease ids the generator uses (inclusive): far from any id a workload is granted."""
MAX_IDLE: Final = 200
"""Most idle connections one fault holds open."""
MAX_SLOW: Final = 8
"""Most slow senders one fault runs."""
I64_MAX: Final = (1 << 63) - 1
U64_MAX: Final = (1 << 64) - 1

CLIENT_KINDS: Final = (
    "wrong-type",
    "wrong-method",
    "internal-command",
    "non-finite",
    "out-of-range",
    "deep-nesting",
    "bad-method",
    "bad-frame",
    "bad-msgpack",
    "oversized",
    "truncated",
    "bad-handshake",
    "admin",
)
PEER_KINDS: Final = (
    "peer-term",
    "peer-index",
    "peer-commit",
    "peer-sender",
    "peer-entries",
    "peer-type",
    "peer-frame",
    "peer-handshake",
    "peer-oversized",
    "peer-truncated",
)
CONNECTION_KINDS: Final = ("slow-loris", "idle")
KINDS: Final = (*CLIENT_KINDS, *PEER_KINDS, *CONNECTION_KINDS)

CLIENT: Final = "client"
PEER: Final = "peer"


@dataclass(frozen=True, slots=True)
class Shot:
    """One attack on one connection: optionally a valid handshake first (awaiting the
    welcome), then ``chunks`` written in order.  ``replies``: how many answers a server
    would send (client requests); ``sequential``: await each chunk's answer before the next
    (a scripted sequence, e.g. grant then checkpoint)."""

    kind: str
    port: str
    member: str
    handshake: bytes
    chunks: tuple[bytes, ...]
    replies: int = 0
    sequential: bool = False
    benign: tuple[int, ...] = ()
    """Request ids whose acceptance is expected (the legitimate steps of a sequence, admin
    reads that ignore their payload): an OK answer to them is not counted as accepted."""


@dataclass(frozen=True, slots=True)
class Cluster:
    """What the generator knows of the cluster: its id and its members' ids."""

    cluster_id: int
    members: dict[str, int]
    term: int = 1
    """A recent term (messages that are not about the term carry one near the real one)."""


# --- drawing with hypothesis -----------------------------------------------------------------


def draw(strategy: SearchStrategy[T], n: int, seed: int) -> list[T]:
    """Up to ``n`` values of ``strategy``, generated by hypothesis under ``@seed(seed)``."""
    out: list[T] = []

    @settings(
        max_examples=n,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @hseed(seed)
    @given(strategy)
    def collect(x: T) -> None:
        out.append(x)

    collect()
    return out[:n]


def frame(obj: Any) -> bytes:
    """``obj`` as one frame of :mod:`raftkv.protocol.wire` (4-byte length, msgpack body)."""
    body: bytes = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def raw_frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def client_hello_list() -> list[Any]:
    return wire.Handshake(wire.PROTOCOL_VERSION, 0, 0, wire.ROLE_CLIENT).to_wire()


def client_hello(cid: int = 0) -> bytes:
    return frame(wire.Handshake(wire.PROTOCOL_VERSION, cid, 0, wire.ROLE_CLIENT).to_wire())


def peer_hello(cid: int, node_id: int) -> bytes:
    return frame(wire.Handshake(wire.PROTOCOL_VERSION, cid, node_id, wire.ROLE_PEER).to_wire())


# --- the request schemas as strategies --------------------------------------------------------

_HINTS: dict[type[Any], dict[str, Any]] = {
    cls: typing.get_type_hints(cls, vars(api)) for cls in codec.TAGS
}
_REQUESTS: Final[tuple[type[Any], ...]] = typing.get_args(api.Request)
_INTERNAL: Final = (api.LeaseCheckpointRequest, api.LeaseExpireRequest)
_CLIENT_REQUESTS: Final = tuple(c for c in _REQUESTS if c not in _INTERNAL)
_WRITE_METHODS: Final[dict[type[Any], Method]] = {
    api.PutRequest: Method.PUT,
    api.DeleteRangeRequest: Method.DELETE_RANGE,
    api.TxnRequest: Method.TXN,
    api.CompactionRequest: Method.COMPACT,
    api.LeaseGrantRequest: Method.LEASE_GRANT,
    api.LeaseRevokeRequest: Method.LEASE_REVOKE,
}
"""Methods whose payload is a Command wrapping exactly this request type."""
_READ_METHODS: Final[dict[type[Any], Method]] = {
    api.RangeRequest: Method.RANGE,
    api.LeaseTimeToLiveRequest: Method.LEASE_TIME_TO_LIVE,
    api.LeaseLeasesRequest: Method.LEASE_LEASES,
    api.LeaseKeepAliveRequest: Method.LEASE_KEEP_ALIVE,
}
"""Methods whose payload is this request type, bare."""
REQUEST_METHODS: Final = (*_WRITE_METHODS.values(), *_READ_METHODS.values())
ADMIN_METHODS: Final = (
    Method.STATUS,
    Method.HEALTH,
    Method.HASH_KV,
    Method.MEMBER_LIST,
    Method.MEMBER_ADD,
    Method.MEMBER_REMOVE,
    Method.MEMBER_PROMOTE,
    Method.MOVE_LEADER,
    Method.WATCH,
)
_PAYLOAD_IGNORED: Final = frozenset(
    str(m) for m in (Method.STATUS, Method.HEALTH, Method.HASH_KV, Method.MEMBER_LIST)
)
"""Admin reads that take no arguments: any payload is as good as none."""
NEVER_SENT: Final = frozenset({str(Method.SNAPSHOT), "debug_fault"})
"""Methods the nemesis never calls: the test hook, and a full snapshot stream."""

HOSTILE_INTS: Final = (1 << 63, U64_MAX, -1, -(1 << 63), (1 << 63) + 1)
NON_FINITE: Final = (math.nan, math.inf, -math.inf)


def out_of_range_ints() -> SearchStrategy[int]:
    """Integers a field stored as int64 cannot hold, or negative ones."""
    return st.one_of(
        st.sampled_from(HOSTILE_INTS),
        st.integers(1 << 63, U64_MAX),
        st.integers(-(1 << 63), -1),
    )


def huge_u64() -> SearchStrategy[int]:
    """Unsigned 64-bit values beyond int64: what a raft term, index or commit cannot be."""
    return st.one_of(
        st.sampled_from((1 << 63, U64_MAX, (1 << 63) + 1)), st.integers(1 << 63, U64_MAX)
    )


def _wrong_values() -> SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=8),
        st.binary(max_size=8),
        st.integers(-(1 << 63), U64_MAX),
        st.lists(st.integers(-5, 5), max_size=3),
        st.dictionaries(st.text(max_size=4), st.integers(-5, 5), max_size=2),
        st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4)),
    )


def _fits(t: Any, v: Any) -> bool:
    """Would the codec accept ``v`` for the annotated type ``t`` (by type only)?"""
    if t is bool:
        return type(v) is bool
    if t is int or (isinstance(t, type) and issubclass(t, IntEnum)):
        return type(v) is int
    if t is float:
        return type(v) in (int, float)
    if t is bytes:
        return type(v) is bytes
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(a, v) for a in args if a is not type(None)) or (
            v is None and type(None) in args
        )
    if origin is tuple:
        return type(v) is list
    if isinstance(t, type) and t in codec.TAGS:
        return type(v) is list
    return False


def _int_field(cls: type[Any], name: str) -> SearchStrategy[int]:
    if name in ("id", "lease", "ids") or cls is api.LeaseCheckpoint:
        return st.one_of(st.just(0), st.integers(*OWN_LEASES))
    if cls is api.CompactionRequest:
        return st.integers(1 << 40, I64_MAX)  # a future one
    if name == "ttl":
        return st.integers(1, 30)
    if name == "client_id":
        return st.integers(0, I64_MAX)
    return st.integers(0, 1 << 20)


def _bytes_field(name: str) -> SearchStrategy[bytes]:
    if name == "range_end":
        return st.one_of(
            st.just(b""),
            st.just(api.prefix_end(NAMESPACE)),
            st.just(api.ALL_KEYS),
            st.binary(max_size=6).map(lambda b: NAMESPACE + b"\xff" + b),
        )
    if name == "value":
        return st.binary(max_size=32)
    return st.binary(max_size=12).map(lambda b: NAMESPACE + b)


Slot = tuple[list[Any], int, Any]
"""A place in a generated plain value: (its list, the position, the annotated type)."""


def gen_plain(draw: DrawFn, cls: type[Any], slots: list[Slot], depth: int = 0) -> list[Any]:
    """A valid plain form of ``cls`` (codec layout), recording every field's slot."""
    out: list[Any] = [codec.TAGS[cls]]
    fields = dataclasses.fields(cls)
    required = sum(1 for f in fields if f.default is dataclasses.MISSING)
    # an older peer may send fewer fields: the defaulted tail is optional
    n = draw(st.integers(required, len(fields))) if depth else len(fields)
    for f in fields[:n]:
        t = _HINTS[cls][f.name]
        out.append(_gen_value(draw, cls, f.name, t, slots, depth))
        slots.append((out, len(out) - 1, t))
    return out


def _gen_value(
    draw: DrawFn, cls: type[Any], name: str, t: Any, slots: list[Slot], depth: int
) -> Any:
    if t is bool:
        return draw(st.booleans())
    if t is int:
        return draw(_int_field(cls, name))
    if t is float:
        return draw(st.floats(0.0, 1e9 if name == "now" else 60.0))
    if t is bytes:
        return draw(_bytes_field(name))
    if isinstance(t, type) and issubclass(t, IntEnum):
        return int(draw(st.sampled_from(list(t))))
    if isinstance(t, type) and t in codec.TAGS:
        return gen_plain(draw, t, slots, depth + 1)
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin is tuple:
        item = args[0]
        k = draw(st.integers(0, 2 if depth < 3 else 0))
        seq: list[Any] = []
        for _ in range(k):
            seq.append(_gen_value(draw, cls, name, item, slots, depth + 1))
            slots.append((seq, len(seq) - 1, item))
        return seq
    non_none = tuple(a for a in args if a is not type(None))
    if set(non_none) == {bytes, int}:
        return draw(st.one_of(st.binary(max_size=8), st.integers(0, 100)))
    if len(non_none) < len(args):
        if draw(st.booleans()):
            return None
        return _gen_value(draw, cls, name, non_none[0], slots, depth)
    choices = [c for c in non_none if c is not api.TxnRequest or depth < 3]
    return gen_plain(draw, draw(st.sampled_from(choices)), slots, depth + 1)


def _command(draw: DrawFn, inner: list[Any], slots: list[Slot]) -> list[Any]:
    cmd: list[Any] = [
        codec.TAGS[api.Command],
        inner,
        draw(_int_field(api.Command, "client_id")),
        draw(st.integers(0, 1 << 32)),
        draw(st.floats(0.0, 1e9)),
    ]
    hints = _HINTS[api.Command]
    for i, f in enumerate(dataclasses.fields(api.Command)[1:], start=2):
        slots.append((cmd, i, hints[f.name]))
    return cmd


def payload_for(draw: DrawFn, cls: type[Any], method: str, slots: list[Slot]) -> list[Any]:
    """The payload a client sends ``cls`` with under ``method``: a Command for the write
    methods, the bare request otherwise."""
    inner = gen_plain(draw, cls, slots)
    if method in {str(m) for m in _WRITE_METHODS.values()}:
        return _command(draw, inner, slots)
    return inner


def _method_of(cls: type[Any]) -> str:
    m = _WRITE_METHODS.get(cls) or _READ_METHODS.get(cls)
    assert m is not None
    return str(m)


def _request(req_id: int, method: Any, payload: Any) -> bytes:
    return frame([req_id, method, payload])


def _client_shot(kind: str, member: str, chunks: list[bytes], replies: int = 0) -> Shot:
    return Shot(kind, CLIENT, member, client_hello(), tuple(chunks), replies)


def client_strategy(kind: str, cl: Cluster) -> SearchStrategy[Shot]:
    """The strategy of one client-port attack kind."""
    members = st.sampled_from(sorted(cl.members))

    @st.composite
    def corrupt(draw: DrawFn, mode: str) -> Shot:
        cls = draw(st.sampled_from(_CLIENT_REQUESTS))
        method = _method_of(cls)
        slots: list[Slot] = []
        payload = payload_for(draw, cls, method, slots)
        if mode == "wrong-type":
            cands = slots
            bad = _wrong_values()
        elif mode == "non-finite":
            floats = [s for s in slots if s[2] is float]
            cands = floats or slots
            bad = st.sampled_from(NON_FINITE)
        else:
            cands = [s for s in slots if s[2] is int or _is_enum(s[2])] or slots
            bad = out_of_range_ints()
        if cands:
            seq, i, t = draw(st.sampled_from(cands))
            seq[i] = draw(bad.filter(lambda v: not _fits(t, v)) if mode == "wrong-type" else bad)
        else:  # LeaseLeasesRequest has no field: an extra one it does not have
            payload.append(draw(bad))
        n = draw(st.integers(1, 3))
        chunks = [_request(i + 1, method, payload) for i in range(n)]
        return _client_shot(mode, draw(members), chunks, n)

    @st.composite
    def wrong_method(draw: DrawFn) -> Shot:
        cls = draw(st.sampled_from(_CLIENT_REQUESTS))
        method = str(draw(st.sampled_from(REQUEST_METHODS).filter(lambda m: m != _method_of(cls))))
        slots: list[Slot] = []
        wrap = draw(st.booleans())
        inner = gen_plain(draw, cls, slots)
        payload = _command(draw, inner, slots) if wrap else inner
        return _client_shot("wrong-method", draw(members), [_request(1, method, payload)], 1)

    @st.composite
    def internal(draw: DrawFn) -> Shot:
        member = draw(members)
        lease = draw(st.integers(*OWN_LEASES))
        # NaN half of the time (the value of the report), else another hostile or a sane one
        ttl_left = draw(
            st.one_of(st.just(math.nan), st.sampled_from((*NON_FINITE, -1.0, 1e300, 5.0)))
        )
        cp = [
            codec.TAGS[api.LeaseCheckpointRequest],
            [[codec.TAGS[api.LeaseCheckpoint], lease, ttl_left]],
        ]
        ex = [codec.TAGS[api.LeaseExpireRequest], [lease, draw(st.integers(*OWN_LEASES))]]
        if draw(st.booleans()):
            # the sequence of a real report: grant, checkpoint through put, then the TTL
            # asked through put (applied from the log), then asked the ordinary way
            grant = [codec.TAGS[api.LeaseGrantRequest], 60, lease]
            ttl = [codec.TAGS[api.LeaseTimeToLiveRequest], lease]
            chunks = [
                _request(1, str(Method.LEASE_GRANT), _command(draw, grant, [])),
                _request(2, str(Method.PUT), _command(draw, cp, [])),
                _request(3, str(Method.PUT), _command(draw, ttl, [])),
                _request(4, str(Method.LEASE_TIME_TO_LIVE), ttl),
            ]
            return Shot(
                "internal-command", CLIENT, member, client_hello(), tuple(chunks), 4, True, (1, 4)
            )
        inner = draw(st.sampled_from((cp, ex)))
        method = str(draw(st.sampled_from(REQUEST_METHODS)))
        payload = _command(draw, inner, []) if draw(st.booleans()) else inner
        return _client_shot("internal-command", member, [_request(1, method, payload)], 1)

    @st.composite
    def deep(draw: DrawFn) -> Shot:
        how = draw(st.sampled_from(("txn", "array", "map")))
        if how == "txn":
            levels = draw(st.integers(codec.MAX_NESTING // 2 + 1, 250))
            put = [codec.TAGS[api.PutRequest], NAMESPACE + b"deep", b"x"]
            txn: list[Any] = [codec.TAGS[api.TxnRequest], [], [put], []]
            for _ in range(levels - 1):
                txn = [codec.TAGS[api.TxnRequest], [], [txn], []]
            chunk = _request(1, str(Method.TXN), _command(draw, txn, []))
        else:
            d = draw(st.sampled_from((codec.MAX_NESTING + 1, 600, 1024, 1100, 5000)))
            d = draw(st.integers(d, d + 50))
            inner = (b"\x91" * d + b"\xc0") if how == "array" else (b"\x81\xa1k" * d + b"\xc0")
            method = draw(st.sampled_from(REQUEST_METHODS))
            body = b"\x93" + msgpack.packb(1) + msgpack.packb(str(method)) + inner
            chunk = raw_frame(body)
        return _client_shot("deep-nesting", draw(members), [chunk], 1)

    @st.composite
    def bad_method(draw: DrawFn) -> Shot:
        known = {str(m) for m in Method} | NEVER_SENT
        method = draw(
            st.one_of(
                st.lists(
                    st.sampled_from([str(m) for m in REQUEST_METHODS]), min_size=1, max_size=3
                ),
                st.dictionaries(
                    st.sampled_from(["put", "range"]),
                    st.integers(-(1 << 63), U64_MAX),
                    min_size=1,
                    max_size=2,
                ),
                st.integers(-(1 << 63), U64_MAX),
                st.binary(max_size=8),
                st.none(),
                st.floats(allow_nan=True),
                st.text(max_size=12).filter(lambda s: s not in known),
            )
        )
        cls = draw(st.sampled_from(_CLIENT_REQUESTS))
        slots: list[Slot] = []
        payload = payload_for(draw, cls, _method_of(cls), slots)
        return _client_shot("bad-method", draw(members), [_request(1, method, payload)], 1)

    @st.composite
    def bad_frame(draw: DrawFn) -> Shot:
        obj = draw(
            st.one_of(
                st.lists(st.integers(0, 5), max_size=6).filter(lambda x: len(x) != 3),
                st.dictionaries(st.text(max_size=4), st.integers(-(1 << 63), U64_MAX), max_size=3),
                st.text(max_size=8),
                st.integers(-(1 << 63), U64_MAX),
                st.none(),
                st.tuples(
                    _wrong_values().filter(lambda v: type(v) is not int),
                    st.just("status"),
                    st.just({}),
                ).map(list),
                st.tuples(
                    st.sampled_from((True, False, U64_MAX, -1)), st.just("status"), st.just({})
                ).map(list),
                st.tuples(
                    _wrong_values().filter(lambda v: type(v) is not int),
                    st.just(str(Method.CANCEL)),
                    st.none(),
                ).map(list),
            )
        )
        return _client_shot("bad-frame", draw(members), [frame(obj)], 1)

    @st.composite
    def bad_msgpack(draw: DrawFn) -> Shot:
        body = draw(
            st.one_of(
                st.binary(min_size=1, max_size=64),
                st.just(b"\xc1"),
                st.just(b"\x93\x01\xa3put"),  # an array of 3 with one element missing
                st.just(b"\xdd\xff\xff\xff\xff"),  # array32 of 2^32-1 elements, none there
                st.just(b"\xdb\xff\xff\xff\xff"),  # str32 of 4 GiB
                st.just(b"\x93\x01\xa3put\xa2\xff\xfe"),  # invalid utf-8 in a str
                st.just(b"\x93\x01\xa3put\xd7\xff" + b"\x00" * 8),  # a timestamp ext
                st.binary(min_size=1, max_size=16).map(lambda b: b"\xc0" + b),  # trailing bytes
            )
        )
        return _client_shot("bad-msgpack", draw(members), [raw_frame(body)], 1)

    @st.composite
    def oversized(draw: DrawFn) -> Shot:
        n = draw(st.one_of(st.just(0xFFFFFFFF), st.integers(wire.MAX_CLIENT_FRAME + 1, 0xFFFFFFFF)))
        tail = draw(st.binary(max_size=64))
        before = draw(st.booleans())  # before the handshake, or after it
        chunk = struct.pack(">I", n) + tail
        return Shot("oversized", CLIENT, draw(members), b"" if before else client_hello(), (chunk,))

    @st.composite
    def truncated(draw: DrawFn) -> Shot:
        cls = draw(st.sampled_from(_CLIENT_REQUESTS))
        slots: list[Slot] = []
        full = _request(1, _method_of(cls), payload_for(draw, cls, _method_of(cls), slots))
        cut = draw(st.integers(1, len(full) - 1))
        if draw(st.booleans()):
            hello = client_hello()
            cut = draw(st.integers(1, len(hello) - 1))
            return Shot("truncated", CLIENT, draw(members), b"", (hello[:cut],))
        return _client_shot("truncated", draw(members), [full[:cut]])

    @st.composite
    def bad_handshake(draw: DrawFn) -> Shot:
        version = draw(
            st.one_of(st.just(wire.PROTOCOL_VERSION), out_of_range_ints(), _wrong_values())
        )
        cid = draw(
            st.one_of(st.just(0), out_of_range_ints(), st.just(cl.cluster_id ^ 1), _wrong_values())
        )
        role = draw(
            st.one_of(
                st.just(wire.ROLE_CLIENT), st.sampled_from(("peer", "admin", "")), _wrong_values()
            )
        )
        node = draw(st.one_of(st.just(0), out_of_range_ints()))
        hs: Any = ["raftkv-hello", version, cid, node, role]
        if hs == client_hello_list():
            # otherwise valid: a malformed shape, or a request before the welcome
            hs = draw(
                st.one_of(
                    st.just(hs[:4]),
                    st.just([*hs, None]),
                    st.just(dict(enumerate(map(str, hs)))),
                    st.just(["raftkv-welcome", 1]),
                    st.just(hs).map(lambda h: [h, [1, "status", {}]]),
                )
            )
        chunks: list[bytes] = []
        if type(hs) is list and len(hs) == 2 and type(hs[0]) is list:
            chunks = [frame(hs[0]) + frame(hs[1])]
        else:
            chunks = [frame(hs), _request(1, str(Method.STATUS), {})]
        return Shot("bad-handshake", CLIENT, draw(members), b"", tuple(chunks), 1)

    @st.composite
    def admin(draw: DrawFn) -> Shot:
        method = str(draw(st.sampled_from(ADMIN_METHODS)))
        hostile_id = st.one_of(
            out_of_range_ints(), _wrong_values().filter(lambda v: type(v) is not int)
        )
        if method == Method.MEMBER_ADD:
            # never both a usable name and peer address: that would really add a member
            payload: Any = {
                "name": draw(_wrong_values()),
                "peer_addr": draw(
                    st.one_of(_wrong_values().filter(lambda v: type(v) is not str), st.none())
                ),
                "learner": draw(_wrong_values()),
            }
        elif method in (Method.MEMBER_REMOVE, Method.MEMBER_PROMOTE, Method.MOVE_LEADER):
            payload = draw(st.one_of(st.fixed_dictionaries({"id": hostile_id}), _wrong_values()))
        elif method == Method.WATCH:
            payload = draw(
                st.one_of(
                    st.fixed_dictionaries(
                        {
                            "key": st.one_of(st.just(NAMESPACE), _wrong_values()),
                            "start_revision": st.one_of(out_of_range_ints(), _wrong_values()),
                            "prev_kv": _wrong_values(),
                        }
                    ),
                    _wrong_values(),
                )
            )
        else:
            payload = draw(
                st.one_of(
                    _wrong_values(),
                    st.fixed_dictionaries(
                        {
                            "revision": st.one_of(out_of_range_ints(), _wrong_values()),
                            "hash": _wrong_values(),
                        }
                    ),
                )
            )
        benign = (1,) if method in _PAYLOAD_IGNORED else ()
        chunk = _request(1, method, payload)
        return Shot("admin", CLIENT, draw(members), client_hello(), (chunk,), 1, False, benign)

    strategies: dict[str, Callable[[], SearchStrategy[Shot]]] = {
        "wrong-type": lambda: corrupt("wrong-type"),
        "non-finite": lambda: corrupt("non-finite"),
        "out-of-range": lambda: corrupt("out-of-range"),
        "wrong-method": wrong_method,
        "internal-command": internal,
        "deep-nesting": deep,
        "bad-method": bad_method,
        "bad-frame": bad_frame,
        "bad-msgpack": bad_msgpack,
        "oversized": oversized,
        "truncated": truncated,
        "bad-handshake": bad_handshake,
        "admin": admin,
    }
    return strategies[kind]()


def _is_enum(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, IntEnum)


# --- the raft message schema as strategies ----------------------------------------------------

MESSAGE_FIELDS: Final = tuple(f.name for f in dataclasses.fields(Message))
"""The wire layout of a raft message (:func:`raftkv.server.transport.messages.message_to_wire`):
field order."""
_NETWORK_TYPES: Final = tuple(int(t) for t in MessageType if t not in LOCAL_MESSAGES)


def _pos(name: str) -> int:
    return MESSAGE_FIELDS.index(name)


def peer_strategy(kind: str, cl: Cluster) -> SearchStrategy[Shot]:
    """The strategy of one peer-port attack kind (a real handshake as another member)."""
    names = sorted(cl.members)

    @st.composite
    def pair(draw: DrawFn) -> tuple[str, int, int]:
        """(target member, its id, the id of the member we claim to be)."""
        target = draw(st.sampled_from(names))
        others = [cl.members[n] for n in names if n != target] or [cl.members[target] ^ 1]
        return target, cl.members[target], draw(st.sampled_from(others))

    def not_member(i: int) -> bool:
        return i not in cl.members.values()

    def term() -> SearchStrategy[int]:
        return st.one_of(st.sampled_from((cl.term, cl.term + 1)), st.integers(0, cl.term + 2))

    @st.composite
    def entry(draw: DrawFn) -> list[Any]:
        return [
            draw(term()),
            draw(st.integers(0, 1 << 20)),
            draw(st.sampled_from((0, 1))),
            draw(st.binary(max_size=32)),
        ]

    @st.composite
    def message(draw: DrawFn, to: int, frm: int) -> list[Any]:
        m: list[Any] = [
            draw(st.sampled_from(_NETWORK_TYPES)),
            to,
            frm,
            draw(term()),
            draw(term()),
            draw(st.integers(0, 1 << 20)),
            draw(st.lists(entry(), max_size=3)),
            draw(st.integers(0, 1 << 20)),
            draw(st.booleans()),
            draw(st.integers(0, 1 << 20)),
            None,
            draw(st.binary(max_size=8)),
        ]
        assert len(m) == len(MESSAGE_FIELDS)
        return m

    def shot(
        k: str, target: str, frm: int, chunks: list[bytes], hello: bytes | None = None
    ) -> Shot:
        hs = peer_hello(cl.cluster_id, frm) if hello is None else hello
        return Shot(k, PEER, target, hs, tuple(chunks))

    @st.composite
    def hostile_message(draw: DrawFn) -> Shot:
        target, to, frm = draw(pair())
        msgs = []
        for _ in range(draw(st.integers(1, 3))):
            m = draw(message(to, frm))
            if kind == "peer-term":
                m[_pos("term")] = draw(huge_u64())
                if draw(st.booleans()):
                    m[_pos("type")] = int(MessageType.HEARTBEAT)
            elif kind == "peer-commit":
                m[_pos("type")] = int(
                    draw(st.sampled_from((MessageType.HEARTBEAT, MessageType.APP)))
                )
                m[_pos("commit")] = draw(huge_u64())
            elif kind == "peer-index":
                name = draw(st.sampled_from(("index", "log_term", "reject_hint")))
                m[_pos(name)] = draw(huge_u64())
            elif kind == "peer-sender":
                name = draw(st.sampled_from(("frm", "to")))
                m[_pos(name)] = draw(st.integers(1, I64_MAX).filter(not_member))
            elif kind == "peer-entries":
                m[_pos("type")] = int(MessageType.APP)
                bad_entry = st.one_of(
                    st.tuples(huge_u64(), st.integers(0, 9), st.just(0), st.binary(max_size=4)).map(
                        list
                    ),
                    st.tuples(term(), huge_u64(), st.just(0), st.binary(max_size=4)).map(list),
                    st.tuples(
                        term(), st.integers(0, 9), st.integers(2, 255), st.binary(max_size=4)
                    ).map(list),
                    st.tuples(
                        term(),
                        st.integers(0, 9),
                        st.just(0),
                        _wrong_values().filter(lambda v: type(v) is not bytes),
                    ).map(list),
                    st.lists(st.integers(0, 3), max_size=6).filter(lambda x: len(x) != 4),
                    _wrong_values().filter(lambda v: type(v) is not list),
                )
                ents = draw(st.lists(bad_entry, min_size=1, max_size=3))
                m[_pos("entries")] = draw(st.sampled_from((ents, m[_pos("entries")] + ents)))
                if draw(st.integers(0, 5)) == 0:
                    m[_pos("entries")] = draw(_wrong_values().filter(lambda v: type(v) is not list))
            elif kind == "peer-type":
                m[_pos("type")] = draw(
                    st.one_of(
                        st.sampled_from(sorted(int(t) for t in LOCAL_MESSAGES)),
                        st.integers(19, 255),
                        out_of_range_ints(),
                        _wrong_values().filter(lambda v: type(v) is not int),
                    )
                )
            msgs.append(m)
        return shot(kind, target, frm, [frame([messages.FRAME_MSGS, msgs])])

    @st.composite
    def peer_frame(draw: DrawFn) -> Shot:
        target, to, frm = draw(pair())
        head = draw(message(to, frm))
        head[_pos("type")] = int(MessageType.SNAP)
        head[_pos("term")] = draw(huge_u64())  # the head alone is already impossible
        head[_pos("snapshot")] = [
            [draw(st.integers(0, 1 << 20)), draw(term()), [[to, frm], []]],
            b"",
        ]
        data = draw(st.binary(min_size=1, max_size=64))
        how = draw(st.sampled_from(("kind", "msgs", "begin", "chunk", "end", "stream")))
        if how == "kind":
            obj: Any = [
                draw(st.one_of(st.integers(5, 255), out_of_range_ints(), _wrong_values())),
                [],
            ]
            chunks = [frame(obj)]
        elif how == "msgs":
            chunks = [
                frame(
                    draw(
                        st.sampled_from(
                            (
                                [messages.FRAME_MSGS],
                                [messages.FRAME_MSGS, {}],
                                [messages.FRAME_MSGS, [], []],
                                [messages.FRAME_MSGS, draw(_wrong_values())],
                            )
                        )
                    )
                )
            ]
        elif how == "begin":
            size = draw(st.one_of(huge_u64(), st.integers(-(1 << 63), -1), st.just(1 << 40)))
            chunks = [frame([messages.FRAME_SNAP_BEGIN, 1, head, size, 0])]
        elif how == "chunk":
            chunks = [frame([messages.FRAME_SNAP_CHUNK, 1, 0, data])]
        elif how == "end":
            chunks = [frame([messages.FRAME_SNAP_END, draw(st.integers(0, 5))])]
        else:  # a stream with a wrong offset, then a wrong CRC
            chunks = [
                frame([messages.FRAME_SNAP_BEGIN, 1, head, len(data), 0]),
                frame([messages.FRAME_SNAP_CHUNK, 1, draw(st.integers(1, 1 << 20)), data]),
                frame([messages.FRAME_SNAP_END, 1]),
            ]
        return shot("peer-frame", target, frm, chunks)

    @st.composite
    def peer_handshake(draw: DrawFn) -> Shot:
        target, to, frm = draw(pair())
        known = set(cl.members.values())
        node = draw(
            st.one_of(
                st.just(to),
                st.integers(1, I64_MAX).filter(lambda i: i not in known),
                out_of_range_ints(),
            )
        )
        cid = draw(
            st.one_of(
                st.just(cl.cluster_id),
                st.just(cl.cluster_id ^ 1),
                out_of_range_ints(),
                _wrong_values(),
            )
        )
        role = draw(st.sampled_from((wire.ROLE_PEER, wire.ROLE_CLIENT, "admin")))
        version = draw(st.one_of(st.just(wire.PROTOCOL_VERSION), out_of_range_ints()))
        hs = ["raftkv-hello", version, cid, node, role]
        m = draw(message(to, frm))
        m[_pos("term")] = draw(huge_u64())
        return shot(
            "peer-handshake", target, frm, [frame(hs), frame([messages.FRAME_MSGS, [m]])], b""
        )

    @st.composite
    def peer_oversized(draw: DrawFn) -> Shot:
        target, _, frm = draw(pair())
        n = draw(st.integers(wire.MAX_PEER_FRAME + 1, 0xFFFFFFFF))
        before = draw(st.booleans())
        return shot(
            "peer-oversized",
            target,
            frm,
            [struct.pack(">I", n) + draw(st.binary(max_size=64))],
            b"" if before else None,
        )

    @st.composite
    def peer_truncated(draw: DrawFn) -> Shot:
        target, to, frm = draw(pair())
        m = draw(message(to, frm))
        m[_pos("term")] = draw(huge_u64())
        full = frame([messages.FRAME_MSGS, [m]])
        return shot("peer-truncated", target, frm, [full[: draw(st.integers(1, len(full) - 1))]])

    strategies: dict[str, Callable[[], SearchStrategy[Shot]]] = {
        "peer-frame": peer_frame,
        "peer-handshake": peer_handshake,
        "peer-oversized": peer_oversized,
        "peer-truncated": peer_truncated,
    }
    return strategies.get(kind, hostile_message)()


def strategy(kind: str, cl: Cluster) -> SearchStrategy[Shot]:
    return client_strategy(kind, cl) if kind in CLIENT_KINDS else peer_strategy(kind, cl)


def generate(
    cl: Cluster, seed: int, per_kind: int, kinds: tuple[str, ...] | None = None
) -> list[Shot]:
    """``per_kind`` shots of every frame kind, drawn by hypothesis from ``seed``, shuffled."""
    rng = random.Random(seed)
    shots: list[Shot] = []
    for k in kinds or (*CLIENT_KINDS, *PEER_KINDS):
        shots.extend(draw(strategy(k, cl), per_kind, rng.randrange(1 << 32)))
    rng.shuffle(shots)
    return shots


def cluster_of(c: Control, term: int = 1) -> Cluster:
    """The cluster as a stranger can know it: ids derived from the initial member list."""
    from jepsen_like.control import CLUSTER_TOKEN

    initial = c.pc.initial_cluster
    spec = initial if isinstance(initial, str) else ",".join(f"{n}={a}" for n, a in initial.items())
    cid = cluster_id(parse_initial_cluster(spec), CLUSTER_TOKEN)
    return Cluster(cid, {n: member_id(n, CLUSTER_TOKEN) for n in c.names}, term)


# --- sending ----------------------------------------------------------------------------------


@dataclass
class Tally:
    """What was sent, and how the members took it."""

    sent: Counter[str] = field(default_factory=Counter)
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    accepted: list[str] = field(default_factory=list)
    """``kind member method``: hostile requests a member answered OK (first few)."""

    def note(self, kind: str, outcome: str) -> None:
        self.outcomes.setdefault(kind, Counter())[outcome] += 1

    def as_info(self) -> Info:
        return {
            "sent": dict(sorted(self.sent.items())),
            "outcomes": {k: dict(sorted(v.items())) for k, v in sorted(self.outcomes.items())},
            "accepted": self.accepted[:20],
        }


async def _read_frames(
    reader: asyncio.StreamReader, dec: wire.FrameDecoder, want: int, timeout: float
) -> tuple[list[Any], bool]:
    """Up to ``want`` frames within ``timeout``; (frames, the peer closed the connection)."""
    got: list[Any] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(got) < want:
        left = deadline - loop.time()
        if left <= 0:
            return got, False
        try:
            data = await asyncio.wait_for(reader.read(1 << 16), left)
        except TimeoutError:
            return got, False
        except OSError:
            return got, True
        if not data:
            return got, True
        try:
            got.extend(dec.feed(data))
        except ProtocolError:
            return got, True
    return got, False


class Sender:
    """Fires shots and holds slow and idle connections; closes everything on :meth:`close`."""

    def __init__(self, addrs: dict[tuple[str, str], str], tally: Tally) -> None:
        self.addrs = addrs
        """(member, port kind) -> ``host:port``."""
        self.tally = tally
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def _open(
        self, member: str, port: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, p = split_addr(self.addrs[(member, port)])
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, p), 1.0)
        self.writers.add(writer)
        return reader, writer

    def _drop(self, writer: asyncio.StreamWriter) -> None:
        self.writers.discard(writer)
        with contextlib.suppress(Exception):
            writer.close()

    async def fire(self, shot: Shot) -> str:
        """Send one shot; its outcome: ``refused`` (handshake), ``closed``, ``error`` (typed
        error replies only), ``ok`` (some request accepted), ``silent`` (no answer, still
        open), ``open`` (peer: the member kept the connection), ``unreachable``."""
        self.tally.sent[shot.kind] += 1
        try:
            reader, writer = await self._open(shot.member, shot.port)
        except (OSError, TimeoutError):
            return "unreachable"
        dec = wire.FrameDecoder(wire.MAX_CLIENT_FRAME)
        try:
            if shot.handshake:
                writer.write(shot.handshake)
                await writer.drain()
                got, closed = await _read_frames(reader, dec, 1, 2.0)
                if not got:
                    return "closed" if closed else "silent"
                try:
                    wire.check_handshake_reply(got[0])
                except HandshakeRefused:
                    return "refused"
                except ProtocolError:
                    return "closed"
            replies: list[Any] = []
            closed = False
            for chunk in shot.chunks:
                writer.write(chunk)
                await writer.drain()
                if shot.sequential:
                    got, closed = await _read_frames(reader, dec, 1, 3.0)
                    replies += got
                    if closed:
                        break
            if shot.port == PEER:
                got, closed = await _read_frames(reader, dec, 1 << 30, 0.5)
                if got and not shot.handshake:
                    return "refused"  # the answer to our own hostile handshake
                return "closed" if closed else "open"
            if not shot.sequential and shot.replies:
                replies, closed = await _read_frames(reader, dec, shot.replies, 2.0)
            if not shot.replies and not closed:
                _, closed = await _read_frames(reader, dec, 1, 0.5)
            return self._outcome(shot, replies, closed)
        except (OSError, ProtocolError):
            return "closed"
        finally:
            self._drop(writer)

    def _outcome(self, shot: Shot, replies: list[Any], closed: bool) -> str:
        answers = [r for r in replies if type(r) is list and len(r) == 3 and r[1] in (0, 1, 2, 3)]
        kinds = {r[1] for r in answers}
        if any(r[1] in (0, 2) and r[0] not in shot.benign for r in answers):
            if len(self.tally.accepted) < 20:
                self.tally.accepted.append(f"{shot.kind} {shot.member} {_methods(shot)}")
            return "ok"
        if 1 in kinds or 3 in kinds:
            return "error"
        if kinds:
            return "benign"
        if replies and closed:
            return "refused"  # e.g. a refusal of a hostile handshake
        return "closed" if closed else "silent"

    def spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def idle(self, member: str, port: str, how: str) -> None:
        """Open a connection and hold it: silent, after a handshake, or mid-handshake."""
        self.tally.sent["idle"] += 1
        try:
            reader, writer = await self._open(member, port)
        except (OSError, TimeoutError):
            self.tally.note("idle", "unreachable")
            return
        hello = client_hello() if port == CLIENT else b"\x00\x00"
        try:
            if how == "handshake":
                writer.write(hello)
            elif how == "partial":
                writer.write(hello[: max(1, len(hello) // 2)])
            data = await reader.read(1 << 16)
            while data:  # a welcome, then nothing: wait until closed
                data = await reader.read(1 << 16)
            self.tally.note("idle", "closed-by-member")
        except OSError:
            self.tally.note("idle", "closed-by-member")
        except asyncio.CancelledError:
            self.tally.note("idle", "held")
            raise
        finally:
            self._drop(writer)

    async def slow(self, member: str, port: str, cl: Cluster, rng: random.Random) -> None:
        """A slow-loris: a handshake a byte at a time, or a frame announcing almost the limit
        whose body comes a kilobyte at a time (bounded: at most 256 KiB per connection)."""
        self.tally.sent["slow-loris"] += 1
        try:
            reader, writer = await self._open(member, port)
        except (OSError, TimeoutError):
            self.tally.note("slow-loris", "unreachable")
            return
        hello = client_hello() if port == CLIENT else peer_hello(cl.cluster_id, 0)
        big = rng.random() < 0.5 and port == CLIENT
        try:
            if big:
                writer.write(hello)
                limit = wire.MAX_CLIENT_FRAME - 1
                writer.write(struct.pack(">I", limit))
                budget = 256 * 1024
                while budget > 0:
                    writer.write(b"\x00" * 1024)
                    budget -= 1024
                    await writer.drain()
                    await asyncio.sleep(rng.uniform(0.05, 0.2))
            else:
                for i in range(len(hello)):
                    writer.write(hello[i : i + 1])
                    await writer.drain()
                    await asyncio.sleep(rng.uniform(0.2, 0.6))
            while await reader.read(1 << 16):
                pass
            self.tally.note("slow-loris", "closed-by-member")
        except OSError:
            self.tally.note("slow-loris", "closed-by-member")
        except asyncio.CancelledError:
            self.tally.note("slow-loris", "held")
            raise
        finally:
            self._drop(writer)

    async def close(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for w in list(self.writers):
            self._drop(w)


def _methods(shot: Shot) -> str:
    out = []
    for ch in shot.chunks:
        with contextlib.suppress(Exception):
            obj = msgpack.unpackb(ch[4:], raw=False, strict_map_key=False)
            if type(obj) is list and len(obj) == 3:
                out.append(str(obj[1])[:20])
    return ",".join(out)


# --- the nemesis ------------------------------------------------------------------------------


def crash_line(log_text: str) -> str:
    """The last line of a member's log that reports an error (JSON logs or text)."""
    for line in reversed(log_text.splitlines()):
        s = line.strip()
        if not s:
            continue
        with contextlib.suppress(ValueError):
            doc = json.loads(s)
            if isinstance(doc, dict) and str(doc.get("level", "")).upper() in ("ERROR", "CRITICAL"):
                msg = str(doc.get("msg", ""))
                exc = str(doc.get("exc", doc.get("exc_info", "")))
                return (msg + " | " + exc.strip().splitlines()[-1] if exc.strip() else msg)[:300]
            continue
        if "Error" in s or "Traceback" in s:
            return s[:300]
    return ""


class Garbage:
    """Hostile input on every member's client and peer ports (module docstring)."""

    name = "garbage"

    def __init__(
        self,
        per_kind: int = 6,
        max_idle: int = MAX_IDLE,
        max_slow: int = MAX_SLOW,
        concurrency: int = 8,
        rounds: int = 3,
    ) -> None:
        self.per_kind = per_kind
        self.rounds = rounds
        """Batches per fault (each ``per_kind`` shots of every kind, freshly drawn)."""
        self.max_idle = min(max_idle, MAX_IDLE)
        self.max_slow = min(max_slow, MAX_SLOW)
        self.concurrency = concurrency
        self.sender: Sender | None = None
        self.task: asyncio.Task[None] | None = None
        self.tally = Tally()
        self.targets: list[str] = []

    async def start(self, c: Control, rng: random.Random) -> Info:
        live = [n for n in c.names if c.alive(n) and n not in c.paused]
        if not live:
            return {"skipped": "no live member"}
        term = 1
        from jepsen_like.control import admin_call

        with contextlib.suppress(RaftKVError):
            plain = await admin_call(c.member(live[0]).client_addr, str(Method.STATUS), None, 1.0)
            status = codec.from_plain(api.StatusResponse, plain)
            term = min(max(status.term, 1), I64_MAX - 3)
        cl = cluster_of(c, term)
        seed = rng.randrange(1 << 32)
        t0 = time.monotonic()
        try:
            shots = await asyncio.to_thread(generate, cl, seed, self.per_kind)
        except Exception as e:  # a generator bug: recorded, and the run goes on
            return {"error": f"generating with seed {seed}: {type(e).__name__}: {e}"}
        shots = [s for s in shots if s.member in live]
        gen_s = round(time.monotonic() - t0, 2)
        addrs: dict[tuple[str, str], str] = {}
        for n in c.names:
            m = c.member(n)
            addrs[(n, CLIENT)] = m.client_addr
            addrs[(n, PEER)] = m.peer_addr
        self.tally = Tally()
        self.sender = Sender(addrs, self.tally)
        self.targets = live
        idle = rng.randint(self.max_idle // 4, self.max_idle)
        slow = rng.randint(1, self.max_slow)
        self.task = asyncio.get_running_loop().create_task(
            self._run(shots, cl, idle, slow, random.Random(seed)), name="garbage"
        )
        return {
            "seed": seed,
            "cluster_id": f"{cl.cluster_id:x}",
            "term": term,
            "targets": live,
            "shots": len(shots),
            "idle": idle,
            "slow": slow,
            "generated_s": gen_s,
        }

    async def _run(
        self, shots: list[Shot], cl: Cluster, idle: int, slow: int, rng: random.Random
    ) -> None:
        s = self.sender
        assert s is not None
        for _ in range(slow):
            s.spawn(s.slow(rng.choice(self.targets), rng.choice((CLIENT, PEER)), cl, rng))
        for i in range(idle):
            s.spawn(
                s.idle(
                    self.targets[i % len(self.targets)],
                    rng.choice((CLIENT, PEER)),
                    rng.choice(("silent", "handshake", "partial")),
                )
            )
            if i % 20 == 19:
                await asyncio.sleep(0.05)
        sem = asyncio.Semaphore(self.concurrency)

        async def one(shot: Shot) -> None:
            try:
                self.tally.note(shot.kind, await s.fire(shot))
            finally:
                sem.release()

        for r in range(self.rounds):
            if r:  # a fresh batch while the fault lasts
                try:
                    shots = await asyncio.to_thread(
                        generate, cl, rng.randrange(1 << 32), self.per_kind
                    )
                except Exception as e:
                    self.tally.note("generator", f"{type(e).__name__}: {e}"[:200])
                    return
                shots = [x for x in shots if x.member in self.targets]
            for shot in shots:
                await sem.acquire()
                s.spawn(one(shot))
                await asyncio.sleep(rng.uniform(0.0, 0.01))

    async def stop(self, c: Control) -> Info:
        if self.sender is None:
            return {}
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        await self.sender.close()
        info = self.tally.as_info()
        self.sender, self.task = None, None
        info.update(await check_members(c, self.targets))
        return info

    async def heal(self, c: Control) -> None:
        await self.stop(c)


async def check_members(c: Control, names: list[str], patience: float = 5.0) -> Info:
    """Every member in ``names`` running and answering ``status``; a dead one is restarted
    and reported with its exit code and the last error line of its log."""
    from jepsen_like.control import admin_call

    alive: list[str] = []
    dead: dict[str, Any] = {}
    silent: list[str] = []
    unhealthy: dict[str, str] = {}
    for n in names:
        if n not in c.names or n in c.paused:
            continue
        if not c.alive(n):
            dead[n] = {"exit_code": c.exit_code(n), "log": crash_line(c.log_text(n))}
            c.restart(n)
            continue
        addr = c.member(n).client_addr
        deadline = time.monotonic() + patience
        ok = False
        while True:
            try:
                await admin_call(addr, str(Method.STATUS), {}, 1.0)
                ok = True
                break
            except RaftKVError:
                if time.monotonic() > deadline or not c.alive(n):
                    break
                await asyncio.sleep(0.25)
        if not ok:
            silent.append(n)
            continue
        alive.append(n)
        with contextlib.suppress(RaftKVError):
            h = await admin_call(addr, str(Method.HEALTH), {}, 3.0)
            if isinstance(h, dict) and not h.get("health", False):
                unhealthy[n] = str(h.get("reason", ""))[:200]
    out: Info = {"alive": alive, "dead": dead, "unresponsive": silent}
    if unhealthy:
        out["unhealthy"] = unhealthy
    return out
