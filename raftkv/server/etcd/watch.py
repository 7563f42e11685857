"""etcd's Watch stream: many watches on one bidirectional stream, each one run by
:meth:`ApiService.watch` (the watch hub's guarantees: ordered, atomic, resumable).

Requests: create (key, range_end, start_revision, filters, prev_kv, progress_notify,
watch_id), cancel (watch_id), progress (the revision every watch here has seen).  Answers are
etcd's: a created notice per watch, events per revision, a canceled notice (with
``compact_revision`` and etcd's reason when the history it needs was compacted), and progress
notifications with no events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from raftkv import api
from raftkv.errors import RaftKVError, WatchCancelled
from raftkv.protocol import codec
from raftkv.server.etcd import convert
from raftkv.server.etcd.errors import COMPACTED, STOPPED, status_of
from raftkv.server.etcd.proto import rpc_pb2
from raftkv.server.service import ApiService, CallContext
from raftkv.server.watch import WatchSpec

log = logging.getLogger("raftkv.server.etcd")

PROGRESS_WATCH_ID = -1
"""The watch id of an answer to a progress request (it concerns every watch of the stream)."""

MAX_QUEUED = 256
"""Answers queued for the client before the watches wait for it to read."""

_NOPUT = rpc_pb2.WatchCreateRequest.NOPUT
_NODELETE = rpc_pb2.WatchCreateRequest.NODELETE


class WatchStream:
    """One client's Watch stream."""

    def __init__(
        self,
        service: ApiService,
        context: Any,
        progress_interval: float,
        admit: Callable[[], None] = lambda: None,
    ) -> None:
        self.service = service
        self.admit = admit
        """Rate limiting: raises TooManyRequests to refuse a watch create."""
        self.context = context
        self.progress_interval = progress_interval
        self.out: asyncio.Queue[rpc_pb2.WatchResponse | None] = asyncio.Queue()
        self.room = asyncio.Event()
        self.watches: dict[int, asyncio.Task[None]] = {}
        self.next_id = 0
        self.failed = False
        """The member stopped serving: the stream ends UNAVAILABLE (clients resume elsewhere)."""

    def fail(self) -> None:
        """End this stream because the member stopped serving."""
        self.failed = True
        self.out.put_nowait(None)

    async def run(self, requests: AsyncIterator[rpc_pb2.WatchRequest]) -> None:
        """Serve until the client closes its side or the call ends."""
        reader = asyncio.create_task(self._read(requests))
        try:
            while True:
                resp = await self.out.get()
                self.room.set()
                if resp is None:
                    break
                await self.context.write(resp)
            if self.failed:
                await self.context.abort(*STOPPED)
        finally:
            reader.cancel()
            for t in self.watches.values():
                t.cancel()
            tasks = [reader, *self.watches.values()]
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- requests --------------------------------------------------------------------------

    async def _read(self, requests: AsyncIterator[rpc_pb2.WatchRequest]) -> None:
        try:
            async for req in requests:
                which = req.WhichOneof("request_union")
                if which == "create_request":
                    self._create(req.create_request)
                elif which == "cancel_request":
                    self._cancel(req.cancel_request.watch_id)
                elif which == "progress_request":
                    self._progress()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the client went away mid-read
            log.debug("watch stream read ended: %s", e)
        finally:
            self.out.put_nowait(None)

    def _header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        return convert.header(self.service.header(revision))

    def _create(self, r: rpc_pb2.WatchCreateRequest) -> None:
        try:
            self.admit()
        except RaftKVError as e:
            self.out.put_nowait(
                rpc_pb2.WatchResponse(
                    header=self._header(),
                    watch_id=r.watch_id,
                    created=True,
                    canceled=True,
                    cancel_reason=status_of(e)[1],
                )
            )
            return
        wid = r.watch_id
        if wid == 0:
            while self.next_id in self.watches:
                self.next_id += 1
            wid = self.next_id
            self.next_id += 1
        elif wid in self.watches:
            # etcd: a watch id already in use on this stream is refused
            self.out.put_nowait(
                rpc_pb2.WatchResponse(
                    header=self._header(),
                    watch_id=wid,
                    created=True,
                    canceled=True,
                    cancel_reason="etcdserver: duplicate watch ID",
                )
            )
            return
        spec = WatchSpec(
            key=r.key,
            range_end=r.range_end,
            start_revision=max(r.start_revision, 0),
            prev_kv=r.prev_kv,
            no_put=_NOPUT in r.filters,
            no_delete=_NODELETE in r.filters,
            progress_notify=r.progress_notify,
        )
        self.watches[wid] = asyncio.create_task(self._serve(wid, spec), name=f"etcd-watch-{wid}")

    def _cancel(self, wid: int) -> None:
        t = self.watches.pop(wid, None)
        if t is None:
            return
        t.cancel()
        self.out.put_nowait(
            rpc_pb2.WatchResponse(header=self._header(), watch_id=wid, canceled=True)
        )

    def _progress(self) -> None:
        try:
            rev = self.service.watch_synced_revision(self, CallContext())
        except RaftKVError as e:
            log.debug("progress request refused: %s", e)
            return
        if rev is None:
            return  # a watch is still catching up: no progress to report (as etcd)
        self.out.put_nowait(
            rpc_pb2.WatchResponse(header=self._header(rev), watch_id=PROGRESS_WATCH_ID)
        )

    # --- one watch -------------------------------------------------------------------------

    async def _drain(self) -> None:
        while self.out.qsize() >= MAX_QUEUED:
            self.room.clear()
            await self.room.wait()

    async def _serve(self, wid: int, spec: WatchSpec) -> None:
        created = False

        def send(d: dict[str, Any]) -> None:
            nonlocal created
            if d.get("created"):
                created = True
                resp = rpc_pb2.WatchResponse(
                    header=self._header(int(d["revision"])), watch_id=wid, created=True
                )
            else:
                events = [convert.event(codec.from_plain(api.Event, e)) for e in d["events"]]
                resp = rpc_pb2.WatchResponse(
                    header=self._header(int(d["revision"])), watch_id=wid, events=events
                )
            self.out.put_nowait(resp)

        try:
            await self.service.watch(
                spec,
                send,
                self._drain,
                len(self.watches),
                CallContext(),
                self.progress_interval,
                group=self,
            )
        except asyncio.CancelledError:
            raise
        except WatchCancelled as e:
            self._end(wid, created, COMPACTED[1], e.compact_revision)
        except RaftKVError as e:
            self._end(wid, created, status_of(e)[1], 0)
        except Exception as e:
            log.exception("internal error serving a watch")
            self._end(wid, created, f"etcdserver: internal error: {e}", 0)

    def _end(self, wid: int, created: bool, reason: str, compact_revision: int) -> None:
        """The server ends a watch: etcd sends the created notice first, then the cancel."""
        if self.watches.pop(wid, None) is None:
            return
        if not created:
            self.out.put_nowait(
                rpc_pb2.WatchResponse(header=self._header(), watch_id=wid, created=True)
            )
        with contextlib.suppress(Exception):
            self.out.put_nowait(
                rpc_pb2.WatchResponse(
                    header=self._header(),
                    watch_id=wid,
                    canceled=True,
                    compact_revision=compact_revision,
                    cancel_reason=reason,
                )
            )
