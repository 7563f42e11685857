"""Asyncio TCP transport between Raft peers, speaking :mod:`raftkv.protocol.wire` frames.

Each node dials every peer once and uses that connection only to *send*; it receives on the
connections its peers dialled to it.  ``send()`` never blocks: it appends to a per-peer queue
and a sender task per peer writes everything queued as one batch (one or a few frames, one
write), so a burst of appends or heartbeats costs one syscall.  Messages to an unreachable
peer are dropped (Raft retransmits) and ``report_unreachable(peer_id)`` is called, as in
etcd's rafthttp.

Every connection starts with a handshake; a node of another cluster or protocol version, or
one that is not a peer of this transport, is refused with a reason (logged on both sides) and
the connection closed.  The handshake must arrive whole within ``handshake_timeout`` and in a
frame of at most ``pre_handshake_max_frame`` bytes; at most ``max_inbound`` connections are
served at once (more are closed at once).  Every received message is validated before the core
sees it (:func:`raftkv.server.transport.messages.check_message`, and its sender must be the
handshaken peer, its recipient this node): a malformed, oversized or impossible frame closes that
one connection with one logged line, never the transport.  SNAP messages with large
data are streamed as ~1 MiB chunk frames and reassembled (size and CRC32 checked) before
``on_message`` sees them.  ``faults`` lets tests drop, delay or block traffic per link.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from raftkv.errors import HandshakeRefused, ProtocolError, RemoteProtocolError
from raftkv.protocol import wire
from raftkv.raft.types import LOCAL_MESSAGES, Message, MessageType, Snapshot
from raftkv.server.transport import messages

log = logging.getLogger("raftkv.server.transport")

Addr = tuple[str, int]


# --- fault injection -----------------------------------------------------------------------


@dataclass(slots=True)
class LinkFault:
    """Faults on the link to and from one peer."""

    drop: float = 0.0  # probability of dropping each message
    delay: float = 0.0  # seconds added to each outgoing message
    blocked: bool = False  # drop everything, both directions
    block_out: bool = False  # drop what we send to the peer (one-way partition)
    block_in: bool = False  # drop what we receive from the peer (one-way partition)


class Faults:
    """Per-link fault settings, consulted on every send and every receive (test hook)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.links: dict[int, LinkFault] = {}

    def _link(self, peer: int) -> LinkFault:
        return self.links.setdefault(peer, LinkFault())

    def block(self, peer: int, blocked: bool = True) -> None:
        self._link(peer).blocked = blocked

    def block_direction(self, peer: int, *, outgoing: bool = False, incoming: bool = False) -> None:
        """Cut one direction of the link (a one-way partition, as seen from this member)."""
        link = self._link(peer)
        link.block_out = link.block_out or outgoing
        link.block_in = link.block_in or incoming

    def set_drop(self, peer: int, probability: float) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError("drop probability must be in [0, 1]")
        self._link(peer).drop = probability

    def set_delay(self, peer: int, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        self._link(peer).delay = seconds

    def heal(self, peer: int | None = None) -> None:
        """Remove all faults (on one link, or everywhere)."""
        if peer is None:
            self.links.clear()
        else:
            self.links.pop(peer, None)

    def drops(self, peer: int, incoming: bool = False) -> bool:
        f = self.links.get(peer)
        if f is None:
            return False
        if f.blocked or (f.block_in if incoming else f.block_out):
            return True
        return f.drop > 0.0 and self._rng.random() < f.drop

    def delay(self, peer: int) -> float:
        f = self.links.get(peer)
        return 0.0 if f is None else f.delay


# --- the transport -------------------------------------------------------------------------


@dataclass(slots=True)
class TransportStats:
    messages_sent: int = 0
    messages_received: int = 0
    messages_dropped: int = 0
    frames_sent: int = 0
    writes: int = 0
    snapshot_chunks_sent: int = 0
    snapshot_chunks_received: int = 0
    connections: int = 0
    handshakes_refused: int = 0
    protocol_errors: int = 0
    connections_refused: int = 0
    """Inbound connections closed at once because ``max_inbound`` were already open."""


@dataclass(slots=True)
class _Peer:
    id: int
    addr: Addr
    queue: deque[Message] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    removed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    connected: bool = False


@dataclass(slots=True)
class _SnapStream:
    stream_id: int
    head: Message
    total: int
    crc32: int
    buf: bytearray = field(default_factory=bytearray)


class PeerTransport:
    """Sends and receives raft messages between the members of one cluster."""

    def __init__(
        self,
        node_id: int,
        cluster_id: int,
        listen_addr: Addr,
        peers: dict[int, Addr],
        on_message: Callable[[Message], None],
        *,
        report_unreachable: Callable[[int], None] | None = None,
        report_snapshot: Callable[[int, bool], None] | None = None,
        max_frame: int = wire.MAX_PEER_FRAME,
        max_snapshot_size: int = 1 << 34,
        snapshot_chunk_size: int = 1 << 20,
        max_queue: int = 4096,
        connect_timeout: float = 2.0,
        handshake_timeout: float = 2.0,
        pre_handshake_max_frame: int = wire.MAX_PRE_HANDSHAKE_FRAME,
        max_inbound: int = 256,
        backoff_base: float = 0.05,
        backoff_max: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if snapshot_chunk_size <= 0 or snapshot_chunk_size > max_frame // 2:
            raise ValueError("snapshot_chunk_size must be in (0, max_frame / 2]")
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.listen_addr: Addr = listen_addr
        self.on_message = on_message
        self.report_unreachable = report_unreachable
        self.report_snapshot = report_snapshot
        self.max_frame = max_frame
        self.max_snapshot_size = max_snapshot_size
        self.snapshot_chunk_size = snapshot_chunk_size
        self.max_queue = max_queue
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        """Seconds, in total, for a handshake (dialled or accepted) to complete."""
        self.pre_handshake_max_frame = pre_handshake_max_frame
        self.max_inbound = max_inbound
        """Most inbound connections served at once (handshaking or handshaken)."""
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.rng = rng or random.Random()
        self.faults = Faults(self.rng)
        self.stats = TransportStats()
        self._peers: dict[int, _Peer] = {}
        self._initial_peers = dict(peers)
        self._server: asyncio.Server | None = None
        self._inbound: set[asyncio.Task[None]] = set()
        self._inbound_from: dict[int, set[asyncio.Task[None]]] = {}
        self._stream_ids = 0
        self._running = False

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on ``listen_addr`` (port 0 picks a free port) and dial every peer."""
        host, port = self.listen_addr
        self._server = await asyncio.start_server(self._on_connect, host, port)
        sock = self._server.sockets[0].getsockname()
        self.listen_addr = (str(sock[0]), int(sock[1]))
        self._running = True
        for pid, addr in self._initial_peers.items():
            self.add_peer(pid, addr)
        log.info("node %d transport listening on %s:%d", self.node_id, *self.listen_addr)

    async def stop(self) -> None:
        """Close the listener, every connection and every sender task."""
        self._running = False
        if self._server is not None:
            self._server.close()
        tasks: list[asyncio.Task[None]] = []
        for pid in list(self._peers):
            t = self._remove(pid)
            if t is not None:
                tasks.append(t)
        tasks.extend(self._inbound)
        # asyncio.wait_for (Python 3.11) can swallow a cancellation that arrives just as what
        # it waits for completes; a task that survived one is cancelled again.
        pending = set(tasks)
        while pending:
            for t in pending:
                t.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)
        await asyncio.gather(*tasks, return_exceptions=True)  # all done: collect their ends
        if self._server is not None:
            # Server.wait_closed() also waits for every accepted connection to detach; one
            # accepted while we were shutting down would make it wait for ever (a hang seen
            # once in CI).  Give it a moment, then go.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    # --- membership ------------------------------------------------------------------------

    @property
    def peers(self) -> dict[int, Addr]:
        return {pid: p.addr for pid, p in self._peers.items()}

    def add_peer(self, peer_id: int, addr: Addr) -> None:
        """Start sending to ``peer_id`` (or re-dial it at a new address)."""
        if peer_id == self.node_id:
            raise ValueError("a node is not its own peer")
        if not self._running:
            self._initial_peers[peer_id] = addr
            return
        old = self._peers.get(peer_id)
        if old is not None:
            if old.addr == addr:
                return
            self._remove(peer_id)
        p = _Peer(peer_id, addr)
        p.task = asyncio.get_running_loop().create_task(
            self._run_peer(p), name=f"raftkv-peer-{self.node_id}->{peer_id}"
        )
        self._peers[peer_id] = p

    def remove_peer(self, peer_id: int) -> None:
        """Stop sending to ``peer_id`` and refuse its future handshakes."""
        self._initial_peers.pop(peer_id, None)
        self._remove(peer_id)
        for t in self._inbound_from.pop(peer_id, set()):
            t.cancel()

    def _remove(self, peer_id: int) -> asyncio.Task[None] | None:
        p = self._peers.pop(peer_id, None)
        if p is None:
            return None
        p.removed.set()
        p.wakeup.set()
        if p.task is not None:
            p.task.cancel()
        return p.task

    @property
    def inbound_connections(self) -> int:
        """Inbound connections open now (handshaking or handshaken); at most ``max_inbound``."""
        return len(self._inbound)

    def is_connected(self, peer_id: int) -> bool:
        p = self._peers.get(peer_id)
        return p is not None and p.connected

    # --- sending ---------------------------------------------------------------------------

    def send(self, messages: Iterable[Message]) -> None:
        """Queue ``messages`` for their peers; never blocks, never raises for a bad peer."""
        loop: asyncio.AbstractEventLoop | None = None
        for m in messages:
            p = self._peers.get(m.to)
            if p is None or self.faults.drops(m.to):
                self.stats.messages_dropped += 1
                continue
            delay = self.faults.delay(m.to)
            if delay > 0:
                loop = loop or asyncio.get_running_loop()
                loop.call_later(delay, self._enqueue, p, m)
            else:
                self._enqueue(p, m)

    def _enqueue(self, p: _Peer, m: Message) -> None:
        if p.removed.is_set():
            return
        if len(p.queue) >= self.max_queue:
            self.stats.messages_dropped += 1
            return
        p.queue.append(m)
        p.wakeup.set()

    async def _run_peer(self, p: _Peer) -> None:
        attempt = 0
        while not p.removed.is_set():
            writer: asyncio.StreamWriter | None = None
            try:
                reader, w = await asyncio.wait_for(
                    asyncio.open_connection(*p.addr), self.connect_timeout
                )
                writer = w
                await asyncio.wait_for(self._dial_handshake(reader, w), self.handshake_timeout)
                attempt = 0
                p.connected = True
                self.stats.connections += 1
                log.debug("node %d connected to peer %d at %s:%d", self.node_id, p.id, *p.addr)
                await self._pump(p, reader, w)
            except (OSError, TimeoutError, ProtocolError, EOFError) as exc:
                if isinstance(exc, HandshakeRefused):
                    self.stats.handshakes_refused += 1
                    log.warning("node %d: peer %d refused us: %s", self.node_id, p.id, exc)
                else:
                    log.debug("node %d: link to peer %d failed: %r", self.node_id, p.id, exc)
                self._fail_queue(p)
                attempt += 1
            finally:
                p.connected = False
                if writer is not None:
                    writer.close()
            if p.removed.is_set():
                break
            delay = min(self.backoff_max, self.backoff_base * (2 ** min(attempt, 30)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(p.removed.wait(), self.rng.uniform(delay / 2, delay))

    async def _dial_handshake(self, reader: asyncio.StreamReader, writer: Any) -> None:
        hello = wire.Handshake(wire.PROTOCOL_VERSION, self.cluster_id, self.node_id, "peer")
        writer.write(wire.encode_frame(hello.to_wire()))
        await writer.drain()
        dec = wire.FrameDecoder(64 * 1024)
        while True:
            data = await reader.read(64 * 1024)
            if not data:
                raise EOFError("connection closed during the handshake")
            frames = dec.feed(data)
            if frames:
                wire.check_handshake_reply(frames[0])
                return

    def _fail_queue(self, p: _Peer) -> None:
        dropped = list(p.queue)
        p.queue.clear()
        self.stats.messages_dropped += len(dropped)
        if self.report_unreachable is not None:
            self._call(self.report_unreachable, p.id)
        if self.report_snapshot is not None:
            for m in dropped:
                if m.type == MessageType.SNAP:
                    self._call(self.report_snapshot, p.id, False)

    async def _pump(
        self, p: _Peer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Peers never write on a connection we dialled: any byte or EOF means it is gone.
        dead = asyncio.ensure_future(reader.read(1))
        try:
            while True:
                if p.removed.is_set():
                    return
                if not p.queue:
                    p.wakeup.clear()  # no await since the check: no wakeup can be lost
                    wake = asyncio.ensure_future(p.wakeup.wait())
                    done, _ = await asyncio.wait({wake, dead}, return_when=asyncio.FIRST_COMPLETED)
                    if dead in done:
                        wake.cancel()
                        raise ConnectionResetError("peer closed the connection")
                    if p.removed.is_set():
                        return
                    continue
                p.wakeup.clear()
                batch = list(p.queue)
                p.queue.clear()
                snaps = 0
                try:
                    for frame in self._frames(batch):
                        writer.write(frame)
                        self.stats.frames_sent += 1
                        if writer.transport.get_write_buffer_size() > 4 * self.snapshot_chunk_size:
                            await writer.drain()
                    await writer.drain()
                except BaseException:
                    p.queue.extendleft(reversed(batch))  # _fail_queue reports and drops them
                    raise
                self.stats.writes += 1
                self.stats.messages_sent += len(batch)
                for m in batch:
                    if m.type == MessageType.SNAP:
                        snaps += 1
                if snaps and self.report_snapshot is not None:
                    for _ in range(snaps):
                        self._call(self.report_snapshot, p.id, True)
        finally:
            dead.cancel()

    def _frames(self, batch: list[Message]) -> Iterable[bytes]:
        """Encode a batch: small messages share frames, big snapshots go as chunk streams."""
        group: list[list[Any]] = []
        size = 0
        budget = self.max_frame // 2
        for m in batch:
            if m.snapshot is not None and len(m.snapshot.data) > self.snapshot_chunk_size:
                if group:
                    yield from self._encode_group(group)
                    group, size = [], 0
                self._stream_ids += 1
                crc = zlib.crc32(m.snapshot.data)
                for f in messages.snapshot_chunk_frames(
                    self._stream_ids, m, self.snapshot_chunk_size, crc
                ):
                    if f[0] == messages.FRAME_SNAP_CHUNK:
                        self.stats.snapshot_chunks_sent += 1
                    yield wire.encode_frame(f, self.max_frame)
                continue
            est = 64 + sum(e.size() for e in m.entries)
            if m.snapshot is not None:
                est += len(m.snapshot.data)
            if group and size + est > budget:
                yield from self._encode_group(group)
                group, size = [], 0
            group.append(messages.message_to_wire(m))
            size += est
        if group:
            yield from self._encode_group(group)

    def _encode_group(self, group: list[list[Any]]) -> Iterable[bytes]:
        try:
            yield wire.encode_frame([messages.FRAME_MSGS, group], self.max_frame)
        except ProtocolError as exc:
            if len(group) == 1:
                self.stats.messages_dropped += 1
                log.error("node %d: dropping a message we cannot send: %s", self.node_id, exc)
                return
            half = len(group) // 2
            yield from self._encode_group(group[:half])
            yield from self._encode_group(group[half:])

    # --- receiving -------------------------------------------------------------------------

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._running:
            # Accepted just before stop(): never start serving it (stop() could not cancel a
            # task it did not know about, and the peer would keep the connection open).
            writer.close()
            return
        peer = writer.get_extra_info("peername")
        if len(self._inbound) >= self.max_inbound:
            self.stats.connections_refused += 1
            log.warning(
                "node %d: refusing connection from %s: %d peer connections already open",
                self.node_id,
                peer,
                len(self._inbound),
            )
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._inbound.add(task)
        try:
            await self._serve(reader, writer, peer)
        except asyncio.CancelledError:
            pass
        except EOFError as exc:
            log.debug("node %d: connection from %s ended: %s", self.node_id, peer, exc)
        except (ProtocolError, TimeoutError, OSError) as exc:
            self.stats.protocol_errors += isinstance(exc, ProtocolError)
            log.warning("node %d: closing connection from %s: %s", self.node_id, peer, exc)
        finally:
            self._inbound.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Any
    ) -> None:
        # Until the handshake is done, one small frame at most: an unauthenticated connection
        # cannot make us buffer more than pre_handshake_max_frame bytes.
        dec = wire.FrameDecoder(self.pre_handshake_max_frame)
        pending: deque[Any] = deque()

        async def next_frame() -> Any:
            while not pending:
                data = await reader.read(1 << 18)
                if not data:
                    raise EOFError("peer closed the connection")
                pending.extend(dec.feed(data))
            return pending.popleft()

        async def first_frame() -> Any:
            frames: list[Any] = []
            while not frames:
                data = await reader.read(1 << 16)
                if not data:
                    raise EOFError("peer closed the connection before its handshake")
                frames = dec.feed(data, max_frames=1)
            return frames[0]

        try:
            first = await asyncio.wait_for(first_frame(), self.handshake_timeout)
        except TimeoutError:
            raise RemoteProtocolError(f"no handshake within {self.handshake_timeout:g}s") from None
        hs = wire.Handshake.from_wire(first)
        try:
            wire.check_handshake(
                hs,
                cluster_id=self.cluster_id,
                role=wire.ROLE_PEER,
                allowed_node_ids=frozenset(self._peers),
                own_node_id=self.node_id,
            )
        except HandshakeRefused as exc:
            self.stats.handshakes_refused += 1
            log.warning("node %d: refused %s (node %d): %s", self.node_id, peer, hs.node_id, exc)
            writer.write(wire.encode_frame(wire.handshake_reply(str(exc))))
            with contextlib.suppress(OSError):
                await writer.drain()
            return
        writer.write(wire.encode_frame(wire.handshake_reply()))
        await writer.drain()
        dec.max_frame = self.max_frame
        pending.extend(dec.feed(b""))
        task = asyncio.current_task()
        assert task is not None
        conns = self._inbound_from.setdefault(hs.node_id, set())
        conns.add(task)
        try:
            await self._receive(hs, next_frame)
        finally:
            conns.discard(task)

    async def _receive(self, hs: wire.Handshake, next_frame: Callable[[], Awaitable[Any]]) -> None:
        stream: _SnapStream | None = None
        while True:
            frame = await next_frame()
            kind = messages.frame_kind(frame)
            if kind == messages.FRAME_MSGS:
                if len(frame) != 2 or type(frame[1]) is not list:
                    raise RemoteProtocolError("MSGS frame: expected [kind, [message, ...]]")
                # All of the batch is checked before any of it is delivered.
                msgs = [
                    self._check(messages.message_from_wire(obj), hs.node_id) for obj in frame[1]
                ]
                for m in msgs:
                    self._deliver(m)
            elif kind == messages.FRAME_SNAP_BEGIN:
                stream = self._begin_stream(frame, hs.node_id)
            elif kind == messages.FRAME_SNAP_CHUNK:
                self._chunk(stream, frame)
            else:
                self._deliver(self._end_stream(stream, frame))
                stream = None

    def _check(self, m: Message, frm: int) -> Message:
        """Refuse a message no correct peer sends (the connection is then closed)."""
        if m.type in LOCAL_MESSAGES:
            raise RemoteProtocolError(f"local message type {m.type.name} sent over the network")
        if m.frm != frm or m.to != self.node_id:
            raise RemoteProtocolError(
                f"message {m.frm}->{m.to} on the connection of node {frm} to node {self.node_id}"
            )
        if frm not in self._peers:
            raise RemoteProtocolError(f"message from node {frm}, which is not a peer")
        messages.check_message(m)
        return m

    def _begin_stream(self, frame: list[Any], frm: int) -> _SnapStream:
        if len(frame) != 5:
            raise RemoteProtocolError("SNAP_BEGIN frame: expected 5 fields")
        _, sid, head, total, crc = frame
        m = self._check(messages.message_from_wire(head), frm)
        if m.type != MessageType.SNAP or m.snapshot is None:
            raise RemoteProtocolError("SNAP_BEGIN frame: not a snapshot message")
        for name, v in (("stream id", sid), ("size", total), ("crc32", crc)):
            if type(v) is not int or v < 0:
                raise RemoteProtocolError(f"SNAP_BEGIN frame: bad {name} {v!r}")
        if total > self.max_snapshot_size:
            raise RemoteProtocolError(
                f"snapshot of {total} bytes exceeds the limit of {self.max_snapshot_size}"
            )
        return _SnapStream(sid, m, total, crc)

    def _chunk(self, stream: _SnapStream | None, frame: list[Any]) -> None:
        if stream is None or len(frame) != 4 or frame[1] != stream.stream_id:
            raise RemoteProtocolError("SNAP_CHUNK frame outside its stream")
        _, _, offset, data = frame
        if type(data) is not bytes or offset != len(stream.buf):
            raise RemoteProtocolError(f"SNAP_CHUNK frame: bad offset {offset!r} or data")
        if len(stream.buf) + len(data) > stream.total:
            raise RemoteProtocolError(f"snapshot stream longer than the {stream.total} announced")
        stream.buf += data
        self.stats.snapshot_chunks_received += 1

    def _end_stream(self, stream: _SnapStream | None, frame: list[Any]) -> Message:
        if stream is None or frame != [messages.FRAME_SNAP_END, stream.stream_id]:
            raise RemoteProtocolError("SNAP_END frame outside its stream")
        if len(stream.buf) != stream.total:
            raise RemoteProtocolError(
                f"snapshot stream ended at {len(stream.buf)} of {stream.total} bytes"
            )
        if zlib.crc32(stream.buf) != stream.crc32:
            raise RemoteProtocolError("snapshot stream: CRC32 mismatch")
        head = stream.head
        assert head.snapshot is not None
        return replace(head, snapshot=Snapshot(head.snapshot.meta, bytes(stream.buf)))

    def _deliver(self, m: Message) -> None:
        if self.faults.drops(m.frm, incoming=True):
            self.stats.messages_dropped += 1
            return
        self.stats.messages_received += 1
        self._call(self.on_message, m)

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # a callback bug must not kill the connection or the transport
            log.exception("node %d: transport callback %r failed", self.node_id, fn)
