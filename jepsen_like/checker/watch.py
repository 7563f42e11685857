"""Watch validators: etcd's watch guarantees, checked against the final MVCC history.

Inputs (plain data; the runner records them):

* the **ground truth**, an :class:`EventLog`: every event of the store from revision 1 (or
  from ``first_revision`` when older history was compacted).  Build it either from a list of
  events (:meth:`EventLog.from_events`) or from one watch's stream from revision 1 on a fresh
  connection after healing (:meth:`EventLog.from_items`).  A range read at every revision
  would be too slow; one stream gives the same thing.
* per watcher, a :class:`WatchStream`: the :class:`WatchedRange` asked for and the items it
  received, in order: ``CREATED``/``RESUME`` markers (``revision`` = the first revision that
  stream segment may deliver: the ``start_revision`` sent, or the created header revision + 1
  when it was 0), ``EVENTS`` responses (header revision and events), ``PROGRESS``
  notifications (bookmarks), ``CANCELED``.  :func:`item_from_response` converts a
  ``raftkv.WatchResponse``; :func:`item_to_plain` / :func:`item_from_plain` give a JSON form.
* optionally the writer's acknowledged puts and deletes, :class:`AckedWrite`, with their
  revisions when known.

What is checked (the anomaly names in the result):

==================  ========================================================================
``unordered``       an event's revision is below one already delivered on this watcher
``duplicate``       the same (revision, key) event delivered twice
``non-atomic``      one revision's events split across responses, or only part of them sent
``missed``          (reliable) a revision in [start, last revision seen] that touches the
                    watched range and passes the filter, never delivered
``resumable``       after a resume at R, an event below R
``bookmarkable``    a progress notification below an earlier one, or an event at or below a
                    revision already bookmarked
``header``          an event newer than its response's header revision
``filter``          an event outside the key range, or of a filtered-out type
``prev-kv``         ``prev_kv`` differs from the key's previous version in the log
``create-flag``     ``create_revision == mod_revision`` but ``version != 1``, or the reverse
``phantom-event``   an event the log does not have at that revision
``event-mismatch``  an event that differs from the log's (value, version, revisions)
``lost-write``      an acknowledged write missing from the log
``log-inconsistent`` the ground truth itself breaks MVCC rules (versions, create revisions)
==================  ========================================================================
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

from jepsen_like.checker.anomalies import Anomalies
from jepsen_like.checker.history import decode_value, encode_value
from raftkv import WatchResponse
from raftkv.api import ALL_KEYS, Event, EventType, KeyValue

__all__ = [
    "AckedWrite",
    "EventLog",
    "ItemKind",
    "StreamItem",
    "WatchStream",
    "WatchedRange",
    "check_watches",
    "event_from_plain",
    "event_to_plain",
    "item_from_plain",
    "item_from_response",
    "item_to_plain",
]


class ItemKind(IntEnum):
    """What a watcher received (or did): see the module docstring."""

    CREATED = 0
    EVENTS = 1
    PROGRESS = 2
    RESUME = 3
    CANCELED = 4


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One item of a watcher's stream; ``revision`` is the header revision, or for
    ``CREATED``/``RESUME`` the first revision the segment may deliver."""

    kind: ItemKind
    revision: int
    events: tuple[Event, ...] = ()
    compact_revision: int = 0


@dataclass(frozen=True, slots=True)
class WatchedRange:
    """The watch request, etcd semantics: ``range_end`` empty = the key alone, ``b"\\0"`` = every
    key >= ``key``, else ``[key, range_end)``."""

    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False
    no_put: bool = False
    no_delete: bool = False

    def matches(self, key: bytes) -> bool:
        if not self.range_end:
            return key == self.key
        if self.range_end == ALL_KEYS:
            return key >= self.key
        return self.key <= key < self.range_end

    def wants(self, ev: Event) -> bool:
        if (ev.type == EventType.PUT and self.no_put) or (
            ev.type == EventType.DELETE and self.no_delete
        ):
            return False
        return self.matches(ev.kv.key)


@dataclass(frozen=True, slots=True)
class WatchStream:
    """One watcher: a name for reports, what it asked for, what it got."""

    name: str
    watched: WatchedRange
    items: Sequence[StreamItem]


