"""Explicit msgpack encoding of every :mod:`raftkv.api` value (no pickle).

A dataclass is encoded as a msgpack array ``[tag, field1, field2, ...]``: ``tag`` is the
class's fixed number in :data:`TAGS` (never reuse or renumber one), fields follow in declaration
order.  Enums become ints, tuples become arrays, ``None`` stays nil, bytes stay bin.  Decoding
checks the tag, the arity and the type of every field against the dataclass annotations —
integers within the signed 64-bit range, floats finite — and
raises :class:`~raftkv.errors.RemoteProtocolError` on anything else — garbage never surfaces as
a ``KeyError`` or ``TypeError``.  Fields added later must go at the end with a default: a
shorter array from an older peer still decodes.

Errors travel as ``[code, message, details]`` (:func:`encode_error`, :func:`decode_error`).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from enum import IntEnum
from typing import Any, TypeVar

import msgpack

from raftkv import api
from raftkv.errors import RaftKVError, RemoteProtocolError, error_from_code

T = TypeVar("T")

TAGS: dict[type[Any], int] = {
    api.KeyValue: 1,
    api.Event: 2,
    api.ResponseHeader: 3,
    api.RangeRequest: 10,
    api.RangeResponse: 11,
    api.PutRequest: 12,
    api.PutResponse: 13,
    api.DeleteRangeRequest: 14,
    api.DeleteRangeResponse: 15,
    api.Compare: 16,
    api.TxnRequest: 17,
    api.TxnResponse: 18,
    api.CompactionRequest: 19,
    api.CompactionResponse: 20,
    api.LeaseGrantRequest: 30,
    api.LeaseGrantResponse: 31,
    api.LeaseRevokeRequest: 32,
    api.LeaseRevokeResponse: 33,
    api.LeaseTimeToLiveRequest: 34,
    api.LeaseTimeToLiveResponse: 35,
    api.LeaseLeasesRequest: 36,
    api.LeaseLeasesResponse: 37,
    api.LeaseKeepAliveRequest: 38,
    api.LeaseKeepAliveResponse: 39,
    api.LeaseCheckpoint: 40,
    api.LeaseCheckpointRequest: 41,
    api.LeaseCheckpointResponse: 42,
    api.LeaseExpireRequest: 43,
    api.LeaseExpireResponse: 44,
    api.Limits: 50,
    api.Command: 60,
    api.Member: 70,
    api.MemberListRequest: 71,
    api.MemberListResponse: 72,
    api.MemberAddRequest: 73,
    api.MemberAddResponse: 74,
    api.MemberRemoveRequest: 75,
    api.MemberPromoteRequest: 76,
    api.MemberUpdateRequest: 77,
    api.MembersResponse: 78,
    api.StatusRequest: 80,
    api.StatusResponse: 81,
    api.HealthRequest: 82,
    api.HealthResponse: 83,
    api.HashKVRequest: 84,
    api.HashKVResponse: 85,
    api.MoveLeaderRequest: 86,
    api.MoveLeaderResponse: 87,
    api.SnapshotRequest: 88,
    api.SnapshotChunk: 89,
    api.WatchProgressRequest: 90,
    api.WatchProgressResponse: 91,
    api.AlarmMember: 92,
    api.AlarmRequest: 93,
    api.AlarmResponse: 94,
    api.DefragmentRequest: 95,
    api.DefragmentResponse: 96,
}

_Conv = Callable[[Any], Any]
_CLASS_BY_TAG: dict[int, type[Any]] = {tag: cls for cls, tag in TAGS.items()}
_ENCODERS: dict[type[Any], _Conv] = {}
_DECODERS: dict[type[Any], _Conv] = {}


def _bad(msg: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed message: {msg}")


# --- per-type converters ---------------------------------------------------------------------


def _dec_bytes(v: Any) -> bytes:
    if type(v) is bytes:
        return v
    raise _bad(f"expected bytes, got {type(v).__name__}")


INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


def _dec_int(v: Any) -> int:
    # Every integer field is stored (SQLite INTEGER, lease ids, revisions): int64 only.
    if type(v) is int:
        if INT64_MIN <= v <= INT64_MAX:
            return v
        raise _bad(f"integer {v} is outside the signed 64-bit range")
    raise _bad(f"expected int, got {type(v).__name__}")


def _dec_bool(v: Any) -> bool:
    if type(v) is bool:
        return v
    raise _bad(f"expected bool, got {type(v).__name__}")


def _dec_float(v: Any) -> float:
    if type(v) is float or type(v) is int:
        f = float(v) if type(v) is float else float(_dec_int(v))
        if math.isfinite(f):
            return f
        raise _bad(f"float {v!r} is not finite")
    raise _bad(f"expected float, got {type(v).__name__}")


def _dec_str(v: Any) -> str:
    if type(v) is str:
        return v
    raise _bad(f"expected str, got {type(v).__name__}")


def _dec_bytes_or_int(v: Any) -> bytes | int:
    if type(v) is int:
        return _dec_int(v)
    if type(v) is bytes:
        return v
    raise _bad(f"expected bytes or int, got {type(v).__name__}")


def _dec_hash64(v: Any) -> int:
    if type(v) is int and 0 <= v < (1 << 64):
        return v
    raise _bad(f"expected an unsigned 64-bit hash, got {v!r:.40}")


_PRIMITIVE_DECODERS: dict[Any, _Conv] = {
    api.Hash64: _dec_hash64,
    bytes: _dec_bytes,
    int: _dec_int,
    bool: _dec_bool,
    float: _dec_float,
    str: _dec_str,
}


def _enum_decoder(enum_cls: type[IntEnum]) -> _Conv:
    members = {int(m): m for m in enum_cls}

    def dec(v: Any) -> IntEnum:
        m = members.get(v) if type(v) is int else None
        if m is None:
            raise _bad(f"{v!r} is not a {enum_cls.__name__}")
        return m

    return dec


def _union_of_classes_decoder(classes: tuple[type[Any], ...]) -> _Conv:
    allowed = frozenset(TAGS[c] for c in classes)
    names = "/".join(c.__name__ for c in classes)

    def dec(v: Any) -> Any:
        if type(v) is not list or not v or v[0] not in allowed:
            raise _bad(f"expected one of {names}")
        return _DECODERS[_CLASS_BY_TAG[v[0]]](v)

    return dec


def _converters(t: Any) -> tuple[_Conv | None, _Conv]:
    """(encoder or None for identity, decoder) for the annotated type ``t``."""
    if t in _PRIMITIVE_DECODERS:
        return None, _PRIMITIVE_DECODERS[t]
    if isinstance(t, type) and issubclass(t, IntEnum):
        return int, _enum_decoder(t)
    if isinstance(t, type) and t in TAGS:
        cls = t
        return (lambda o: _ENCODERS[cls](o)), (lambda v: _decode_class(cls, v))
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin in (types.UnionType, typing.Union):
        non_none = tuple(a for a in args if a is not type(None))
        if set(non_none) == {bytes, int}:
            return None, _dec_bytes_or_int
        if len(non_none) < len(args):  # Optional[X]
            inner_enc, inner_dec = _converters(
                non_none[0] if len(non_none) == 1 else typing.Union[non_none]  # noqa: UP007
            )

            def dec_opt(v: Any) -> Any:
                return None if v is None else inner_dec(v)

            if inner_enc is None:
                return None, dec_opt
            enc_inner = inner_enc
            return (lambda o: None if o is None else enc_inner(o)), dec_opt
        if all(isinstance(a, type) and a in TAGS for a in non_none):
            return _encode_any, _union_of_classes_decoder(non_none)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item_enc, item_dec = _converters(args[0])

        def dec_seq(v: Any) -> tuple[Any, ...]:
            if type(v) is not list:
                raise _bad("expected array")
            return tuple([item_dec(x) for x in v])

        if item_enc is None:
            return list, dec_seq
        ienc = item_enc
        return (lambda o: [ienc(x) for x in o]), dec_seq
    raise TypeError(f"codec cannot handle type {t!r}")


def _register(cls: type[Any]) -> None:
    hints = typing.get_type_hints(cls, vars(api))
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    tag = TAGS[cls]
    convs = [_converters(hints[f.name]) for f in fields]
    encs = list(zip(names, [c[0] for c in convs], strict=True))
    decs = [c[1] for c in convs]
    required = sum(
        1
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    n = len(fields)

    def enc(o: Any) -> list[Any]:
        out: list[Any] = [tag]
        for name, fenc in encs:
            v = getattr(o, name)
            out.append(v if fenc is None else fenc(v))
        return out

    def dec(v: Any) -> Any:
        if type(v) is not list or not v or v[0] != tag:
            raise _bad(f"expected {cls.__name__}")
        k = len(v) - 1
        if k < required or k > n:
            raise _bad(f"{cls.__name__} needs {required}..{n} fields, got {k}")
        return cls(*[decs[i](v[i + 1]) for i in range(k)])

    _ENCODERS[cls] = enc
    _DECODERS[cls] = dec


def _encode_any(o: Any) -> Any:
    enc = _ENCODERS.get(type(o))
    if enc is None:
        raise TypeError(f"codec cannot encode {type(o).__name__}")
    return enc(o)


def _decode_class(cls: type[T], v: Any) -> T:
    return typing.cast(T, _DECODERS[cls](v))


for _cls in TAGS:
    _register(_cls)


# --- public API -----------------------------------------------------------------------------


MAX_NESTING = 100
"""Deepest array nesting accepted on decode (about 30 levels of nested txns).  Checked
iteratively before decoding, so a deep message fails the same way on every member instead of
hitting Python's recursion limit at a depth that depends on the caller's stack."""


def _check_nesting(plain: Any) -> None:
    stack = [(plain, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_NESTING:
            raise _bad(f"nested deeper than {MAX_NESTING} levels")
        for x in v:
            if type(x) is list:
                stack.append((x, depth + 1))


def to_plain(obj: Any) -> Any:
    """Any registered api value as plain msgpack types (lists, ints, bytes, ...)."""
    return _encode_any(obj)


def from_plain(cls: type[T], plain: Any) -> T:
    """Rebuild a ``cls`` from :func:`to_plain` output; RemoteProtocolError if malformed."""
    try:
        if type(plain) is list:
            _check_nesting(plain)
        return _decode_class(cls, plain)
    except RemoteProtocolError:
        raise
    except (ValueError, TypeError, RecursionError) as e:
        raise _bad(str(e)) from None


def from_plain_any(plain: Any) -> Any:
    """Rebuild whichever registered value ``plain`` encodes (dispatch on its tag)."""
    if type(plain) is not list or not plain or type(plain[0]) is not int:
        raise _bad("expected a tagged array")
    cls = _CLASS_BY_TAG.get(plain[0])
    if cls is None:
        raise _bad(f"unknown tag {plain[0]}")
    return from_plain(cls, plain)


def pack(plain: Any) -> bytes:
    return typing.cast(bytes, msgpack.packb(plain, use_bin_type=True))


def unpack(data: bytes) -> Any:
    """msgpack bytes to plain values; RemoteProtocolError on anything undecodable."""
    try:
        return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as e:  # msgpack raises many unrelated types on garbage
        raise _bad(f"undecodable msgpack ({type(e).__name__})") from None


def encode(obj: Any) -> bytes:
    """One api value to bytes."""
    return pack(_encode_any(obj))


def decode(cls: type[T], data: bytes) -> T:
    """Bytes from :func:`encode` back to a ``cls``."""
    return from_plain(cls, unpack(data))


def encode_command(cmd: api.Command) -> bytes:
    return encode(cmd)


def decode_command(data: bytes) -> api.Command:
    """RemoteProtocolError if ``data`` is not an encoded :class:`~raftkv.api.Command`."""
    return decode(api.Command, data)


def encode_error(err: RaftKVError) -> list[Any]:
    return [err.code, str(err), err.details()]


def decode_error(plain: Any) -> RaftKVError:
    if (
        type(plain) is not list
        or len(plain) != 3
        or type(plain[0]) is not str
        or type(plain[1]) is not str
        or type(plain[2]) is not dict
    ):
        raise _bad("expected [code, message, details]")
    return error_from_code(plain[0], plain[1], plain[2])
