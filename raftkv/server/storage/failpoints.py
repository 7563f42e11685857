"""Named crash points for storage, inert unless ``RAFTKV_FAILPOINTS`` names them.

``RAFTKV_FAILPOINTS="after_commit=crash@5,snapshot_write=error"`` makes the 5th hit of
``after_commit`` kill the process with ``os._exit`` (no cleanup, no flush: a power cut as far
as our files are concerned) and every hit of ``snapshot_write`` raise :class:`StorageError`.
``@N`` means "from the N-th hit on" (default 1).  The environment is read once, on first use;
tests that change it in-process call :func:`reload`.

Points: ``before_commit``, ``after_commit`` (around the SQLite COMMIT of a Ready batch),
``snapshot_write`` (snapshot temp file written and fsynced, not yet renamed),
``snapshot_install`` (a leader's snapshot received by a follower: its file written, the
SQLite row that installs it not yet committed; also in the chunked file receiver, verified
but not yet renamed into place), ``before_apply`` and ``after_apply`` (around applying a
Ready's committed entries to the state machine, in the node: committed and durable, the
answers to their clients not yet sent).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from raftkv.errors import StorageError

ENV_VAR = "RAFTKV_FAILPOINTS"
POINTS = frozenset(
    {
        "before_commit",
        "after_commit",
        "snapshot_write",
        "snapshot_install",
        "before_apply",
        "after_apply",
    }
)
CRASH_EXIT_CODE = 77
_ACTIONS = frozenset({"crash", "error"})


@dataclass(slots=True)
class _Point:
    action: str
    at: int
    hits: int = 0


_points: dict[str, _Point] | None = None


def parse(spec: str) -> dict[str, _Point]:
    """Parse ``name=action[@n]`` items separated by commas or semicolons."""
    out: dict[str, _Point] = {}
    for raw in spec.replace(";", ",").split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, rhs = item.partition("=")
        action, _, count = rhs.partition("@")
        if not sep or name not in POINTS or action not in _ACTIONS:
            raise ValueError(f"bad failpoint {item!r} (points: {sorted(POINTS)}, crash|error)")
        at = int(count) if count else 1
        if at < 1:
            raise ValueError(f"bad failpoint {item!r}: the hit count starts at 1")
        out[name] = _Point(action, at)
    return out


def reload() -> None:
    """Re-read the environment variable (and reset hit counts)."""
    global _points
    _points = parse(os.environ.get(ENV_VAR, ""))


def hit(name: str) -> None:
    """Mark one pass through the point ``name``; act if it is armed and due."""
    if _points is None:
        reload()
    assert _points is not None
    p = _points.get(name)
    if p is None:
        return
    p.hits += 1
    if p.hits < p.at:
        return
    if p.action == "crash":
        sys.stderr.write(f"failpoint {name}: crash at hit {p.hits}\n")
        sys.stderr.flush()
        os._exit(CRASH_EXIT_CODE)
    raise StorageError(f"failpoint {name}: injected error at hit {p.hits}")
