"""Client-port connection limits: a total handshake deadline, a small pre-handshake frame
limit, a connection cap and an idle timeout, each with exactly one log line, no traceback.

Each test runs one real member on 127.0.0.1 and sets small limits on its server (the limits
are read per connection); the server closing a connection is waited on, never slept for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import raftkv
from raftkv.api import PutRequest
from raftkv.protocol import wire
from raftkv.protocol.methods import split_addr
from raftkv.server.native import Server
from raftkv.testing import LocalCluster, LocalMember


@pytest.fixture
async def member(tmp_path: Path) -> AsyncIterator[LocalMember]:
    async with LocalCluster(1, tmp_path) as cluster:
        m = next(iter(cluster.members.values()))
        assert m.server is not None and m.node is not None
        yield m


def server_of(m: LocalMember) -> Server:
    assert m.server is not None
    return m.server


async def dial(m: LocalMember) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*split_addr(m.client_addr))


HELLO = wire.encode_frame(wire.Handshake(wire.PROTOCOL_VERSION, 0, 0, "client").to_wire())


async def handshake(m: LocalMember) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await dial(m)
    w.write(HELLO)
    dec = wire.FrameDecoder()
    async with asyncio.timeout(5):
        frames: list[Any] = []
        while not frames:
            data = await r.read(1 << 16)
            assert data, "closed during the handshake"
            frames = dec.feed(data)
    wire.check_handshake_reply(frames[0])
    return r, w


async def closed_by_server(r: asyncio.StreamReader, timeout: float = 5.0) -> None:
    """Return once the server has closed the connection (EOF or reset)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                if not await r.read(1 << 16):
                    return
            except ConnectionError:
                return


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition of the server side, which no event signals."""
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.01)


def warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "raftkv.server.native"
        and r.levelno == logging.WARNING
        and text in r.getMessage()
    ]


def one_line(caplog: pytest.LogCaptureFixture, text: str) -> None:
    lines = warnings(caplog, text)
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert lines[0].exc_info is None and "Traceback" not in caplog.text


async def works(m: LocalMember, value: bytes = b"v") -> None:
    async with raftkv.Client([m.client_addr], keepalive_interval=None) as c:
        await c.put(b"k", value)
        assert (await c.get(b"k")).kvs[0].value == value


async def test_slow_loris_handshake_is_closed_at_the_total_deadline(
    member: LocalMember, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="raftkv.server.native")
    server_of(member).handshake_timeout = 0.5
    r, w = await dial(member)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def trickle() -> None:  # the attack: a byte every 0.2 s, each read well in time
        for i in range(len(HELLO) - 1):
            w.write(HELLO[i : i + 1])
            await asyncio.sleep(0.2)

    sender = asyncio.create_task(trickle())
    try:
        await closed_by_server(r)
    finally:
        sender.cancel()
        w.close()
    elapsed = loop.time() - started
    assert len(HELLO) - 1 > 20  # the whole trickle would take over 4 s
    assert 0.4 < elapsed < 3.0
    one_line(caplog, "no handshake within 0.5s")
    assert server_of(member).connections_timed_out == 1
    await works(member)


async def test_oversized_frame_before_the_handshake_is_refused(
    member: LocalMember, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="raftkv.server.native")
    r, w = await dial(member)
    w.write((4 * 1024 * 1024 - 1).to_bytes(4, "big") + b"x" * 1000)  # an unfinished 4 MiB frame
    await closed_by_server(r)
    w.close()
    one_line(caplog, "exceeds the limit of 65536")
    # After a handshake the full limit applies: a 512 KiB value goes through.
    await works(member, b"y" * (512 * 1024))


async def test_cap_refuses_the_extra_connection_and_serves_again_after(
    member: LocalMember, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="raftkv.server.native")
    server = server_of(member)
    server.max_connections = 3
    held = [await handshake(member), await dial(member), await dial(member)]
    await until(lambda: len(server._conns) == 3)
    r, w = await dial(member)
    await closed_by_server(r)
    w.close()
    assert server.connections_refused == 1
    one_line(caplog, "refusing client connection")
    assert "3 connections already open" in warnings(caplog, "refusing")[0].getMessage()
    # The held connections are untouched: the handshaken one is still served.
    hr, hw = held[0]
    hw.write(wire.encode_frame([1, "status", None]))
    dec = wire.FrameDecoder()
    async with asyncio.timeout(5):
        frames: list[Any] = []
        while not frames:
            frames = dec.feed(await hr.read(1 << 16))
    assert frames[0][0] == 1 and frames[0][1] == 0
    for _, hw2 in held:
        hw2.close()
    await until(lambda: len(server._conns) == 0)
    await works(member)


async def test_idle_connection_closed_but_an_open_watch_never(
    member: LocalMember, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="raftkv.server.native")
    assert member.node is not None
    server_of(member).idle_timeout = 0.4
    wr, ww = await handshake(member)
    ww.write(wire.encode_frame([1, "watch", {"key": b"watched"}]))
    dec = wire.FrameDecoder()
    async with asyncio.timeout(5):
        frames: list[Any] = []
        while not frames:
            frames = dec.feed(await wr.read(1 << 16))
    assert frames[0][0] == 1 and frames[0][2].get("created")
    # Two idle connections in turn, each closed after its idle timeout: the watch's connection,
    # opened before both and quiet since, has then been idle for over two idle timeouts.
    for _ in range(2):
        r, w = await handshake(member)
        await closed_by_server(r)
        w.close()
    assert len(warnings(caplog, "closing idle client connection")) == 2
    assert all(rec.exc_info is None for rec in caplog.records)
    # The watch is still open, and delivers.
    res = await member.node.propose(PutRequest(b"watched", b"1"))
    assert res.error is None
    async with asyncio.timeout(5):
        events: list[Any] = []
        while not events:
            data = await wr.read(1 << 16)
            assert data, "the watch connection was closed"
            events = [f for f in dec.feed(data) if f[0] == 1 and f[2].get("events")]
    assert "watched" in repr(events[0][2]["events"])
    ww.close()


async def test_idle_timeout_zero_never_closes(member: LocalMember) -> None:
    server = server_of(member)
    server.idle_timeout = 0.0
    r, w = await handshake(member)
    # A second connection that completes a request: the first, idle, is still open after it.
    await works(member)
    w.write(wire.encode_frame([1, "status", None]))
    dec = wire.FrameDecoder()
    async with asyncio.timeout(5):
        frames: list[Any] = []
        while not frames:
            data = await r.read(1 << 16)
            assert data
            frames = dec.feed(data)
    assert frames[0][1] == 0
    w.close()


async def test_limits_come_from_the_node_config_and_are_validated(tmp_path: Path) -> None:
    async with LocalCluster(
        1, tmp_path, max_client_connections=7, client_idle_timeout=0, max_peer_connections=5
    ) as cluster:
        m = next(iter(cluster.members.values()))
        assert m.node is not None and m.node.transport is not None
        server = server_of(m)
        assert (server.max_connections, server.idle_timeout, server.handshake_timeout) == (
            7,
            0,
            10.0,
        )
        assert m.node.transport.inner.max_inbound == 5  # type: ignore[attr-defined]
        for kw in ({"max_connections": 0}, {"handshake_timeout": 0}, {"idle_timeout": -1}):
            with pytest.raises(ValueError):
                Server(m.node, "127.0.0.1:0", **kw)


def test_serve_has_the_connection_flags_and_refuses_bad_values(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from raftkv_cli.serve import serve

    runner = CliRunner()
    help_text = runner.invoke(serve, ["--help"]).output
    assert "--max-client-connections" in help_text and "--client-idle-timeout" in help_text
    base = [
        "--name=n1",
        f"--data-dir={tmp_path / 'd'}",
        "--listen-client=127.0.0.1:1",
        "--listen-peer=127.0.0.1:2",
        "--initial-cluster=n1=127.0.0.1:2",
    ]
    for bad in ("--max-client-connections=0", "--client-idle-timeout=-1"):
        res = runner.invoke(serve, [*base, bad])
        assert res.exit_code == 2 and "--max-client-connections must be" in res.output


async def test_client_reconnects_after_its_idle_connection_is_closed(member: LocalMember) -> None:
    server = server_of(member)
    server.idle_timeout = 0.3
    async with raftkv.Client([member.client_addr], keepalive_interval=None) as c:
        await c.put(b"a", b"1")
        await until(lambda: len(server._conns) == 0)  # closed as idle
        await c.put(b"b", b"2")
        assert (await c.get(b"b")).kvs[0].value == b"2"
    assert server.connections_timed_out >= 1
