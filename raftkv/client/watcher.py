"""Watches: :class:`Watcher`, an async iterator of :class:`WatchResponse`.  A watcher opens
its stream through the client's one retry loop (:meth:`raftkv.client.router.Router.run`,
like a read) and, when its connection is lost, opens it again the same way at the revision
after the last it delivered.  (:class:`WatchFilter` and :class:`WatchResponse` live in
:mod:`raftkv.client.values` and are re-exported here.)"""

from __future__ import annotations

from typing import Any

from raftkv.client.connection import END, ClientConnection, Stream
from raftkv.client.router import READ, Router
from raftkv.client.values import WatchFilter, WatchResponse, as_dict, watch_response
from raftkv.errors import ConnectionLost, RemoteProtocolError, WatchCancelled
from raftkv.protocol.methods import Method

__all__ = ["WatchFilter", "WatchResponse", "Watcher"]


class Watcher:
    """An open watch: an async iterator of :class:`WatchResponse`, and an async context
    manager that cancels it on exit.  ``revision`` is the store revision when the watch was
    created (after the first item, or after :meth:`start`).

    Opening the stream is retried like a read (failover, backoff, within the client's command
    timeout, ending in Timeout); a lost stream is reopened at the revision after the last one
    delivered, so nothing is missed or repeated.  Iteration ends with WatchCancelled if the
    server cancels the watch, and quietly when the client is closed."""

    def __init__(self, router: Router, spec: dict[str, Any]) -> None:
        self._router = router
        self._spec = spec
        self._stream: Stream | None = None
        self._next_rev = int(spec["start_revision"])
        self.revision = 0
        self._done = False

    async def __aenter__(self) -> Watcher:
        """Start the watch (see :meth:`start`)."""
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Cancel the watch."""
        self.cancel()

    def __aiter__(self) -> Watcher:
        """The watcher is its own iterator."""
        return self

    async def start(self) -> None:
        """Open the stream and wait until the server confirms the watch.  After this returns,
        every later write in range will be delivered."""
        if self._stream is None and not self._done:
            await self._open()

    async def _open(self) -> None:
        spec = dict(self._spec, start_revision=self._next_rev)

        async def attempt(conn: ClientConnection) -> tuple[Stream, dict[str, Any]]:
            stream = conn.open_stream(Method.WATCH, spec)
            try:
                first = await stream.next()
                if first is END:
                    raise WatchCancelled("closed by the server")
                d = as_dict(first)
                if not d.get("created"):
                    raise RemoteProtocolError("a watch stream must start with 'created'")
            except BaseException:
                stream.cancel()
                raise
            return stream, d

        stream, d = await self._router.run(Method.WATCH, attempt, READ)
        self.revision = int(d.get("revision", 0))
        if self._next_rev == 0:
            self._next_rev = self.revision + 1
        self._stream = stream

    async def __anext__(self) -> WatchResponse:
        """The next response: every event of one revision, or a progress notification.
        Reconnects after a lost connection; StopAsyncIteration once cancelled, ended by the
        server, or the client closed; WatchCancelled if the server cancelled the watch."""
        while True:
            if self._done:
                raise StopAsyncIteration
            if self._stream is None:
                try:
                    await self._open()
                except ConnectionLost:
                    if self._router.closed:
                        self._done = True
                        raise StopAsyncIteration from None
                    raise
                assert self._stream is not None
            try:
                item = await self._stream.next()
            except ConnectionLost:
                self._stream = None
                if self._router.closed:
                    self._done = True
                    raise StopAsyncIteration from None
                continue  # resume at self._next_rev on another connection
            except BaseException:
                self._done = True
                raise
            if item is END:
                self._done = True
                raise StopAsyncIteration
            resp = watch_response(item)
            if resp.events or resp.progress:
                self._next_rev = max(self._next_rev, resp.revision + 1)
            return resp

    def cancel(self) -> None:
        """Stop the watch (the server is told; iteration ends)."""
        self._done = True
        if self._stream is not None:
            self._stream.cancel()
            self._stream = None
