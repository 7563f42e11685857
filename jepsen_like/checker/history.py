"""The history model shared by the jepsen_like runner and the checkers.

A history is a list of :class:`Op` events, Jepsen style: a client *process* invokes an
operation (``type=INVOKE``) and later completes it with ``OK`` (it happened, ``value`` holds
what was observed), ``FAIL`` (it certainly did not happen) or ``INFO`` (unknown: a timeout, a
crash; it may happen at any later time, or never).  A process runs one operation at a time;
after an ``INFO`` the runner should give the thread a fresh process id, as Jepsen does.

API for the runner (everything is plain data; nothing here does I/O except the two file
functions):

* ``Op(index, process, type, f, key=None, value=None, time_ns=0, end_ns=None, node=None,
  extra={})`` -- ``type`` is an :class:`OpType`; ``f`` names the operation (``"put"``,
  ``"txn"``, ``"add"``...); ``key``/``value`` are JSON-able values, ``bytes`` allowed.
  ``time_ns`` is when the event happened (``time.monotonic_ns()`` of the runner); ``end_ns``
  is only for a *self-contained* record, one line per operation: a completion (``OK``/
  ``FAIL``/``INFO``) with ``end_ns`` set is not paired with an invoke; its ``time_ns`` is the
  invocation time and ``end_ns`` the completion time.  ``node`` is the member the client
  talked to; ``extra`` holds anything else (``{"revision": 42}``, an error name...).
* ``write_history(path, ops)`` / ``read_history(path)`` -- JSON Lines, one op per line.
  ``HistoryWriter(path)`` appends op by op (flushed per line, so a crashed run keeps its
  history).  ``bytes`` are stored as a UTF-8 ``str`` when they decode, else as
  ``{"b64": "..."}``; so a reader gets ``str`` back for UTF-8 bytes.  Tuples come back as
  lists.
* ``pair(history)`` -> ``list[Completed]``: each invocation joined with its completion, in
  invocation order; a missing completion (the run ended first) counts as ``INFO``.

Why JSONL rather than EDN: the runner writes it with the standard library, it survives a
crash line by line, and ``jq`` reads it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeAlias

from jepsen_like.checker.formats import HistoryFormatError

__all__ = [
    "Completed",
    "HistoryFormatError",
    "HistoryWriter",
    "Op",
    "OpType",
    "Outcome",
    "decode_value",
    "encode_value",
    "iter_history",
    "op_from_json",
    "op_to_json",
    "pair",
    "read_history",
    "write_history",
]

Json: TypeAlias = Any
"""A JSON-able value (str, int, float, bool, None, list, dict), plus bytes in memory."""


class OpType(IntEnum):
    """The kind of a history event."""

    INVOKE = 0
    OK = 1
    FAIL = 2
    INFO = 3

    @property
    def label(self) -> str:
        """The lowercase name used in files (``"invoke"``, ``"ok"``...)."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> OpType:
        """``"ok"`` or ``":ok"`` -> ``OpType.OK``; raises ``ValueError`` otherwise."""
        try:
            return cls[text.lstrip(":").upper()]
        except KeyError:
            raise ValueError(f"unknown op type {text!r}") from None


class Outcome(IntEnum):
    """What a completed operation tells about its effect."""

    OK = 1
    FAIL = 2
    UNKNOWN = 3


@dataclass(frozen=True, slots=True)
class Op:
    """One event of a history (see the module docstring for the fields)."""

    index: int
    process: int
    type: OpType
    f: str
    key: Json = None
    value: Json = None
    time_ns: int = 0
    end_ns: int | None = None
    node: str | None = None
    extra: Mapping[str, Json] = field(default_factory=dict)

    # Invariant: end_ns is None for INVOKE, and end_ns >= time_ns when set.
    def __post_init__(self) -> None:
        if self.end_ns is not None:
            if self.type is OpType.INVOKE:
                raise ValueError(f"op {self.index}: an invoke has no end_ns")
            if self.end_ns < self.time_ns:
                raise ValueError(f"op {self.index}: end_ns before time_ns")


@dataclass(frozen=True, slots=True)
class Completed:
    """An invocation joined with its completion.

    ``value`` is the invocation's value (what was asked), ``result`` the completion's (what
    was observed; ``None`` when the outcome is unknown).  ``return_ns`` is ``None`` when the
    outcome is unknown: the operation may take effect at any time after ``invoke_ns``.
    ``extra`` merges the invoke's and the completion's (the completion wins).
    """

    index: int
    process: int
    f: str
    key: Json
    value: Json
    result: Json
    outcome: Outcome
    invoke_ns: int
    return_ns: int | None
    node: str | None = None
    extra: Mapping[str, Json] = field(default_factory=dict)
    completion_index: int | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAIL

    @property
    def unknown(self) -> bool:
        return self.outcome is Outcome.UNKNOWN


_OUTCOME = {OpType.OK: Outcome.OK, OpType.FAIL: Outcome.FAIL, OpType.INFO: Outcome.UNKNOWN}


