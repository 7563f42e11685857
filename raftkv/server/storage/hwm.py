"""The durable high-water mark: the furthest state this member ever made durable, kept outside
the SQLite file.

SQLite alone cannot tell that it lost a suffix of its own history: the recorded log end
(``log_tail``) lives in the same database, so a truncated ``raft.db-wal`` rolls it back too and
the database opens consistent but old.  ``raft.hwm`` records, after every group commit that
moved them, the last log index and the term and vote of the durable hard state (and the
commit index they were saved with).  A member that opens a log ending below it, or a hard
state older than it, has lost writes it may have acknowledged: :class:`StorageLoss`.

Semantics:

* **Never ahead of SQLite.** The mark is raised only after the SQLite transaction that reached
  it has committed, and lowered *before* a transaction that shortens the log (a new leader
  overwriting an uncommitted suffix, a snapshot replacing the log), so a crash at any point
  leaves ``hwm <= what SQLite holds``: no false alarm after an ordinary crash.
* **At least what was acknowledged.** It is raised before the callers of ``save`` are woken,
  so before any message that acknowledges the entries (or grants the vote) leaves.
* **Atomic, cheap.** The file has two fixed 64-byte slots, each with a sequence number and a
  CRC32; an update overwrites the older slot in place (``pwrite`` + ``fdatasync``, no rename
  and no directory fsync, the size never changes) and a reader takes the valid slot with the
  highest sequence.  A torn update leaves the previous value, which is never higher than what
  SQLite holds.  The file is created whole: temp file, fsync, rename, fsync of the directory.
* **Unknown is not lost.** A data dir without the file (written by an older version) or with
  no valid slot opens normally; the mark is created from what the database holds.

An older copy of the whole data dir carries an older mark too and is not caught here; the
leader catches it (:class:`raftkv.raft.LogLost`).
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from raftkv.errors import CorruptionError
from raftkv.server.storage.snapfile import fsync_dir

HWM_NAME: Final = "raft.hwm"
SLOT_SIZE: Final = 64
_MAGIC: Final = b"RKHW"
_BODY = struct.Struct(">4sQQQQQ")  # magic, seq, last_index, term, vote, commit
_CRC = struct.Struct(">I")
_U64_MAX: Final = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class HighWater:
    """The furthest durable state: last log index, hard-state term and vote, commit index."""

    last_index: int
    term: int
    vote: int
    commit: int


class StorageLoss(CorruptionError):
    """This member's storage holds less than it once made durable (and may have acknowledged).

    It must not take part in the cluster: remove it and add it back with an empty data dir.
    """

    def __init__(self, message: str, found: HighWater, mark: HighWater) -> None:
        super().__init__(message)
        self.found = found
        self.mark = mark


def check(found: HighWater, mark: HighWater) -> str | None:
    """Why ``found`` (what the database holds) is behind ``mark``; None if it is not."""
    if found.last_index < mark.last_index:
        return (
            f"the log ends at index {found.last_index}, but entries up to {mark.last_index} "
            "were durably written"
        )
    if found.term < mark.term:
        return f"the hard state is at term {found.term}, but term {mark.term} was durable"
    if found.term == mark.term and mark.vote and found.vote != mark.vote:
        return (
            f"the vote of term {found.term} was {mark.vote:x} and is now {found.vote:x} "
            "(a vote was lost)"
        )
    if found.commit < mark.commit:
        return f"the commit index is {found.commit}, but {mark.commit} was durable"
    return None


def _encode(seq: int, v: HighWater) -> bytes:
    for n in (seq, v.last_index, v.term, v.vote, v.commit):
        if not 0 <= n <= _U64_MAX:
            raise ValueError(f"high-water mark field out of range: {n}")
    body = _BODY.pack(_MAGIC, seq, v.last_index, v.term, v.vote, v.commit)
    rec = body + _CRC.pack(zlib.crc32(body))
    return rec.ljust(SLOT_SIZE, b"\0")


def _decode(raw: bytes) -> tuple[int, HighWater] | None:
    n = _BODY.size
    if len(raw) < n + _CRC.size:
        return None
    body = raw[:n]
    (crc,) = _CRC.unpack(raw[n : n + _CRC.size])
    if zlib.crc32(body) != crc:
        return None
    magic, seq, last, term, vote, commit = _BODY.unpack(body)
    if magic != _MAGIC:
        return None
    return seq, HighWater(last, term, vote, commit)


def read(path: Path) -> tuple[int, HighWater] | None:
    """(sequence, mark) of the newest valid slot; None if the file is missing or unreadable."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    best: tuple[int, HighWater] | None = None
    for i in range(2):
        got = _decode(raw[i * SLOT_SIZE : (i + 1) * SLOT_SIZE])
        if got is not None and (best is None or got[0] > best[0]):
            best = got
    return best


class HighWaterMark:
    """The open ``raft.hwm`` of one data dir.  Not thread-safe: one writer (the DB thread)."""

    def __init__(self, path: Path, fd: int, seq: int, value: HighWater) -> None:
        self.path = path
        self._fd = fd
        self._seq = seq
        self.value = value
        self.writes = 0

    @classmethod
    def create(cls, root: Path, value: HighWater) -> HighWaterMark:
        """Write a new file whole (both slots) atomically and open it."""
        path = root / HWM_NAME
        tmp = root / (HWM_NAME + ".tmp")
        data = _encode(0, value) + _encode(1, value)  # slot i holds a seq = i mod 2
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(root)
        return cls(path, os.open(path, os.O_RDWR), 1, value)

    @classmethod
    def open(cls, root: Path) -> tuple[HighWaterMark | None, HighWater | None]:
        """Open the existing mark: (handle, value), or (None, None) if there is none."""
        path = root / HWM_NAME
        got = read(path)
        if got is None:
            return None, None
        seq, value = got
        return cls(path, os.open(path, os.O_RDWR), seq, value), value

    def write(self, value: HighWater) -> None:
        """Durably replace the mark (overwrites the older slot, then ``fdatasync``)."""
        if value == self.value:
            return
        seq = self._seq + 1
        rec = _encode(seq, value)
        if os.pwrite(self._fd, rec, (seq % 2) * SLOT_SIZE) != SLOT_SIZE:
            raise OSError(f"short write to {self.path}")
        fdatasync = getattr(os, "fdatasync", os.fsync)
        fdatasync(self._fd)
        self._seq = seq
        self.value = value
        self.writes += 1

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
