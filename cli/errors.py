"""Errors as one sentence for the ``Error: ...`` line: no Python type names or reprs.

The library's messages are written for programs (``Timeout: lock b'mylock/' not acquired``);
on the command line a key is shown as text (``lock "mylock/" not acquired``), an address as
``host:port``, and an error's class name only when its message is empty (as words).
"""

from __future__ import annotations

import ast
import re

from raftkv.errors import RaftKVError

from .output import printable


def _error_names() -> set[str]:
    names: set[str] = set()
    todo: list[type[BaseException]] = [RaftKVError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo += cls.__subclasses__()
    names |= {"OSError", "ConnectionRefusedError", "TimeoutError", "ValueError"}
    return names


_TYPE_PREFIX = re.compile(r"\b(?:" + "|".join(sorted(_error_names())) + r"): ")
_BYTES_REPR = re.compile(r"""\bb('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")
_ADDR_TUPLE = re.compile(r"""\('([0-9A-Za-z.:\-]+)', (\d+)\)""")


def _key(m: re.Match[str]) -> str:
    try:
        raw = ast.literal_eval("b" + m.group(1))
    except (ValueError, SyntaxError):
        return m.group(0)
    return '"' + printable(raw) + '"' if isinstance(raw, bytes) else m.group(0)


def describe(e: RaftKVError) -> str:
    """``e`` as the sentence after ``Error: ``."""
    msg = str(e) or type(e).code.replace("_", " ")
    msg = _TYPE_PREFIX.sub("", msg)
    msg = _BYTES_REPR.sub(_key, msg)
    return _ADDR_TUPLE.sub(r"\1:\2", msg)
