"""Output formats of the CLI, as etcdctl prints them: ``simple``, ``json`` and ``table``.

JSON follows etcdctl's ``-w json``: one document per command, keys and values base64-encoded
(they are bytes), ids as integers.  Tables are drawn like etcdctl's (ASCII box, upper-case
headers).
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any

import click

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
    """Bytes for a terminal: UTF-8 where possible, escapes otherwise (like ``%q``-less etcdctl,
    which writes raw bytes; we keep the output decodable)."""
    return b.decode("utf-8", errors="backslashreplace")


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
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(row: Sequence[str], center: bool) -> str:
        parts = [(c.center(w) if center else c.ljust(w)) for c, w in zip(row, widths, strict=True)]
        return "| " + " | ".join(parts) + " |"

    out = [sep, line(cells[0], True), sep]
    out += [line(r, False) for r in cells[1:]]
    out.append(sep)
    return "\n".join(out)