@dataclass(frozen=True, slots=True)
class AckedWrite:
    """A put or delete the writer saw acknowledged; ``revision`` 0 when unknown."""

    type: EventType
    key: bytes
    value: bytes = b""
    revision: int = 0


# --- plain (JSON) forms ---------------------------------------------------------------------


def _b(v: Any) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode("utf-8")
    raise ValueError(f"expected bytes or str, got {v!r}")


def _kv_to_plain(kv: KeyValue) -> dict[str, Any]:
    return {
        "key": encode_value(kv.key),
        "value": encode_value(kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": kv.lease,
    }


def _kv_from_plain(d: Mapping[str, Any]) -> KeyValue:
    return KeyValue(
        _b(decode_value(d["key"])),
        _b(decode_value(d.get("value", ""))),
        int(d.get("create_revision", 0)),
        int(d.get("mod_revision", 0)),
        int(d.get("version", 0)),
        int(d.get("lease", 0)),
    )


def event_to_plain(ev: Event) -> dict[str, Any]:
    """``{"type": "put"|"delete", "key", "value", "create_revision", "mod_revision",
    "version", "lease", "prev_kv": {...} | None}``."""
    d = {"type": ev.type.name.lower(), **_kv_to_plain(ev.kv)}
    d["prev_kv"] = None if ev.prev_kv is None else _kv_to_plain(ev.prev_kv)
    return d


def event_from_plain(d: Mapping[str, Any]) -> Event:
    prev = d.get("prev_kv")
    return Event(
        EventType[str(d["type"]).upper()],
        _kv_from_plain(d),
        None if prev is None else _kv_from_plain(prev),
    )


def item_to_plain(item: StreamItem) -> dict[str, Any]:
    d: dict[str, Any] = {"kind": item.kind.name.lower(), "revision": item.revision}
    if item.events:
        d["events"] = [event_to_plain(e) for e in item.events]
    if item.compact_revision:
        d["compact_revision"] = item.compact_revision
    return d


def item_from_plain(d: Mapping[str, Any]) -> StreamItem:
    return StreamItem(
        ItemKind[str(d["kind"]).upper()],
        int(d["revision"]),
        tuple(event_from_plain(e) for e in d.get("events") or ()),
        int(d.get("compact_revision", 0)),
    )


def item_from_response(resp: WatchResponse) -> StreamItem:
    """A ``raftkv.WatchResponse`` as a stream item (events, progress, or a cancel)."""
    if resp.compact_revision:
        return StreamItem(ItemKind.CANCELED, resp.revision, (), resp.compact_revision)
    kind = ItemKind.PROGRESS if resp.progress and not resp.events else ItemKind.EVENTS
    return StreamItem(kind, resp.revision, resp.events)


# --- the ground truth ----------------------------------------------------------------------


_Result = Anomalies


def _same_kv(a: KeyValue, b: KeyValue) -> bool:
    return (a.key, a.value, a.create_revision, a.mod_revision, a.version) == (
        b.key,
        b.value,
        b.create_revision,
        b.mod_revision,
        b.version,
    )


def _kv_json(kv: KeyValue | None) -> dict[str, Any] | None:
    return None if kv is None else _kv_to_plain(kv)


class EventLog:
    """Every event of the store in revision order: the ground truth for the validators.

    ``first_revision`` > 1 means the history before it is unknown (compacted): ``prev_kv`` of
    a key's first event in the log cannot be checked then.
    """

    def __init__(self, events: Iterable[Event], first_revision: int = 1) -> None:
        self.first_revision = first_revision
        self.by_revision: dict[int, dict[bytes, Event]] = {}
        self._key_revs: dict[bytes, list[int]] = {}
        self.problems: list[dict[str, Any]] = []
        for ev in events:
            rev, key = ev.kv.mod_revision, ev.kv.key
            at = self.by_revision.setdefault(rev, {})
            if key in at:
                self.problems.append({"revision": rev, "key": key, "why": "key twice in a rev"})
                continue
            revs = self._key_revs.setdefault(key, [])
            if revs and revs[-1] >= rev:
                self.problems.append({"revision": rev, "key": key, "why": "revision not rising"})
                continue
            at[key] = ev
            revs.append(rev)
        self.revisions = sorted(self.by_revision)
        self.last_revision = self.revisions[-1] if self.revisions else first_revision - 1
        self._check_mvcc()

    @classmethod
    def from_events(cls, events: Iterable[Event], first_revision: int = 1) -> EventLog:
        return cls(events, first_revision)

    @classmethod
    def from_items(cls, items: Iterable[StreamItem], first_revision: int = 1) -> EventLog:
        """From one full watch (all keys, from ``first_revision``): its events, in order."""
        return cls(
            (e for it in items if it.kind is ItemKind.EVENTS for e in it.events), first_revision
        )

    def event(self, revision: int, key: bytes) -> Event | None:
        return self.by_revision.get(revision, {}).get(key)

    def key_events(self, key: bytes) -> list[Event]:
        """The key's events in revision order."""
        return [self.by_revision[r][key] for r in self._key_revs.get(key, ())]

    def known(self, revision: int) -> bool:
        """Whether the log covers ``revision`` (so a missing event there is a real absence)."""
        return self.first_revision <= revision <= self.last_revision

    def previous(self, key: bytes, revision: int) -> tuple[bool, KeyValue | None]:
        """``(known, kv)``: the key's live version just before ``revision`` (None if absent).

        ``known`` is False when that lies before the log's first revision.
        """
        revs = self._key_revs.get(key, [])
        i = bisect.bisect_left(revs, revision)
        if i == 0:
            return self.first_revision <= 1, None
        ev = self.by_revision[revs[i - 1]][key]
        return True, (ev.kv if ev.type == EventType.PUT else None)

    def _check_mvcc(self) -> None:
        """Versions count up from 1 per life of a key; create_revision is the life's first."""
        for key, revs in self._key_revs.items():
            prev: KeyValue | None = None
            known = self.first_revision <= 1
            for rev in revs:
                ev = self.by_revision[rev][key]
                kv = ev.kv
                if ev.type == EventType.DELETE:
                    prev, known = None, True
                    continue
                if known:
                    version = 1 if prev is None else prev.version + 1
                    create = rev if prev is None else prev.create_revision
                    if (kv.version, kv.create_revision) != (version, create):
                        self.problems.append(
                            {
                                "revision": rev,
                                "key": key,
                                "why": f"expected version {version}, create_revision {create}",
                                "event": event_to_plain(ev),
                            }
                        )
                prev, known = kv, True


# --- the validators ------------------------------------------------------------------------


def check_watches(
    log: EventLog,
    streams: Sequence[WatchStream],
    writes: Iterable[AckedWrite] = (),
    max_examples: int = 8,
) -> dict[str, Any]:
    """Check every watcher's stream against ``log``; see the module docstring.

    Returns ``{"valid", "anomaly_types", "anomalies": {type: examples}, "counts", "stats"}``.
    """
    res = _Result(max_examples)
    for p in log.problems:
        res.add("log-inconsistent", p)
    for w in writes:
        _check_write(log, w, res)
    delivered = 0
    for s in streams:
        delivered += _check_stream(log, s, res)
    types = sorted(res.anomalies)
    return {
        "valid": not types,
        "anomaly_types": types,
        "anomalies": res.anomalies,
        "counts": res.counts,
        "stats": {
            "log_revisions": len(log.revisions),
            "last_revision": log.last_revision,
            "watchers": len(streams),
            "events_delivered": delivered,
        },
    }


def _check_write(log: EventLog, w: AckedWrite, res: _Result) -> None:
    def fits(ev: Event | None) -> bool:
        return (
            ev is not None
            and ev.type == w.type
            and (w.type == EventType.DELETE or ev.kv.value == w.value)
        )

    if w.revision:
        ok = fits(log.event(w.revision, w.key)) or not log.known(w.revision)
    else:
        ok = any(fits(ev) for ev in log.key_events(w.key))
    if not ok:
        res.add(
            "lost-write",
            {"type": w.type.name.lower(), "key": w.key, "value": w.value, "revision": w.revision},
        )


_NO_REV: Final = -1


def _check_stream(log: EventLog, s: WatchStream, res: _Result) -> int:
    """Check one watcher; returns the number of events it delivered."""
    spec = s.watched
    start: int | None = None  # the first revision the watch asked for
    seg_start = 0  # the current segment's start (after a resume)
    last_rev = _NO_REV  # highest revision delivered so far
    last_resp_rev = _NO_REV  # highest revision of the previous response
    bookmark = _NO_REV
    seen: dict[int, set[bytes]] = {}
    n = 0
    for pos, item in enumerate(s.items):
        where = {"watcher": s.name, "item": pos}
        if item.kind in (ItemKind.CREATED, ItemKind.RESUME):
            seg_start = item.revision
            if start is None:
                start = item.revision
            continue
        if item.kind is ItemKind.PROGRESS:
            if item.revision < bookmark:
                res.add("bookmarkable", {**where, "progress": item.revision, "before": bookmark})
            bookmark = max(bookmark, item.revision)
            continue
        if item.kind is not ItemKind.EVENTS:
            continue
        resp_revs = set()
        for ev in item.events:
            n += 1
            rev, key = ev.kv.mod_revision, ev.kv.key
            at = {**where, "revision": rev, "key": key}
            if start is None:
                start = rev  # no marker: the stream starts at its first event
            if item.revision and rev > item.revision:
                res.add("header", {**at, "header": item.revision})
            if not spec.wants(ev):
                res.add("filter", {**at, "type": ev.type.name.lower()})
            if rev < seg_start:
                res.add("resumable", {**at, "resumed_at": seg_start})
            if rev <= bookmark:
                res.add("bookmarkable", {**at, "bookmark": bookmark})
            keys = seen.setdefault(rev, set())
            if key in keys:
                res.add("duplicate", at)
            elif rev < last_rev and rev not in resp_revs:
                res.add("unordered", {**at, "after": last_rev})
            elif rev <= last_resp_rev and rev not in resp_revs:
                res.add("non-atomic", {**at, "why": "revision split across responses"})
            keys.add(key)
            resp_revs.add(rev)
            last_rev = max(last_rev, rev)
            _check_event(log, spec, ev, at, res)
        if resp_revs:
            last_resp_rev = max(last_resp_rev, max(resp_revs))
    if start is None:
        return n
    high = min(max(last_rev, bookmark), log.last_revision)
    lo = bisect.bisect_left(log.revisions, max(start, log.first_revision))
    hi = bisect.bisect_right(log.revisions, high)
    for rev in log.revisions[lo:hi]:
        want = {k for k, ev in log.by_revision[rev].items() if spec.wants(ev)}
        if not want:
            continue
        got = seen.get(rev, set())
        if not got:
            res.add("missed", {"watcher": s.name, "revision": rev, "keys": sorted(want)})
        elif want - got:
            res.add(
                "non-atomic",
                {"watcher": s.name, "revision": rev, "missing": sorted(want - got)},
            )
    return n


def _check_event(
    log: EventLog, spec: WatchedRange, ev: Event, at: dict[str, Any], res: _Result
) -> None:
    kv = ev.kv
    if ev.type == EventType.PUT and (kv.create_revision == kv.mod_revision) != (kv.version == 1):
        res.add("create-flag", {**at, "event": event_to_plain(ev)})
    truth = log.event(kv.mod_revision, kv.key)
    if truth is None:
        if log.known(kv.mod_revision):
            res.add("phantom-event", {**at, "event": event_to_plain(ev)})
    elif truth.type != ev.type or (ev.type == EventType.PUT and not _same_kv(truth.kv, kv)):
        res.add("event-mismatch", {**at, "event": event_to_plain(ev), "log": event_to_plain(truth)})
    if spec.prev_kv:
        known, expected = log.previous(kv.key, kv.mod_revision)
        got = ev.prev_kv
        if known and (
            (expected is None) != (got is None)
            or (expected is not None and got is not None and not _same_kv(expected, got))
        ):
            res.add("prev-kv", {**at, "prev_kv": _kv_json(got), "expected": _kv_json(expected)})
