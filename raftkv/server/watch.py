"""Watch fan-out: every applied revision's events, delivered to the watchers whose range
matches, in revision order, once each, one response per revision.

Guarantees (etcd's "Watch API guarantees"), and how they hold here:

* **ordered / unique**: events are delivered by revision; a watcher keeps ``next_rev`` (the
  first revision it has not delivered) and never delivers below it.
* **atomic**: all events of one revision travel in one response.
* **reliable / resumable**: history replay and the switch to live events happen in one
  synchronous step on the event loop, so no revision is skipped between them; a client that
  reconnects resumes with ``start_revision = last seen + 1``.
* **bookmarkable**: progress notifications carry the current revision with no events.
* **bounded memory** (etcd issue 16839): each watcher buffers at most ``max_pending``
  responses.  A watcher that falls behind is marked *unsynced*; its buffer is dropped and it
  catches up from the MVCC history at its own pace.  If the history it needs was compacted
  meanwhile, the watch is cancelled with ``WatchCancelled(reason="compacted")``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from raftkv.api import Event, EventType
from raftkv.errors import Compacted, InvalidArgument, TooManyWatches, WatchCancelled
from raftkv.protocol import codec
from raftkv.state.fsm import ApplyResult, KVStateMachine

CATCHUP_BATCH = 1_000
"""Revisions read from history per step of an unsynced watcher."""


@dataclass(frozen=True, slots=True)
class WatchSpec:
    key: bytes
    range_end: bytes = b""
    start_revision: int = 0
    prev_kv: bool = False
    no_put: bool = False
    no_delete: bool = False
    progress_notify: bool = False

    @classmethod
    def from_plain(cls, p: Any) -> WatchSpec:
        if not isinstance(p, dict):
            raise InvalidArgument("watch request must be a map")
        key = p.get("key", b"")
        end = p.get("range_end", b"")
        if not isinstance(key, bytes) or not isinstance(end, bytes) or not key:
            raise InvalidArgument("watch key and range_end must be bytes; key non-empty")
        start = p.get("start_revision", 0)
        if not isinstance(start, int) or start < 0:
            raise InvalidArgument("start_revision must be a non-negative integer")
        return cls(
            key=key,
            range_end=end,
            start_revision=start,
            prev_kv=bool(p.get("prev_kv", False)),
            no_put=bool(p.get("no_put", False)),
            no_delete=bool(p.get("no_delete", False)),
            progress_notify=bool(p.get("progress_notify", False)),
        )

    def matches(self, key: bytes) -> bool:
        if not self.range_end:
            return key == self.key
        if self.range_end == b"\0":
            return key >= self.key
        return self.key <= key < self.range_end

    def wants(self, ev: Event) -> bool:
        if ev.type == EventType.PUT and self.no_put:
            return False
        if ev.type == EventType.DELETE and self.no_delete:
            return False
        return self.matches(ev.kv.key)


Sender = Callable[[dict[str, Any]], None]


@dataclass(eq=False)
class HubWatch:
    """One watch registered with the hub: its spec, where its events go, and how far it has
    been delivered."""

    spec: WatchSpec
    send: Sender
    max_pending: int
    next_rev: int
    """Invariant: every revision < next_rev has been delivered (or filtered out)."""
    synced: bool = True
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    error: BaseException | None = None
    group: object = None
    """Whose watch this is (a connection, a stream): progress requests go to a group."""
    progress_requested: bool = False
    """A progress request is waiting to be answered (once this watch is synced)."""

    def response(self, revision: int, events: list[Event]) -> dict[str, Any]:
        evs = events if self.spec.prev_kv else [Event(e.type, e.kv, None) for e in events]
        return {"revision": revision, "events": [codec.to_plain(e) for e in evs]}


class WatchHub:
    """Registers watchers and feeds them from the node's applied entries."""

    def __init__(
        self,
        fsm_getter: Callable[[], KVStateMachine],
        max_pending: int = 1_024,
        max_watches_per_conn: int = 1_000,
    ) -> None:
        self._fsm = fsm_getter
        self.max_pending = max_pending
        self.max_watches_per_conn = max_watches_per_conn
        self.watchers: set[HubWatch] = set()
        self.cancelled_slow = 0

    # --- feeding ---------------------------------------------------------------------------

    def on_apply(self, result: ApplyResult) -> None:
        """Called by the node for every applied KV entry, in log order."""
        if not result.events or not self.watchers:
            return
        rev = result.revision
        for w in list(self.watchers):
            if not w.synced or rev < w.next_rev:
                continue
            evs = [e for e in result.events if w.spec.wants(e)]
            w.next_rev = rev + 1
            if not evs:
                continue
            if w.queue.qsize() >= w.max_pending:
                # Too slow: stop buffering for it; it will catch up from history, starting at
                # the oldest revision it has not been sent (everything queued is unsent).
                w.synced = False
                w.next_rev = int(w.queue.get_nowait()["revision"])
                w.queue = asyncio.Queue()
                self.cancelled_slow += 1
            else:
                w.queue.put_nowait(w.response(rev, evs))
            w.wake.set()

    # --- serving one watch -----------------------------------------------------------------

    async def serve(
        self,
        spec: WatchSpec,
        send: Sender,
        drain: Callable[[], Awaitable[None]],
        conn_watch_count: int,
        progress_interval: float = 10.0,
        group: object = None,
    ) -> None:
        """Run one watch until cancelled: created notice, history, then live events.
        ``group`` names whose watch it is, for :meth:`request_progress`."""
        if conn_watch_count > self.max_watches_per_conn:
            raise TooManyWatches(f"at most {self.max_watches_per_conn} watches per connection")
        fsm = self._fsm()
        current = fsm.revision
        start = spec.start_revision or current + 1
        if start <= fsm.compact_revision:
            raise WatchCancelled("compacted", fsm.compact_revision)
        w = HubWatch(spec, send, self.max_pending, next_rev=start, synced=False, group=group)
        send({"created": True, "revision": current, "compact_revision": fsm.compact_revision})
        self.watchers.add(w)
        try:
            while True:
                if not w.synced:
                    self._catch_up(w)
                    await drain()  # the client reads at its own pace; we wait for it
                    continue
                while not w.queue.empty():
                    send(w.queue.get_nowait())
                if w.progress_requested:
                    # Everything up to next_rev - 1 has been sent (or filtered out).
                    w.progress_requested = False
                    send({"revision": w.next_rev - 1, "events": [], "progress": True})
                await drain()
                w.wake.clear()
                if not w.queue.empty() or not w.synced or w.progress_requested:
                    continue
                if spec.progress_notify:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(w.wake.wait(), progress_interval)
                    if not w.wake.is_set() and w.synced and w.queue.empty():
                        send({"revision": self._fsm().revision, "events": [], "progress": True})
                else:
                    await w.wake.wait()
        finally:
            self.watchers.discard(w)

    def request_progress(self, group: object) -> int:
        """Ask every watch of ``group`` for a progress notification: each answers, once it
        has sent everything up to the current revision, with ``{"revision": R, "events": [],
        "progress": True}`` (no event at or below R is still to come).  Returns how many
        watches were asked."""
        asked = 0
        for w in self.watchers:
            if w.group is group:
                w.progress_requested = True
                w.wake.set()
                asked += 1
        return asked

    def synced_revision(self, group: object) -> int | None:
        """The current revision if every watch of ``group`` has sent every event up to it
        (synced, nothing queued), else None: a progress notification for the whole group at
        that revision is then true for each of its watches."""
        for w in self.watchers:
            if w.group is group and (not w.synced or not w.queue.empty()):
                return None
        return self._fsm().revision

    def _catch_up(self, w: HubWatch) -> None:
        """Deliver up to CATCHUP_BATCH revisions from history; mark synced when current.

        Runs without awaiting, so nothing is applied between reading the history and
        switching the watcher to live events.
        """
        fsm = self._fsm()
        current = fsm.revision
        if w.next_rev > current:
            w.synced = True
            return
        end = min(current, w.next_rev + CATCHUP_BATCH - 1)
        try:
            events = fsm.events(w.next_rev, end)
        except Compacted as e:
            raise WatchCancelled("compacted", e.revision) from None
        by_rev: dict[int, list[Event]] = {}
        for ev in events:
            if w.spec.wants(ev):
                by_rev.setdefault(ev.kv.mod_revision, []).append(ev)
        for rev in sorted(by_rev):
            w.send(w.response(rev, by_rev[rev]))
        w.next_rev = end + 1
        if end == current:
            w.synced = True
