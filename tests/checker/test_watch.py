"""Watch validators: a tiny MVCC model makes the ground truth and correct streams; each test
breaks one guarantee and checks that exactly that anomaly is reported."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jepsen_like.checker.watch import (
    AckedWrite,
    EventLog,
    ItemKind,
    StreamItem,
    WatchedRange,
    WatchStream,
    check_watches,
    item_from_plain,
    item_from_response,
    item_to_plain,
)
from raftkv import WatchResponse
from raftkv.api import Event, EventType, KeyValue

PUT, DELETE = EventType.PUT, EventType.DELETE
Write = tuple[EventType, bytes, bytes]


def mvcc(revisions: list[list[Write]]) -> list[list[Event]]:
    """Apply one list of writes per revision (from 2: etcd's store starts at 1); return the
    events of each revision, with prev_kv filled in."""
    live: dict[bytes, KeyValue] = {}
    out = []
    for i, writes in enumerate(revisions):
        rev = i + 2
        evs = []
        for kind, key, value in writes:
            prev = live.get(key)
            if kind is PUT:
                kv = KeyValue(
                    key,
                    value,
                    rev if prev is None else prev.create_revision,
                    rev,
                    1 if prev is None else prev.version + 1,
                )
                live[key] = kv
            else:
                kv = KeyValue(key, b"", 0, rev, 0)
                live.pop(key, None)
            evs.append(Event(kind, kv, prev))
        out.append(evs)
    return out


WORKLOAD: list[list[Write]] = [
    [(PUT, b"a", b"1")],
    [(PUT, b"b", b"1"), (PUT, b"c", b"1")],  # a txn: two events at one revision
    [(PUT, b"a", b"2")],
    [(DELETE, b"a", b"")],
    [(PUT, b"zz", b"1")],  # outside the watched prefix
    [(PUT, b"a", b"3"), (PUT, b"b", b"2")],
    [(PUT, b"c", b"2")],
]
REVS = mvcc(WORKLOAD)
LOG = EventLog.from_events(e for evs in REVS for e in evs)
WATCHED = WatchedRange(b"a", b"d", prev_kv=True)


def good_items(start: int = 2, spec: WatchedRange = WATCHED) -> list[StreamItem]:
    items = [StreamItem(ItemKind.CREATED, start)]
    for evs in REVS:
        mine = tuple(e for e in evs if spec.wants(e) and e.kv.mod_revision >= start)
        if mine:
            items.append(StreamItem(ItemKind.EVENTS, mine[0].kv.mod_revision, mine))
    return items


def run(items: list[StreamItem], spec: WatchedRange = WATCHED, **kw: Any) -> dict[str, Any]:
    return check_watches(LOG, [WatchStream("w1", spec, items)], **kw)


def test_correct_stream_is_valid() -> None:
    res = run(good_items())
    assert res["valid"] is True, res
    assert res["stats"]["events_delivered"] == 8


def test_ground_truth_from_a_full_watch_is_the_same() -> None:
    full = good_items(spec=WatchedRange(b"\0", b"\0"))
    log = EventLog.from_items(full)
    assert log.by_revision == LOG.by_revision and not log.problems


def _without(items: list[StreamItem], rev: int) -> list[StreamItem]:
    return [i for i in items if not (i.kind is ItemKind.EVENTS and i.revision == rev)]


def test_missed_revision() -> None:
    res = run(_without(good_items(), 4))
    assert res["anomaly_types"] == ["missed"]
    assert res["anomalies"]["missed"][0]["revision"] == 4


def test_missed_revision_at_the_end_counts_only_up_to_the_last_seen() -> None:
    items = good_items()
    assert run(items[:-1])["valid"] is True  # rev 8 simply not seen yet
    bookmark = StreamItem(ItemKind.PROGRESS, 8)
    assert run([*items[:-1], bookmark])["anomaly_types"] == ["missed"]  # bookmarked past it


def test_unordered() -> None:
    items = good_items()
    items[2], items[3] = items[3], items[2]
    assert run(items)["anomaly_types"] == ["unordered"]


def test_duplicate() -> None:
    items = good_items()
    res = run([*items, items[-1]])
    assert res["anomaly_types"] == ["duplicate"]


def test_split_revision_is_not_atomic() -> None:
    items = good_items()
    txn = items[2]
    assert len(txn.events) == 2
    halves = [dataclasses.replace(txn, events=(e,)) for e in txn.events]
    assert run([*items[:2], *halves, *items[3:]])["anomaly_types"] == ["non-atomic"]
    partial = [*items[:2], halves[0], *items[3:]]
    res = run(partial)
    assert res["anomaly_types"] == ["non-atomic"]
    assert res["anomalies"]["non-atomic"][0]["missing"] == [b"c"]


def test_resume_after_reconnect() -> None:
    items = good_items()
    resumed = [*items[:3], StreamItem(ItemKind.RESUME, 4), *items[3:]]
    assert run(resumed)["valid"] is True
    # Resumed at 4 but replays revision 3 first:
    replay = [*items[:3], StreamItem(ItemKind.RESUME, 4), items[2], *items[3:]]
    assert set(run(replay)["anomaly_types"]) == {"resumable", "duplicate"}
    # Resumed one revision too far: revision 4 is lost.
    skip = [*items[:3], StreamItem(ItemKind.RESUME, 5), *items[4:]]
    assert run(skip)["anomaly_types"] == ["missed"]


def test_bookmarks() -> None:
    items = good_items()
    ok = [
        *items[:3],
        StreamItem(ItemKind.PROGRESS, 3),
        *items[3:],
        StreamItem(ItemKind.PROGRESS, 8),
    ]
    assert run(ok)["valid"] is True
    back = [*items[:3], StreamItem(ItemKind.PROGRESS, 6), StreamItem(ItemKind.PROGRESS, 5)]
    assert "bookmarkable" in run(back)["anomaly_types"]
    early = [*items[:2], StreamItem(ItemKind.PROGRESS, 3), *items[2:]]  # rev 3 after "up to 3"
    assert run(early)["anomaly_types"] == ["bookmarkable"]


def _replace_event(items: list[StreamItem], rev: int, **changes: Any) -> list[StreamItem]:
    out = []
    for it in items:
        if it.kind is ItemKind.EVENTS and it.revision == rev:
            ev = it.events[0]
            kv_changes = {k: v for k, v in changes.items() if k != "prev_kv"}
            new = Event(
                ev.type,
                dataclasses.replace(ev.kv, **kv_changes),
                changes.get("prev_kv", ev.prev_kv),
            )
            it = dataclasses.replace(it, events=(new, *it.events[1:]))
        out.append(it)
    return out


def test_prev_kv() -> None:
    stale = KeyValue(b"a", b"0", 2, 2, 1)
    res = run(_replace_event(good_items(), 4, prev_kv=stale))  # put a=2: prev is a=1 at rev 2
    assert res["anomaly_types"] == ["prev-kv"]
    res = run(_replace_event(good_items(), 7, prev_kv=stale))  # a=3 after a delete: prev None
    assert res["anomaly_types"] == ["prev-kv"]
    # Not asked for: not checked.
    plain = WatchedRange(b"a", b"d")
    assert run(_replace_event(good_items(spec=plain), 4, prev_kv=None), plain)["valid"] is True


def test_creation_flag_and_mismatch() -> None:
    res = run(_replace_event(good_items(), 4, create_revision=4))  # version 2 "created" at 4
    assert set(res["anomaly_types"]) == {"create-flag", "event-mismatch"}
    res = run(_replace_event(good_items(), 4, value=b"other"))
    assert res["anomaly_types"] == ["event-mismatch"]


def test_phantom_event() -> None:
    ghost = Event(PUT, KeyValue(b"bb", b"x", 3, 3, 1))
    items = good_items()
    items[2] = dataclasses.replace(items[2], events=(*items[2].events, ghost))
    assert run(items)["anomaly_types"] == ["phantom-event"]


def test_filter_and_range() -> None:
    no_del = WatchedRange(b"a", b"d", prev_kv=True, no_delete=True)
    assert run(good_items(spec=no_del), no_del)["valid"] is True
    assert run(good_items(), no_del)["anomaly_types"] == ["filter"]  # delivers the delete
    single = WatchedRange(b"a", prev_kv=True)
    assert run(good_items(spec=single), single)["valid"] is True
    assert "filter" in run(good_items(), single)["anomaly_types"]


def test_header_behind_event() -> None:
    items = good_items()
    items[1] = dataclasses.replace(items[1], revision=1)
    assert run(items)["anomaly_types"] == ["header"]


def test_acknowledged_writes() -> None:
    ok = [AckedWrite(PUT, b"a", b"2", 4), AckedWrite(DELETE, b"a", revision=5)]
    assert run(good_items(), writes=ok)["valid"] is True
    assert run(good_items(), writes=[AckedWrite(PUT, b"a", b"3")])["valid"] is True
    lost = [AckedWrite(PUT, b"a", b"9", 4), AckedWrite(PUT, b"q", b"1")]
    res = run(good_items(), writes=lost)
    assert res["anomaly_types"] == ["lost-write"] and res["counts"]["lost-write"] == 2


def test_inconsistent_log() -> None:
    evs = [e for r in REVS for e in r]
    bad = Event(PUT, dataclasses.replace(evs[2].kv, version=5))  # a=2 claims version 5
    log = EventLog.from_events([*evs[:2], bad, *evs[3:]])
    res = check_watches(log, [])
    assert res["anomaly_types"] == ["log-inconsistent"]


def test_compacted_log_skips_unknown_prev_kv() -> None:
    evs = [e for r in REVS for e in r if e.kv.mod_revision >= 4]
    log = EventLog.from_events(evs, first_revision=4)
    items = [StreamItem(ItemKind.CREATED, 4), *good_items()[3:]]
    assert not log.problems
    assert check_watches(log, [WatchStream("w", WATCHED, items)])["valid"] is True


def test_plain_round_trip_through_json() -> None:
    items = [
        *good_items(),
        StreamItem(ItemKind.PROGRESS, 9),
        StreamItem(ItemKind.CANCELED, 9, (), 5),
    ]
    back = [item_from_plain(json.loads(json.dumps(item_to_plain(i)))) for i in items]
    assert back == items


def test_from_client_response() -> None:
    ev = REVS[0][0]
    assert item_from_response(WatchResponse(2, (ev,))) == StreamItem(ItemKind.EVENTS, 2, (ev,))
    assert item_from_response(WatchResponse(5, (), progress=True)).kind is ItemKind.PROGRESS
    assert item_from_response(WatchResponse(5, (), compact_revision=3)).kind is ItemKind.CANCELED


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(st.sampled_from([PUT, PUT, DELETE]), st.sampled_from([b"a", b"b", b"c"])),
            min_size=1,
            max_size=3,
            unique_by=lambda w: w[1],
        ),
        min_size=1,
        max_size=30,
    ),
    st.data(),
)
def test_random_histories_correct_streams_pass_and_drops_are_caught(
    workload: list[list[tuple[EventType, bytes]]], data: st.DataObject
) -> None:
    revs = mvcc([[(k, key, str(i).encode()) for k, key in w] for i, w in enumerate(workload)])
    log = EventLog.from_events(e for evs in revs for e in evs)
    spec = WatchedRange(b"a", b"c", prev_kv=True)  # a and b, not c
    items = [StreamItem(ItemKind.CREATED, 2)]
    for evs in revs:
        mine = tuple(e for e in evs if spec.wants(e))
        if mine:
            items.append(StreamItem(ItemKind.EVENTS, mine[0].kv.mod_revision, mine))
    assert check_watches(log, [WatchStream("w", spec, items)])["valid"] is True
    if len(items) > 2:
        drop = data.draw(st.integers(1, len(items) - 2))  # not the last: it sets the range
        broken = items[:drop] + items[drop + 1 :]
        res = check_watches(log, [WatchStream("w", spec, broken)])
        assert res["anomaly_types"] == ["missed"]


@pytest.mark.parametrize("n", [20_000])
def test_fast_on_a_long_log(n: int) -> None:
    revs = mvcc([[(PUT, b"k%d" % (i % 50), b"v")] for i in range(n)])
    log = EventLog.from_events(e for evs in revs for e in evs)
    spec = WatchedRange(b"k", b"l", prev_kv=True)
    items = [StreamItem(ItemKind.CREATED, 2)]
    items += [StreamItem(ItemKind.EVENTS, evs[0].kv.mod_revision, tuple(evs)) for evs in revs]
    streams = [WatchStream(f"w{i}", spec, items) for i in range(3)]
    assert check_watches(log, streams)["valid"] is True
