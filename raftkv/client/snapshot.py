"""Receiving a snapshot stream into a file (``Client.snapshot_save``): one member, one
attempt within the budget; the file appears only once it is complete, checked and fsynced."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from pathlib import Path

from raftkv.api import SnapshotChunk, SnapshotRequest
from raftkv.client.connection import END, Stream
from raftkv.client.router import READ, Router
from raftkv.client.values import SnapshotInfo
from raftkv.errors import ConnectionLost, RemoteProtocolError, Timeout
from raftkv.protocol import codec
from raftkv.protocol.methods import Method

__all__ = ["fsync_dir", "receive_snapshot", "save_snapshot"]


async def save_snapshot(router: Router, dest: Path, budget: float) -> SnapshotInfo:
    """Stream a snapshot of one member's state into ``dest`` within ``budget`` seconds:
    written to ``dest.part``, checked against the server's SHA-256, fsynced, then renamed."""
    tmp = dest.with_name(dest.name + ".part")
    try:
        async with asyncio.timeout(budget):
            addr = router.pick(READ)
            conn = await router.connect(addr, min(router.config.timeouts.dial, budget))
            stream = conn.open_stream(Method.SNAPSHOT, codec.to_plain(SnapshotRequest()))
            try:
                info = await receive_snapshot(stream, tmp)
            finally:
                stream.cancel()
    except TimeoutError:
        tmp.unlink(missing_ok=True)
        raise Timeout(f"snapshot not received within {budget:g}s") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dest)
    fsync_dir(dest.parent)
    return SnapshotInfo(dest, info[0], info[1], info[2], info[3])


async def receive_snapshot(stream: Stream, tmp: Path) -> tuple[int, str, int, int]:
    """Write the stream's chunks to ``tmp`` (fsynced) and check them against the trailer's
    SHA-256; returns ``(size, sha256, revision, index)``."""
    digest = hashlib.sha256()
    size = 0
    trailer: SnapshotChunk | None = None
    with open(tmp, "wb") as f:
        while True:
            item = await stream.next()
            if item is END:
                break
            chunk = codec.from_plain(SnapshotChunk, item)
            if chunk.sha256:
                trailer = chunk
                continue
            f.write(chunk.data)
            digest.update(chunk.data)
            size += len(chunk.data)
        f.flush()
        os.fsync(f.fileno())
    if trailer is None:
        raise ConnectionLost("snapshot stream ended without its checksum")
    if trailer.sha256 != digest.hexdigest():
        raise RemoteProtocolError("snapshot checksum mismatch: the file is corrupt")
    return size, digest.hexdigest(), trailer.revision, trailer.index


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
