"""Watch semantics against a real in-process cluster, through the client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from raftkv import Client
from raftkv.api import EventType
from raftkv.client import WatchFilter
from raftkv.errors import Compacted, WatchCancelled
from raftkv.testing import LocalCluster


async def _collect(w: object, n: int, timeout: float = 10.0) -> list[object]:
    out: list[object] = []

    async def run() -> None:
        async for resp in w:  # type: ignore[attr-defined]
            out.append(resp)
            if len(out) >= n:
                return

    await asyncio.wait_for(run(), timeout)
    return out


async def test_history_replay_prev_kv_filters_and_one_response_per_revision(
    tmp_path: Path,
) -> None:
    async with LocalCluster(3, tmp_path) as cluster, Client(cluster.endpoints) as c:
        r1 = await c.put(b"a/1", b"x")
        await c.put(b"a/1", b"y")
        await c.put(b"b/1", b"other")
        await c.delete(b"a/1")
        # One txn writing two keys = one revision = one response with both events.
        from raftkv.api import PutRequest

        await c.txn([], [PutRequest(b"a/2", b"p"), PutRequest(b"a/3", b"q")], [])
        w = c.watch(b"a/", prefix=True, start_revision=r1.header.revision, prev_kv=True)
        got = await _collect(w, 4)
        w.cancel()
        kinds = [[(e.type, e.kv.key) for e in r.events] for r in got]  # type: ignore[attr-defined]
        assert kinds == [
            [(EventType.PUT, b"a/1")],
            [(EventType.PUT, b"a/1")],
            [(EventType.DELETE, b"a/1")],
            [(EventType.PUT, b"a/2"), (EventType.PUT, b"a/3")],
        ]
        second = got[1].events[0]  # type: ignore[attr-defined]
        assert second.prev_kv is not None and second.prev_kv.value == b"x"
        assert second.kv.version == 2 and got[0].events[0].kv.version == 1  # type: ignore[attr-defined]
        nodel = c.watch(b"a/", prefix=True, start_revision=1, filters=[WatchFilter.NODELETE])
        only_puts = await _collect(nodel, 3)
        nodel.cancel()
        assert all(e.type == EventType.PUT for r in only_puts for e in r.events)  # type: ignore[attr-defined]


async def test_live_events_then_cancel(tmp_path: Path) -> None:
    async with LocalCluster(3, tmp_path) as cluster, Client(cluster.endpoints) as c:
        w = c.watch(b"live", prefix=True)
        await w.start()

        async def writer() -> None:
            for i in range(5):
                await c.put(b"live/%d" % i, b"v")

        task = asyncio.create_task(writer())
        got = await _collect(w, 5)
        await task
        revs = [r.revision for r in got]  # type: ignore[attr-defined]
        assert revs == sorted(revs) and len(set(revs)) == 5
        w.cancel()


async def test_compacted_start_revision_cancels_the_watch(tmp_path: Path) -> None:
    async with LocalCluster(3, tmp_path) as cluster, Client(cluster.endpoints) as c:
        for i in range(10):
            await c.put(b"k", b"%d" % i)
        await c.compact(8)
        w = c.watch(b"k", start_revision=3)
        with pytest.raises((WatchCancelled, Compacted)) as exc:
            await _collect(w, 1)
        err = exc.value
        assert getattr(err, "compact_revision", getattr(err, "revision", 0)) == 8


async def test_progress_notifications_carry_the_current_revision(tmp_path: Path) -> None:
    async with LocalCluster(3, tmp_path) as cluster, Client(cluster.endpoints) as c:
        await c.put(b"other", b"1")
        leader = await cluster.wait_leader()
        for m in cluster.members.values():
            if m.server is not None:
                m.server.hub_progress_interval = 0.2
        assert leader.node is not None
        w = c.watch(b"quiet", progress_notify=True)
        got = await _collect(w, 1, timeout=15.0)
        w.cancel()
        assert got[0].progress and got[0].revision >= 2  # type: ignore[attr-defined]


async def test_slow_watcher_is_bounded_and_catches_up_from_history(tmp_path: Path) -> None:
    """A watcher that does not read must not grow server memory without bound, and when it
    reads again it gets every revision once, in order (found by jepsen_like: the revisions
    queued when the buffer overflowed used to be skipped)."""
    from raftkv.protocol import codec, wire
    from raftkv.protocol.methods import split_addr

    async with LocalCluster(3, tmp_path) as cluster, Client(cluster.endpoints) as c:
        m = next(iter(cluster.members.values()))
        assert m.server is not None
        m.server.hub.max_pending = 8
        host, port = split_addr(m.client_addr)
        reader, writer = await asyncio.open_connection(host, port)
        hs = wire.Handshake(wire.PROTOCOL_VERSION, 0, 0, "client")
        writer.write(wire.encode_frame(hs.to_wire()))
        dec = wire.FrameDecoder(64 << 20)
        hello: list[object] = []
        while not hello:
            hello = dec.feed(await asyncio.wait_for(reader.read(1 << 16), 5.0))
        wire.check_handshake_reply(hello[0])
        writer.write(wire.encode_frame([1, "watch", {"key": b"s/", "range_end": b"s0"}]))
        await writer.drain()
        start = (await c.get(b"nothing")).header.revision
        for i in range(400):  # ~10 MB: more than the socket buffers hold
            await c.put(b"s/%03d" % i, b"x" * 25_000)
        hub = m.server.hub
        assert hub.cancelled_slow >= 1, "the unread watcher should have overflowed"
        assert all(w.queue.qsize() <= 8 for w in hub.watchers)
        revs: list[int] = []
        while len(revs) < 400:
            for frame in dec.feed(await asyncio.wait_for(reader.read(1 << 20), 10.0)):
                if isinstance(frame, list) and len(frame) == 3 and frame[0] == 1:
                    item = frame[2]
                    if isinstance(item, dict) and item.get("events"):
                        evs = item["events"]
                        revs.extend(codec.from_plain_any(e).kv.mod_revision for e in evs)
        writer.close()
        assert revs == list(range(start + 1, start + 401))
