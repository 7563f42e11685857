"""Snapshot files: a checksummed header + conf state + data, written atomically.

Layout (all integers big-endian)::

    offset size  field
    0      8     magic  b"RKVSNAP\\0"
    8      2     format version (1)
    10     2     reserved (0)
    12     8     index
    20     8     term
    28     4     conf_len   length of the msgpack conf state [voters, learners]
    32     8     data_len
    40     32    SHA-256 of bytes [0, 40) + conf + data
    72     ...   conf (conf_len bytes), then data (data_len bytes)

A file is written to ``.tmp-*`` in the same directory, fsynced, renamed to
``<index:016x>-<term:016x>.snap`` and the directory fsynced, so a crash leaves either the old
set of files or the new one (plus a stray temp file, removed on the next open).  Reading
checks magic, version, exact length and the digest: a torn or corrupt file raises
:class:`CorruptionError` and is never loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import msgpack

from raftkv.errors import CorruptionError
from raftkv.raft.types import ConfState, Snapshot, SnapshotMeta
from raftkv.server.storage import failpoints

MAGIC: Final = b"RKVSNAP\x00"
VERSION: Final = 1
_FIXED = struct.Struct(">8sHHQQIQ")
HEADER_SIZE: Final = _FIXED.size + 32
SUFFIX: Final = ".snap"
TMP_PREFIX: Final = ".tmp-"


def file_name(index: int, term: int) -> str:
    return f"{index:016x}-{term:016x}{SUFFIX}"


def _encode_conf(cs: ConfState) -> bytes:
    out: bytes = msgpack.packb([list(cs.voters), list(cs.learners)], use_bin_type=True)
    return out


def _decode_conf(raw: bytes, where: str) -> ConfState:
    try:
        obj: Any = msgpack.unpackb(raw)
        voters, learners = obj
        if not all(type(i) is int and i >= 0 for i in [*voters, *learners]):
            raise ValueError("node ids must be unsigned ints")
        return ConfState(tuple(voters), tuple(learners))
    except Exception as exc:
        raise CorruptionError(f"snapshot {where}: bad conf state: {exc}") from exc


def encode_header(meta: SnapshotMeta, conf: bytes, data_len: int, digest: bytes) -> bytes:
    return _fixed(meta, len(conf), data_len) + digest


def _fixed(meta: SnapshotMeta, conf_len: int, data_len: int) -> bytes:
    return _FIXED.pack(MAGIC, VERSION, 0, meta.index, meta.term, conf_len, data_len)


def _digest(fixed: bytes, conf: bytes, data: bytes | memoryview) -> bytes:
    h = hashlib.sha256(fixed)
    h.update(conf)
    h.update(data)
    return h.digest()


def encode(snap: Snapshot) -> bytes:
    """The whole file image of ``snap`` (header, conf, data)."""
    conf = _encode_conf(snap.meta.conf_state)
    fixed = _fixed(snap.meta, len(conf), len(snap.data))
    return fixed + _digest(fixed, conf, snap.data) + conf + snap.data


class _Header:
    __slots__ = ("conf_len", "data_len", "digest", "fixed", "index", "term")

    def __init__(self, raw: bytes, where: str) -> None:
        if len(raw) < HEADER_SIZE:
            raise CorruptionError(f"snapshot {where}: truncated header ({len(raw)} bytes)")
        magic, version, _, index, term, conf_len, data_len = _FIXED.unpack_from(raw)
        if magic != MAGIC:
            raise CorruptionError(f"snapshot {where}: bad magic {magic!r}")
        if version != VERSION:
            raise CorruptionError(f"snapshot {where}: unsupported format version {version}")
        self.fixed = bytes(raw[: _FIXED.size])
        self.digest = bytes(raw[_FIXED.size : HEADER_SIZE])
        self.index: int = index
        self.term: int = term
        self.conf_len: int = conf_len
        self.data_len: int = data_len

    @property
    def total(self) -> int:
        return HEADER_SIZE + self.conf_len + self.data_len


def decode(raw: bytes, where: str = "<memory>") -> Snapshot:
    """Parse and verify a file image; :class:`CorruptionError` on any mismatch."""
    h = _Header(raw, where)
    if len(raw) != h.total:
        raise CorruptionError(
            f"snapshot {where}: size {len(raw)} != {h.total} announced by the header "
            f"(torn or truncated file)"
        )
    view = memoryview(raw)
    conf = bytes(view[HEADER_SIZE : HEADER_SIZE + h.conf_len])
    data = view[HEADER_SIZE + h.conf_len :]
    if _digest(h.fixed, conf, data) != h.digest:
        raise CorruptionError(f"snapshot {where}: SHA-256 mismatch (corrupt file)")
    meta = SnapshotMeta(h.index, h.term, _decode_conf(conf, where))
    return Snapshot(meta, bytes(data))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(snap_dir: Path, snap: Snapshot) -> Path:
    """Write ``snap`` atomically into ``snap_dir`` (blocking: run it in a thread)."""
    snap_dir.mkdir(parents=True, exist_ok=True)
    final = snap_dir / file_name(snap.meta.index, snap.meta.term)
    tmp = snap_dir / f"{TMP_PREFIX}{final.name}.{os.getpid()}"
    image = encode(snap)
    try:
        with open(tmp, "wb") as f:
            f.write(image)
            f.flush()
            os.fsync(f.fileno())
        failpoints.hit("snapshot_write")
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(snap_dir)
    return final


def read_file(path: Path) -> Snapshot:
    """Read and verify one snapshot file (blocking: run it in a thread)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise CorruptionError(f"snapshot {path}: file is missing") from exc
    return decode(raw, str(path))


