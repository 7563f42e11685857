"""Snapshot file format, chunked streaming and the receiver that installs it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.errors import CorruptionError
from raftkv.raft.types import ConfState, Snapshot, SnapshotMeta
from raftkv.server.storage import SnapshotReceiver, iter_snapshot_chunks, snapfile


def snap(n: int = 10_000) -> Snapshot:
    data = bytes(range(256)) * (n // 256) + b"tail"
    return Snapshot(SnapshotMeta(42, 7, ConfState((1, 2, 3), (4,))), data)


@given(
    index=st.integers(0, 2**64 - 1),
    term=st.integers(0, 2**64 - 1),
    voters=st.lists(st.integers(1, 2**64 - 1), max_size=5),
    data=st.binary(max_size=2000),
)
@settings(max_examples=50, deadline=None)
def test_encode_decode_round_trip(index: int, term: int, voters: list[int], data: bytes) -> None:
    s = Snapshot(SnapshotMeta(index, term, ConfState(tuple(voters))), data)
    assert snapfile.decode(snapfile.encode(s)) == s


def test_every_single_byte_flip_or_truncation_is_detected() -> None:
    image = snapfile.encode(snap(300))
    for pos in range(0, len(image), 7):
        bad = bytearray(image)
        bad[pos] ^= 0x01
        with pytest.raises(CorruptionError):
            snapfile.decode(bytes(bad))
    for cut in (0, 10, snapfile.HEADER_SIZE, len(image) - 1):
        with pytest.raises(CorruptionError):
            snapfile.decode(image[:cut])


async def test_stream_chunks_into_receiver(tmp_path: Path) -> None:
    s = snap(100_000)
    src = snapfile.write_file(tmp_path / "a", s)
    recv = SnapshotReceiver(tmp_path / "b")
    n = 0
    async for chunk in iter_snapshot_chunks(src, chunk_size=4096):
        await recv.write(chunk)
        n += 1
    path, meta = await recv.finish()
    assert n == -(-src.stat().st_size // 4096)
    assert meta == s.meta
    assert path.name == src.name
    assert snapfile.read_file(path) == s
    assert [p.name for p in (tmp_path / "b").iterdir()] == [src.name]


@pytest.mark.parametrize("damage", ["truncate", "flip", "extra"])
async def test_receiver_rejects_bad_stream(tmp_path: Path, damage: str) -> None:
    image = snapfile.encode(snap(20_000))
    if damage == "truncate":
        image = image[:-100]
    elif damage == "flip":
        image = image[:5000] + bytes([image[5000] ^ 0xFF]) + image[5001:]
    else:
        image = image + b"junk"
    recv = SnapshotReceiver(tmp_path)
    with pytest.raises(CorruptionError):
        for off in range(0, len(image), 1000):
            await recv.write(image[off : off + 1000])
        await recv.finish()
    await recv.abort()
    assert list(tmp_path.iterdir()) == []  # nothing installed, temp file removed


def test_prune_keeps_newest(tmp_path: Path) -> None:
    for i in range(1, 6):
        snapfile.write_file(tmp_path, Snapshot(SnapshotMeta(i, 1), b"x"))
    snapfile.prune(tmp_path, 2, protect=None)
    assert [p.name for p in snapfile.list_files(tmp_path)] == [
        snapfile.file_name(4, 1),
        snapfile.file_name(5, 1),
    ]