def pair(history: Iterable[Op]) -> list[Completed]:
    """Join each invocation with the next completion of the same process.

    A completion with ``end_ns`` set stands alone (a one-line record).  An ``INFO``
    completion, or none at all, gives ``Outcome.UNKNOWN`` and ``return_ns=None``.  Raises
    :class:`HistoryFormatError` (with the op index as the line) when a process invokes twice
    without completing, or completes what it never invoked.
    """
    open_: dict[int, Op] = {}
    out: list[Completed] = []
    for op in history:
        if op.type is OpType.INVOKE:
            if op.process in open_:
                prev = open_[op.process].index
                raise HistoryFormatError(
                    op.index, f"process {op.process} invokes while op {prev} is open"
                )
            open_[op.process] = op
            continue
        if op.end_ns is not None:
            out.append(_complete(op, op))
            continue
        inv = open_.pop(op.process, None)
        if inv is None:
            raise HistoryFormatError(
                op.index, f"process {op.process} completes {op.f} it never invoked"
            )
        if inv.f != op.f:
            raise HistoryFormatError(
                op.index, f"process {op.process} completes {op.f}, invoked {inv.f}"
            )
        out.append(_complete(inv, op))
    for inv in open_.values():
        out.append(
            Completed(
                inv.index,
                inv.process,
                inv.f,
                inv.key,
                inv.value,
                None,
                Outcome.UNKNOWN,
                inv.time_ns,
                None,
                inv.node,
                dict(inv.extra),
            )
        )
    out.sort(key=lambda c: (c.invoke_ns, c.index))
    return out


def _complete(inv: Op, done: Op) -> Completed:
    outcome = _OUTCOME[done.type]
    standalone = inv is done
    ret: int | None
    if outcome is Outcome.UNKNOWN:
        ret = None
    else:
        ret = done.end_ns if standalone and done.end_ns is not None else done.time_ns
    # A one-line record has one value: what was asked and, when known, what was seen.
    value = done.value if standalone else inv.value
    result = None if outcome is Outcome.UNKNOWN else done.value
    return Completed(
        inv.index,
        inv.process,
        inv.f,
        inv.key if inv.key is not None else done.key,
        value,
        result,
        outcome,
        inv.time_ns,
        ret,
        done.node or inv.node,
        {**inv.extra, **done.extra},
        None if standalone else done.index,
    )


# --- JSON Lines ---------------------------------------------------------------------------


def encode_value(v: Json) -> Json:
    """Make ``v`` JSON-able: bytes -> UTF-8 str or ``{"b64": ...}``; tuples -> lists."""
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(v).decode("ascii")}
    if isinstance(v, list | tuple):
        return [encode_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): encode_value(x) for k, x in v.items()}
    return v


def decode_value(v: Json) -> Json:
    """The inverse of :func:`encode_value` (``{"b64": ...}`` -> bytes)."""
    if isinstance(v, dict):
        if len(v) == 1 and isinstance(v.get("b64"), str):
            return base64.b64decode(v["b64"])
        return {k: decode_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [decode_value(x) for x in v]
    return v


def op_to_json(op: Op) -> dict[str, Json]:
    """One op as a JSON object (optional fields left out when empty)."""
    d: dict[str, Json] = {
        "index": op.index,
        "process": op.process,
        "type": op.type.label,
        "f": op.f,
        "time_ns": op.time_ns,
    }
    if op.key is not None:
        d["key"] = encode_value(op.key)
    if op.value is not None:
        d["value"] = encode_value(op.value)
    if op.end_ns is not None:
        d["end_ns"] = op.end_ns
    if op.node is not None:
        d["node"] = op.node
    if op.extra:
        d["extra"] = encode_value(dict(op.extra))
    return d


def op_from_json(d: Mapping[str, Json], line: int = 0) -> Op:
    """Read an op written by :func:`op_to_json`; raises :class:`HistoryFormatError`."""
    try:
        extra = decode_value(d.get("extra") or {})
        end = d.get("end_ns")
        return Op(
            index=int(d["index"]),
            process=int(d["process"]),
            type=OpType.parse(str(d["type"])),
            f=str(d["f"]),
            key=decode_value(d.get("key")),
            value=decode_value(d.get("value")),
            time_ns=int(d.get("time_ns", 0)),
            end_ns=None if end is None else int(end),
            node=None if d.get("node") is None else str(d["node"]),
            extra=extra if isinstance(extra, dict) else {},
        )
    except (KeyError, TypeError, ValueError) as e:
        raise HistoryFormatError(line, f"bad op {dict(d)!r}: {e}") from e


def write_history(path: str | Path, ops: Iterable[Op]) -> None:
    """Write ``ops`` to ``path`` as JSON Lines (replacing the file)."""
    with Path(path).open("w", encoding="utf-8") as f:
        for op in ops:
            f.write(json.dumps(op_to_json(op), separators=(",", ":")) + "\n")


def iter_history(lines: Iterable[str]) -> Iterator[Op]:
    """Parse JSON Lines; blank lines are skipped, a bad line raises with its line number."""
    for n, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise HistoryFormatError(n, f"not JSON: {e}") from e
        if not isinstance(d, dict):
            raise HistoryFormatError(n, "not a JSON object")
        yield op_from_json(d, n)


def read_history(path: str | Path) -> list[Op]:
    """Read a history written by :func:`write_history` or :class:`HistoryWriter`."""
    with Path(path).open(encoding="utf-8") as f:
        return list(iter_history(f))


class HistoryWriter:
    """Appends ops to a JSONL file as they happen, flushing each line.

    :meth:`record` numbers ops in the order they are written.  Not thread-safe: call it
    from one event loop.
    """

    def __init__(self, path: str | Path) -> None:
        self._f: IO[str] = Path(path).open("a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self.next_index = 0

    def append(self, op: Op) -> Op:
        """Write ``op`` as it is and return it."""
        self._f.write(json.dumps(op_to_json(op), separators=(",", ":")) + "\n")
        self._f.flush()
        self.next_index = max(self.next_index, op.index + 1)
        return op

    def record(
        self,
        process: int,
        type: OpType,
        f: str,
        key: Json = None,
        value: Json = None,
        *,
        time_ns: int,
        node: str | None = None,
        extra: Mapping[str, Json] | None = None,
    ) -> Op:
        """Build an op with the next index, write it, and return it."""
        op = Op(self.next_index, process, type, f, key, value, time_ns, None, node, extra or {})
        return self.append(op)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