def list_files(snap_dir: Path) -> list[Path]:
    """Snapshot files in ``snap_dir``, oldest (lowest index) first."""
    if not snap_dir.is_dir():
        return []
    return sorted(p for p in snap_dir.iterdir() if p.name.endswith(SUFFIX) and p.is_file())


def prune(snap_dir: Path, keep: int, protect: str | None) -> list[Path]:
    """Delete all but the newest ``keep`` snapshot files (never ``protect``) and temp files."""
    removed: list[Path] = []
    if not snap_dir.is_dir():
        return removed
    for p in snap_dir.iterdir():
        if p.name.startswith(TMP_PREFIX):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    files = list_files(snap_dir)
    for p in files[: max(0, len(files) - keep)]:
        if p.name != protect:
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    if removed:
        fsync_dir(snap_dir)
    return removed


async def iter_snapshot_chunks(path: Path | str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
    """Yield the raw bytes of a snapshot file in ``chunk_size`` pieces, reading off the loop."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    f = await asyncio.to_thread(open, path, "rb")
    try:
        while True:
            chunk = await asyncio.to_thread(f.read, chunk_size)
            if not chunk:
                return
            yield chunk
    finally:
        await asyncio.to_thread(f.close)


class SnapshotReceiver:
    """Receives a snapshot file in chunks, verifies it, and installs it atomically.

    ``write()`` each chunk in order, then ``finish()``: it checks the exact size and the
    SHA-256 and renames the temp file into ``snap_dir``; on any mismatch it removes the temp
    file and raises :class:`CorruptionError`.  ``abort()`` drops a half-received file.
    """

    def __init__(self, snap_dir: Path | str) -> None:
        self.snap_dir = Path(snap_dir)
        self._tmp = self.snap_dir / f"{TMP_PREFIX}recv-{os.getpid()}-{id(self):x}"
        self._f: Any = None
        self._head = bytearray()
        self._header: _Header | None = None
        self._hash: Any = None
        self._received = 0
        self._conf = bytearray()

    async def write(self, chunk: bytes) -> None:
        if self._f is None:
            self.snap_dir.mkdir(parents=True, exist_ok=True)
            self._f = await asyncio.to_thread(open, self._tmp, "wb")
        self._feed_hash(chunk)
        await asyncio.to_thread(self._f.write, chunk)

    def _feed_hash(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        if self._header is None:
            need = HEADER_SIZE - len(self._head)
            self._head += view[:need]
            view = view[need:]
            if len(self._head) < HEADER_SIZE:
                return
            self._header = _Header(bytes(self._head), f"stream to {self._tmp.name}")
            self._hash = hashlib.sha256(self._header.fixed)
        if len(self._conf) < self._header.conf_len:
            take = self._header.conf_len - len(self._conf)
            self._conf += view[:take]
        self._received += len(view)
        if self._received > self._header.conf_len + self._header.data_len:
            raise CorruptionError(
                f"snapshot stream: more bytes than the {self._header.total} announced"
            )
        self._hash.update(view)

    async def finish(self) -> tuple[Path, SnapshotMeta]:
        try:
            h = self._header
            if h is None or self._f is None:
                raise CorruptionError("snapshot stream: ended before a complete header")
            got = HEADER_SIZE + self._received
            if got != h.total:
                raise CorruptionError(
                    f"snapshot stream: received {got} bytes, header announced {h.total}"
                )
            if self._hash.digest() != h.digest:
                raise CorruptionError("snapshot stream: SHA-256 mismatch")
            meta = SnapshotMeta(h.index, h.term, _decode_conf(bytes(self._conf), "stream"))
            f = self._f
            await asyncio.to_thread(_flush_sync_close, f)
            self._f = None
            failpoints.hit("snapshot_install")
            final = self.snap_dir / file_name(h.index, h.term)
            await asyncio.to_thread(os.replace, self._tmp, final)
            await asyncio.to_thread(fsync_dir, self.snap_dir)
            return final, meta
        except BaseException:
            await self.abort()
            raise

    async def abort(self) -> None:
        if self._f is not None:
            f, self._f = self._f, None
            await asyncio.to_thread(f.close)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self._tmp.unlink)


def _flush_sync_close(f: Any) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()
