"""One multiplexed connection to one endpoint (:class:`ClientConnection`): dial and
handshake, then requests multiplexed by ``req_id`` on one TCP stream of msgpack frames
(:mod:`raftkv.protocol.wire`); a reader task hands each reply to its future (unary calls)
or its :class:`Stream` (watch and snapshot streams).  Losing the connection fails every
call and stream waiting on it with :class:`~raftkv.errors.ConnectionLost`."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any, Final

from raftkv.errors import (
    ConnectionLost,
    FrameTooLarge,
    HandshakeRefused,
    InvalidArgument,
    LocalProtocolError,
    RaftKVError,
    RemoteProtocolError,
    RequestTooLarge,
)
from raftkv.protocol import codec, wire
from raftkv.protocol.methods import Method, Reply, split_addr

__all__ = ["END", "ClientConnection", "Stream"]

END: Final = object()
"""What :meth:`Stream.next` returns when the stream ended cleanly."""


class Stream:
    """The receiving end of one stream (``req_id``) on a connection."""

    __slots__ = ("conn", "queue", "req_id")

    def __init__(self, conn: ClientConnection, req_id: int) -> None:
        self.conn = conn
        self.req_id = req_id
        # items: (kind, payload); kind END carries None or a RaftKVError
        self.queue: asyncio.Queue[tuple[Reply, Any]] = asyncio.Queue()

    async def next(self) -> Any:
        """The next stream item; ``END`` when the stream ended cleanly; raises its error."""
        kind, payload = await self.queue.get()
        if kind == Reply.STREAM:
            return payload
        if isinstance(payload, RaftKVError):
            raise payload
        return END

    def cancel(self) -> None:
        """Stop the stream (the server is told)."""
        self.conn.cancel(self.req_id)


class ClientConnection:
    """One TCP connection to one endpoint, after the handshake."""

    def __init__(
        self,
        addr: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        decoder: wire.FrameDecoder,
        leftover: list[Any],
    ) -> None:
        self.addr = addr
        self._reader = reader
        self._writer = writer
        self._decoder = decoder
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._streams: dict[int, Stream] = {}
        self.error: ConnectionLost | None = None
        self.last_seen = asyncio.get_running_loop().time()
        """When the server last sent us anything (the keep-alive probes quiet connections)."""
        for frame in leftover:
            self._dispatch(frame)
        self._task = asyncio.create_task(self._read_loop(), name=f"raftkv-client-{addr}")

    @classmethod
    async def open(
        cls, addr: str, timeout: float, cluster_id: int, max_frame: int, *, node_id: int = 0
    ) -> ClientConnection:
        """Dial and handshake.  ConnectionLost if unreachable; HandshakeRefused if refused.
        ``node_id``: the member that dials, when a member forwards a call (0: a client)."""
        try:
            host, port = split_addr(addr)
        except ValueError as e:
            raise InvalidArgument(str(e)) from None
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port)
                hello = wire.Handshake(wire.PROTOCOL_VERSION, cluster_id, node_id, wire.ROLE_CLIENT)
                writer.write(wire.encode_frame(hello.to_wire()))
                decoder = wire.FrameDecoder(max_frame)
                frames: list[Any] = []
                while not frames:
                    data = await reader.read(1 << 16)
                    if not data:
                        raise ConnectionLost(f"{addr} closed the connection during the handshake")
                    frames = decoder.feed(data)
                wire.check_handshake_reply(frames[0])
        except HandshakeRefused:
            _close_writer(writer)
            raise
        except TimeoutError:
            _close_writer(writer)
            raise ConnectionLost(f"cannot connect to {addr}: no answer in {timeout:g}s") from None
        except OSError as e:
            _close_writer(writer)
            raise ConnectionLost(f"cannot connect to {addr}: {e.strerror or e}") from None
        except (RemoteProtocolError, FrameTooLarge) as e:
            _close_writer(writer)
            raise ConnectionLost(f"{addr} does not speak the raftkv protocol: {e}") from None
        except BaseException:
            _close_writer(writer)
            raise
        return cls(addr, reader, writer, decoder, frames[1:])

    @property
    def alive(self) -> bool:
        """False once the connection was lost or closed."""
        return self.error is None

    def _send(self, frame: list[Any]) -> None:
        if self.error is not None:
            raise self.error
        try:
            data = wire.encode_frame(frame, wire.MAX_CLIENT_FRAME)
        except FrameTooLarge as e:
            raise RequestTooLarge(str(e)) from None
        except LocalProtocolError as e:
            raise InvalidArgument(str(e)) from None
        self._writer.write(data)

    async def call(self, method: Method, payload: Any) -> Any:
        """Send one request and wait for its answer (the server's error is raised)."""
        req_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._send([req_id, str(method), payload])
        self._pending[req_id] = fut
        try:
            if self._writer.transport.get_write_buffer_size() > (1 << 20):
                await self._writer.drain()
            return await fut
        except asyncio.CancelledError:
            if self._pending.get(req_id) is fut:
                self.cancel(req_id)
            raise
        except ConnectionError as e:  # from drain()
            raise self.lost(f"connection to {self.addr} lost: {e}") from None
        finally:
            self._pending.pop(req_id, None)

    def open_stream(self, method: Method, payload: Any) -> Stream:
        """Send a streaming request; its items arrive on the returned :class:`Stream`."""
        req_id = next(self._ids)
        stream = Stream(self, req_id)
        self._send([req_id, str(method), payload])
        self._streams[req_id] = stream
        return stream

    def cancel(self, req_id: int) -> None:
        """Ask the server to stop ``req_id`` (a stream, or a unary call we gave up on)."""
        known = self._streams.pop(req_id, None) is not None or req_id in self._pending
        if known and self.error is None:
            with contextlib.suppress(RaftKVError, RuntimeError):
                self._send([req_id, str(Method.CANCEL), None])

    async def _read_loop(self) -> None:
        reason = f"{self.addr} closed the connection"
        try:
            while True:
                data = await self._reader.read(1 << 16)
                if not data:
                    break
                self.last_seen = asyncio.get_running_loop().time()
                for frame in self._decoder.feed(data):
                    self._dispatch(frame)
        except (RemoteProtocolError, FrameTooLarge) as e:
            reason = f"protocol error from {self.addr}: {e}"
        except (ConnectionError, OSError) as e:
            reason = f"connection to {self.addr} lost: {e}"
        except asyncio.CancelledError:
            reason = "client closed"
        self.lost(reason)

    def _dispatch(self, frame: Any) -> None:
        if (
            not isinstance(frame, list)
            or len(frame) != 3
            or not isinstance(frame[0], int)
            or frame[1] not in (0, 1, 2, 3)
        ):
            raise RemoteProtocolError(f"bad reply frame {frame!r:.80}")
        req_id, kind, payload = frame
        kind = Reply(kind)
        if kind in (Reply.OK, Reply.ERROR):
            fut = self._pending.pop(req_id, None)
            if fut is None or fut.done():
                return  # a call we gave up on
            if kind == Reply.OK:
                fut.set_result(payload)
            else:
                fut.set_exception(_decode_error(payload))
            return
        stream = self._streams.get(req_id)
        if stream is None:
            return  # cancelled
        if kind == Reply.STREAM:
            stream.queue.put_nowait((kind, payload))
        else:
            del self._streams[req_id]
            stream.queue.put_nowait((kind, None if payload is None else _decode_error(payload)))

    def lost(self, reason: str) -> ConnectionLost:
        """Mark the connection dead (``reason``) and fail everything waiting on it; returns
        the connection's error."""
        if self.error is None:
            self.error = ConnectionLost(reason)
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionLost(reason))
            self._pending.clear()
            for stream in self._streams.values():
                stream.queue.put_nowait((Reply.END, ConnectionLost(reason)))
            self._streams.clear()
            _close_writer(self._writer)
        return self.error

    def abort(self) -> None:
        """Close at once, without waiting (from synchronous code)."""
        self.lost("client closed")
        self._task.cancel()

    async def close(self) -> None:
        """Close and wait for the reader task and the socket to finish."""
        self.lost("client closed")
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)


def _close_writer(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        with contextlib.suppress(Exception):
            writer.close()


def _decode_error(payload: Any) -> RaftKVError:
    try:
        return codec.decode_error(payload)
    except RemoteProtocolError as e:
        return e
