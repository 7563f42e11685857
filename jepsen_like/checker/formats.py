"""Parsers from recorded histories to :class:`Operation` lists.

Two formats, both Jepsen's ``{process, type, f, value}`` events:

* ``jepsen-log``: ``INFO  jepsen.util - <process> <type> <f> <value>`` lines of a Jepsen log;
  the register operations ``read`` / ``write`` / ``cas [A B]``.
* ``edn``: one EDN map per line, ``{:process P, :type :ok, :f :get, :key "K", :value "V"}``;
  ``get`` / ``put`` / ``append`` for the kv model, ``read`` / ``write`` / ``cas`` for the
  register model.

What the event types mean for the checker:

* ``:invoke`` opens an operation of that process (a process runs one at a time).
* ``:ok`` closes it with the observed output.
* ``:fail`` means it definitely did not take effect.  A failed ``cas [A B]`` is kept as a CAS
  that returned false (the register did not hold A); any other failed operation is dropped.
* ``:info`` (crashed, timed out) and an ``:invoke`` that never completes leave the outcome
  unknown: the operation may take effect at any time after its invocation, or never.
  A read with unknown outcome changes nothing and is dropped.

Operation ids and times are line numbers (1-based): an operation's id is the line of its
invocation, so an anomaly report points straight into the file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Generic, TypeAlias, TypeVar

from jepsen_like.checker.linearizability import UNKNOWN, Operation
from jepsen_like.checker.models import (
    KvFn,
    KvInput,
    KvOutput,
    RegisterFn,
    RegisterInput,
    RegisterOutput,
)

__all__ = [
    "FORMATS",
    "HistoryFormatError",
    "parse_edn",
    "parse_jepsen_log",
]

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741

EdnValue: TypeAlias = "str | int | bool | Keyword | tuple[EdnValue, ...] | None"


class HistoryFormatError(ValueError):
    """A history file that cannot be read as the format it claims (with its line number).

    It lives here rather than in ``raftkv.errors``: it is an error of the test harness's
    input, never raised by raftkv itself.
    """

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True, slots=True)
class Keyword:
    """An EDN keyword such as ``:timed-out`` (stored without the colon)."""

    name: str

    def __str__(self) -> str:
        return ":" + self.name


@dataclass(slots=True)
class _Open(Generic[I]):
    line: int
    f: str
    input: I
    read_only: bool


class _Builder(Generic[I, O]):
    """Pairs invocations with completions per process and applies the event semantics."""

    def __init__(self) -> None:
        self.open: dict[int, _Open[I]] = {}
        self.ops: list[Operation[I, O]] = []

    def invoke(self, line: int, process: int, f: str, input: I, read_only: bool) -> None:
        if process in self.open:
            prev = self.open[process].line
            raise HistoryFormatError(line, f"process {process} invokes while line {prev} is open")
        self.open[process] = _Open(line, f, input, read_only)

    def _close(self, line: int, process: int, f: str) -> _Open[I]:
        op = self.open.pop(process, None)
        if op is None:
            raise HistoryFormatError(line, f"process {process} completes {f} it never invoked")
        if op.f != f:
            raise HistoryFormatError(line, f"process {process} completes {f}, invoked {op.f}")
        return op

    def ok(self, line: int, process: int, f: str, output: O) -> None:
        op = self._close(line, process, f)
        self.ops.append(Operation(op.line, process, op.input, output, op.line, line))

    def fail(self, line: int, process: int, f: str) -> None:
        self._close(line, process, f)

    def info(self, line: int, process: int, f: str) -> None:
        self._unknown(process, self._close(line, process, f))

    def _unknown(self, process: int, op: _Open[I]) -> None:
        if not op.read_only:
            self.ops.append(Operation(op.line, process, op.input, UNKNOWN, op.line, math.inf))

    def finish(self) -> list[Operation[I, O]]:
        for process, op in sorted(self.open.items(), key=lambda kv: kv[1].line):
            self._unknown(process, op)
        self.open.clear()
        return sorted(self.ops, key=lambda o: o.id)


# --- jepsen-log -----------------------------------------------------------------------------

_LOG_LINE: Final = re.compile(
    r"^\S+\s+jepsen\.util\s+-\s+(?P<process>\d+)\s+(?P<type>:[\w-]+)\s+:(?P<f>[\w-]+)"
    r"(?:\s+(?P<value>.*?))?\s*$"
)


def parse_jepsen_log(
    lines: Iterable[str],
) -> list[Operation[RegisterInput, RegisterOutput]]:
    """Read the register operations of a Jepsen log; other lines (nemesis, logging) are skipped."""
    b: _Builder[RegisterInput, RegisterOutput] = _Builder()
    for n, text in enumerate(lines, start=1):
        m = _LOG_LINE.match(text)
        if m is None:
            continue
        value = _parse_edn_value(m["value"] or "nil", n)
        _register_event(b, n, int(m["process"]), m["type"], m["f"], value)
    return b.finish()


def _register_event(
    b: _Builder[RegisterInput, RegisterOutput],
    n: int,
    process: int,
    kind: str,
    f: str,
    value: EdnValue,
) -> None:
    if kind == ":invoke":
        if f == "read":
            b.invoke(n, process, f, RegisterInput(RegisterFn.READ), True)
        elif f == "write":
            b.invoke(n, process, f, RegisterInput(RegisterFn.WRITE, value), False)
        elif f == "cas":
            if not (isinstance(value, tuple) and len(value) == 2):
                raise HistoryFormatError(n, f"cas needs [expected new], got {value!r}")
            b.invoke(n, process, f, RegisterInput(RegisterFn.CAS, value[1], value[0]), False)
        else:
            raise HistoryFormatError(n, f"unknown register operation :{f}")
    elif kind == ":ok":
        b.ok(n, process, f, value if f == "read" else (True if f == "cas" else None))
    elif kind == ":fail":
        if f == "cas" and isinstance(value, tuple):
            b.ok(n, process, f, False)
        else:
            b.fail(n, process, f)
    elif kind == ":info":
        b.info(n, process, f)
    else:
        raise HistoryFormatError(n, f"unknown event type {kind}")


# --- edn ------------------------------------------------------------------------------------

_TOKEN: Final = re.compile(
    r"""[\s,]*(?:
        (?P<open>[{\[(]) | (?P<close>[}\])]) |
        "(?P<str>(?:[^"\\]|\\.)*)" |
        (?P<int>[-+]?\d+)(?![\w.]) |
        :(?P<kw>[^\s,{}\[\]()"]+) |
        (?P<sym>[^\s,{}\[\]()"]+)
    )""",
    re.VERBOSE,
)
_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
_SYMBOLS: Final[dict[str, EdnValue]] = {"nil": None, "true": True, "false": False}


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], m[1]), s)


def _parse_edn_value(text: str, line: int) -> EdnValue:
    """Parse one scalar, vector or list (``[1 2]``, ``"s"``, ``nil``, ``:kw``, ``3``)."""
    value, pos = _read(text, 0, line)
    if text[pos:].strip(" \t\r\n,"):
        raise HistoryFormatError(line, f"trailing text {text[pos:]!r}")
    return value


def _read(text: str, pos: int, line: int) -> tuple[EdnValue, int]:
    m = _TOKEN.match(text, pos)
    if m is None:
        raise HistoryFormatError(line, f"expected a value at {text[pos:]!r}")
    if m["str"] is not None:
        return _unescape(m["str"]), m.end()
    if m["int"] is not None:
        return int(m["int"]), m.end()
    if m["kw"] is not None:
        return Keyword(m["kw"]), m.end()
    if m["sym"] is not None:
        if m["sym"] not in _SYMBOLS:
            raise HistoryFormatError(line, f"unsupported EDN symbol {m['sym']!r}")
        return _SYMBOLS[m["sym"]], m.end()
    if m["open"] in ("[", "("):
        items: list[EdnValue] = []
        pos = m.end()
        while True:
            c = _TOKEN.match(text, pos)
            if c is not None and c["close"] is not None:
                return tuple(items), c.end()
            item, pos = _read(text, pos, line)
            items.append(item)
    raise HistoryFormatError(line, f"unexpected {text[pos:].strip()[:20]!r}")


def _read_map(text: str, line: int) -> dict[str, EdnValue]:
    """Parse ``{:k v, ...}`` with keyword keys into a dict keyed by the keyword names."""
    m = _TOKEN.match(text, 0)
    if m is None or m["open"] != "{":
        raise HistoryFormatError(line, "expected an EDN map")
    pos = m.end()
    out: dict[str, EdnValue] = {}
    while True:
        c = _TOKEN.match(text, pos)
        if c is not None and c["close"] == "}":
            if text[c.end() :].strip():
                raise HistoryFormatError(line, "text after the map")
            return out
        key, pos = _read(text, pos, line)
        if not isinstance(key, Keyword):
            raise HistoryFormatError(line, f"map key {key!r} is not a keyword")
        out[key.name], pos = _read(text, pos, line)


def parse_edn(
    lines: Iterable[str],
) -> list[Operation[KvInput, KvOutput] | Operation[RegisterInput, RegisterOutput]]:
    """Read one EDN operation map per line; blank lines and ``;`` comments are skipped."""
    kv: _Builder[KvInput, KvOutput] = _Builder()
    reg: _Builder[RegisterInput, RegisterOutput] = _Builder()
    for n, text in enumerate(lines, start=1):
        if not text.strip() or text.lstrip().startswith(";"):
            continue
        ev = _read_map(text, n)
        process, kind, f = ev.get("process"), ev.get("type"), ev.get("f")
        if not isinstance(process, int) or isinstance(process, bool):
            continue  # the nemesis and other non-client processes carry no operation
        if not isinstance(kind, Keyword) or not isinstance(f, Keyword):
            raise HistoryFormatError(n, "an operation needs :type and :f keywords")
        value = ev.get("value")
        if f.name in ("get", "put", "append"):
            _kv_event(kv, n, process, str(kind), f.name, ev.get("key"), value)
        else:
            _register_event(reg, n, process, str(kind), f.name, value)
    ops: list[Operation[KvInput, KvOutput] | Operation[RegisterInput, RegisterOutput]] = []
    ops.extend(kv.finish())
    ops.extend(reg.finish())
    if kv.ops and reg.ops:
        raise HistoryFormatError(1, "mixes kv (get/put/append) and register operations")
    return ops


def _kv_event(
    b: _Builder[KvInput, KvOutput],
    n: int,
    process: int,
    kind: str,
    f: str,
    key: EdnValue,
    value: EdnValue,
) -> None:
    if not isinstance(key, str):
        raise HistoryFormatError(n, f":{f} needs a string :key, got {key!r}")
    if kind == ":invoke":
        fn = {"get": KvFn.GET, "put": KvFn.PUT, "append": KvFn.APPEND}[f]
        if fn is not KvFn.GET and not isinstance(value, str):
            raise HistoryFormatError(n, f":{f} needs a string :value, got {value!r}")
        b.invoke(
            n, process, f, KvInput(fn, key, value if isinstance(value, str) else ""), f == "get"
        )
    elif kind == ":ok":
        if f != "get":
            b.ok(n, process, f, None)
        elif value is None or isinstance(value, str):
            b.ok(n, process, f, value or "")
        else:
            raise HistoryFormatError(n, f":get returned a non-string {value!r}")
    elif kind == ":fail":
        b.fail(n, process, f)
    elif kind == ":info":
        b.info(n, process, f)
    else:
        raise HistoryFormatError(n, f"unknown event type {kind}")


FORMATS: Final = ("jepsen-log", "edn")
"""Format names accepted by the CLI."""
