"""Output formats of the CLI, as etcdctl prints them: ``simple``, ``json`` and ``table``.

JSON follows etcdctl's ``-w json``: one document per command, keys and values base64-encoded
(they are bytes), ids as integers.  Tables are drawn like etcdctl's (ASCII box, upper-case
headers).  In ``simple`` output keys and values are written byte for byte, as etcdctl does
(:func:`echo_data`), so ``get --print-value-only > file`` copies a value exactly; table cells
escape what a terminal would interpret (:func:`printable`).  ``--hex`` prints keys and values
as ``\\x66\\x6f\\x6f``, as etcdctl's ``--hex``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import unicodedata
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any

import click

from .context import Settings

FORMATS = ("simple", "json", "table")


def to_json_value(obj: Any) -> Any:
    """Dataclasses, bytes (base64), enums and tuples as JSON-ready values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json_value(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode()
    if isinstance(obj, IntEnum):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, list | tuple):
        return [to_json_value(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): to_json_value(v) for k, v in obj.items()}
    return obj


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(to_json_value(obj), sort_keys=False))


def text(b: bytes) -> str:
    """Bytes in a message or a line of text: UTF-8 where possible, escapes otherwise."""
    return b.decode("utf-8", errors="backslashreplace")


def arg_bytes(arg: str) -> bytes:
    """A command-line argument as the bytes the shell passed: arguments that are not valid
    UTF-8 reach Python as surrogate escapes, which :func:`os.fsencode` turns back into the
    original bytes (etcdctl passes arguments through as bytes too)."""
    return os.fsencode(arg)


def hex_bytes(b: bytes) -> str:
    """etcdctl's ``--hex`` form: ``\\x66\\x6f\\x6f`` for ``foo``."""
    return "".join(f"\\x{c:02x}" for c in b)


def _hex_output() -> bool:
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return isinstance(obj, Settings) and obj.hex


def echo_data(b: bytes) -> None:
    """Write a key or value and a newline to stdout byte for byte (``--hex``: as hex).
    ``click.echo`` would decode it and, when stdout is not a terminal, strip ANSI escapes."""
    if _hex_output():
        click.echo(hex_bytes(b))
        return
    click.echo(b)  # bytes go to stdout's buffer untouched


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(b: bytes) -> str:
    """A key or value for a table cell: UTF-8 text with invalid bytes and control characters
    (NUL, ESC, newline...) escaped, so a cell never moves the cursor or paints the terminal
    (``--hex``: as hex)."""
    if _hex_output():
        return hex_bytes(b)
    s = b.decode("utf-8", errors="backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", s)


def width(s: str) -> int:
    """Terminal columns of ``s``: wide (CJK) characters take two, combining marks none."""
    n = 0
    for ch in s:
        if unicodedata.combining(ch):
            continue
        n += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return n


def hex_id(i: int) -> str:
    return f"{i:x}"


def human_size(n: int) -> str:
    """``1.2 MB`` style, as etcdctl's DB SIZE column."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An ASCII table with a header row, etcdctl style."""
    cells = [[str(h).upper() for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(width(row[i]) for row in cells) for i in range(len(headers))]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def pad(c: str, w: int, center: bool) -> str:
        room = w - width(c)
        left = room // 2 if center else 0
        return " " * left + c + " " * (room - left)

    def line(row: Sequence[str], center: bool) -> str:
        parts = [pad(c, w, center) for c, w in zip(row, widths, strict=True)]
        return "| " + " | ".join(parts) + " |"

    out = [sep, line(cells[0], True), sep]
    out += [line(r, False) for r in cells[1:]]
    out.append(sep)
    return "\n".join(out)
