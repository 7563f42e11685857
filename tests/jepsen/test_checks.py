"""The runner's own checks on synthetic histories: each must flag its anomaly and accept a
clean history of the same shape; the report and ``check DIR`` work on a stored run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jepsen_like.cli import main
from jepsen_like.report import anomaly_ops, nemesis_intervals, render
from jepsen_like.workloads.base import NEMESIS, Event, write_history_file
from jepsen_like.workloads.lease import TTL, check_lease
from jepsen_like.workloads.register import Register
from jepsen_like.workloads.set import check_set
from jepsen_like.workloads.watch import check_watch

S = 1_000_000_000


class H:
    """A history builder: ``h.op(p, f, key, value, t0, t1, type, out)`` adds two events."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def ev(self, p: int, type_: str, f: str, key: Any, value: Any, t: float, **extra: Any) -> None:
        self.events.append(
            {
                "index": len(self.events),
                "process": p,
                "type": type_,
                "f": f,
                "key": key,
                "value": value,
                "time_ns": int(t * S),
                "node": None,
                "extra": extra,
            }
        )

    def op(
        self,
        p: int,
        f: str,
        key: Any,
        value: Any,
        t0: float,
        t1: float,
        type_: str = "ok",
        out: Any = None,
        **extra: Any,
    ) -> int:
        idx = len(self.events)
        self.ev(p, "invoke", f, key, value, t0)
        self.ev(p, type_, f, key, value if out is None else out, t1, **extra)
        return idx


# --- register -----------------------------------------------------------------------------


def _register(stale: bool) -> list[Event]:
    h = H()
    h.op(0, "write", "r/0", 1, 0.0, 0.1)
    h.op(1, "write", "r/1", 3, 0.0, 0.1)
    h.op(0, "write", "r/0", 2, 0.2, 0.3)
    h.op(1, "cas", "r/1", [4, 1], 0.2, 0.3, "fail", error="cas")
    h.op(1, "read", "r/0", None, 0.4, 0.5, out=1 if stale else 2)
    return h.events


def test_register_flags_a_stale_read_and_accepts_a_fresh_one() -> None:
    bad = Register().check(_register(stale=True), {})["linearizable"]
    good = Register().check(_register(stale=False), {})["linearizable"]
    assert good["valid"] is True
    assert bad["valid"] is False
    assert "r/0" in bad["report"] and bad["anomaly_ops"][0] == 8


def test_register_failed_cas_observes_the_value() -> None:
    h = H()
    h.op(0, "write", "r/0", 1, 0.0, 0.1)
    h.op(0, "cas", "r/0", [1, 2], 0.2, 0.3, "fail", error="cas")  # but the value WAS 1
    assert Register().check(h.events, {})["linearizable"]["valid"] is False


def test_register_unknown_write_may_apply_later() -> None:
    h = H()
    h.op(0, "write", "r/0", 1, 0.0, 0.1)
    h.op(1, "write", "r/0", 2, 0.2, 0.3, "info")
    h.op(0, "read", "r/0", None, 5.0, 5.1, out=2)
    assert Register().check(h.events, {})["linearizable"]["valid"] is True


# --- set ----------------------------------------------------------------------------------


def _set(final: dict[str, list[int]]) -> list[Event]:
    h = H()
    h.op(0, "add", "s/1", 1, 0.0, 0.1)
    h.op(1, "add", "s/2", 2, 0.0, 0.1)
    h.op(0, "add", "s/3", 3, 0.2, 0.3, "info")
    h.op(1, "add", "s/0", 4, 0.2, 0.3, "fail", error="contention")
    h.op(9, "final-read", "s/", None, 1.0, 1.1, out=final)
    return h.events


def test_set_accepts_acknowledged_and_unknown_elements() -> None:
    assert check_set(_set({"s/1": [1], "s/2": [2, 3]}))["valid"] is True
    assert check_set(_set({"s/1": [1], "s/2": [2]}))["valid"] is True


def test_set_flags_duplicates_lost_and_unexpected() -> None:
    dup = check_set(_set({"s/1": [1, 1], "s/2": [2]}))
    assert dup["valid"] is False and dup["duplicates"] == [1] and dup["anomaly_ops"]
    lost = check_set(_set({"s/1": [1]}))
    assert lost["valid"] is False and lost["lost"] == [2]
    failed_present = check_set(_set({"s/1": [1], "s/2": [2], "s/0": [4]}))
    assert failed_present["valid"] is False and failed_present["unexpected"] == [4]
    never = check_set(_set({"s/1": [1, 99], "s/2": [2]}))
    assert never["unexpected"] == [99]


def test_set_without_final_read_is_unknown() -> None:
    assert check_set(_set({})[:-2])["valid"] == "unknown"


# --- watch --------------------------------------------------------------------------------


def _put(key: str, value: str, rev: int, version: int, prev: str | None) -> dict[str, Any]:
    create = rev if version == 1 else rev - version + 1
    return {"type": "put", "key": key, "value": value, "create": create, "mod": rev,
            "version": version, "prev": prev}  # fmt: skip


TRUTH = [_put("w/a", "1", 2, 1, None), _put("w/b", "2", 3, 1, None), _put("w/a", "3", 4, 2, "1")]


def _writes() -> list[Event]:
    h = H()
    h.op(0, "put", "w/a", "1", 0.0, 0.1, out={"revision": 2})
    h.op(1, "put", "w/b", "2", 0.0, 0.1, out={"revision": 3})
    h.op(0, "put", "w/a", "3", 0.2, 0.3, out={"revision": 4})
    return h.events


def _rows(events_by_resp: list[list[dict[str, Any]]], resume_at: int | None = None) -> list[Any]:
    rows: list[Any] = [{"watcher": "n1", "resume": 2}]
    for i, evs in enumerate(events_by_resp):
        if resume_at is not None and i == resume_at:
            rows.append({"watcher": "n1", "resume": evs[0]["mod"]})
        rev = evs[0]["mod"]
        rows.append({"watcher": "n1", "revision": rev, "events": evs,
                     "revisions": sorted({e["mod"] for e in evs})})  # fmt: skip
    return rows


STATE = [{"watcher": "n1", "last": 4, "end": 4, "start": 2}]


def test_watch_accepts_a_faithful_stream_with_a_resume() -> None:
    res = check_watch(_writes(), _rows([[e] for e in TRUTH], resume_at=1), TRUTH, STATE)["watch"]
    assert res["valid"] is True, res


def test_watch_flags_gap_duplicate_and_wrong_prev_kv() -> None:
    gap = check_watch(_writes(), _rows([[TRUTH[0]], [TRUTH[2]]]), TRUTH, STATE)["watch"]
    assert gap["valid"] is False and gap["problems"][0]["kind"] == "stream-differs"
    dup_rows = _rows([[TRUTH[0]], [TRUTH[1]], [TRUTH[1]], [TRUTH[2]]])
    dup = check_watch(_writes(), dup_rows, TRUTH, STATE)["watch"]
    assert dup["valid"] is False
    bad_truth = [*TRUTH[:2], {**TRUTH[2], "prev": "zzz"}]
    prev = check_watch(_writes(), _rows([[e] for e in bad_truth]), bad_truth, STATE)["watch"]
    assert any(p["kind"] == "bad-prev-kv" for p in prev["problems"])


def test_watch_flags_an_acknowledged_write_missing_from_the_truth() -> None:
    truth = TRUTH[:2]
    state = [{**STATE[0], "last": 3}]
    res = check_watch(_writes(), _rows([[e] for e in truth]), truth, state)["watch"]
    assert res["valid"] is False
    assert res["problems"][0]["kind"] == "write-missing-from-watch" and res["anomaly_ops"] == [4]


def test_watch_flags_a_stalled_watcher() -> None:
    state = [{**STATE[0], "last": 3}]
    res = check_watch(_writes(), _rows([[e] for e in TRUTH[:2]]), TRUTH, state)["watch"]
    assert any(p["kind"] == "stalled" for p in res["problems"])


# --- lease --------------------------------------------------------------------------------


def _lease(final: dict[str, str], live_gap: float = 1.0) -> list[Event]:
    h = H()
    h.op(0, "grant", "l/", None, 0.0, 0.1, out=[11, "l/11"])
    h.op(0, "keepalive", "l/11", 11, 0.5, 0.6, out=TTL)
    h.op(0, "revoke", "l/11", 11, 1.0, 1.1, out=11)
    h.op(0, "grant", "l/", None, 1.2, 1.3, out=[12, "l/12"])
    h.op(0, "abandon", "l/12", 12, 1.4, 1.4, out=12)
    h.op(500, "grant", "l/live-500", None, 0.0, 0.1, out=[13, "l/live-500"])
    t = 0.1
    while t < 20:
        t += live_gap
        h.op(500, "keepalive", "l/live-500", 13, t, t + 0.01, out=TTL)
    h.op(9, "final-read", "l/", None, 20.0, 20.1, out=final)
    return h.events


def test_lease_accepts_expired_and_live_keys_where_they_belong() -> None:
    assert check_lease(_lease({"l/live-500": "13"}))["valid"] is True


def test_lease_flags_zombie_and_early_expiry() -> None:
    zombie = check_lease(_lease({"l/live-500": "13", "l/12": "12"}))
    assert zombie["valid"] is False and zombie["zombies"][0]["key"] == "l/12"
    revoked = check_lease(_lease({"l/live-500": "13", "l/11": "11"}))
    assert revoked["valid"] is False and revoked["zombies"][0]["key"] == "l/11"
    lost = check_lease(_lease({}))
    assert lost["valid"] is False and lost["lost"][0]["key"] == "l/live-500"
    # a keeper that went quiet for longer than TTL/2 proves nothing about early expiry
    assert check_lease(_lease({}, live_gap=TTL))["valid"] is True


# --- report and `check DIR` ---------------------------------------------------------------


def _run_dir(tmp_path: Path, events: list[Event]) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    opts = {"workload": "register", "nemesis": "partition", "seed": 1, "time": 1, "nodes": 3}
    (d / "run.json").write_text(json.dumps(opts))
    write_history_file(d / "history.jsonl", events)
    return d


def _with_nemesis(events: list[Event]) -> list[Event]:
    h = H()
    h.events = [dict(e) for e in events]
    h.ev(NEMESIS, "invoke", "start-partition", None, None, 0.15)
    h.ev(NEMESIS, "info", "start-partition", None, {"shape": "one"}, 0.15)
    h.ev(NEMESIS, "invoke", "stop-partition", None, None, 0.45)
    h.ev(NEMESIS, "info", "stop-partition", None, {"healed": True}, 0.45)
    h.events.sort(key=lambda e: e["time_ns"])
    for i, e in enumerate(h.events):
        e["index"] = i
    return h.events


def test_check_dir_exit_codes_results_and_report(tmp_path: Path) -> None:
    bad = _run_dir(tmp_path, _with_nemesis(_register(stale=True)))
    assert main(["check", str(bad)]) == 1
    doc = json.loads((bad / "results.json").read_text())
    assert doc["valid"] is False and doc["checks"]["linearizable"]["valid"] is False
    page = (bad / "report.html").read_text()
    assert "INVALID" in page and "<svg" in page and "First anomaly" in page
    assert 'stroke="black"' in page, "the anomaly's operations are outlined"
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    good = tmp_path / "good"
    good.mkdir()
    d = _run_dir(good, _register(stale=False))
    assert main(["check", str(d)]) == 0
    assert "VALID" in (d / "report.html").read_text()


def test_report_pieces() -> None:
    events = _with_nemesis(_register(stale=True))
    ivs = nemesis_intervals(events)
    assert len(ivs) == 1 and ivs[0][0] == int(0.15 * S) and ivs[0][1] == int(0.45 * S)
    doc = {"valid": False, "checks": {"x": {"valid": False, "anomaly_ops": [3, 1]}}}
    assert anomaly_ops(doc) == [3, 1]
    assert "<rect" in render(doc, events)


def test_check_of_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    assert main(["check", str(tmp_path)]) == 3


def _kv(rev: int, key: str, value: str, version: int, create: int = 0) -> dict[str, Any]:
    return {"key": key, "value": value, "create_revision": create or rev,
            "mod_revision": rev, "version": version, "lease": 0}  # fmt: skip


def _item(rev: int, key: str, value: str, version: int, prev: Any = None) -> dict[str, Any]:
    create = prev["create_revision"] if prev else rev
    ev = {"type": "put", **_kv(rev, key, value, version, create), "prev_kv": prev}
    return {"kind": "events", "revision": rev, "events": [ev]}


def test_watch_guarantees_use_the_checkers_validators() -> None:
    from jepsen_like.checker.watch import item_from_plain
    from jepsen_like.workloads.watch import WatchWorkload

    truth = [
        _item(2, "w/a", "1", 1),
        _item(3, "w/b", "2", 1),
        _item(4, "w/a", "3", 2, _kv(2, "w/a", "1", 1)),
    ]
    item_from_plain(truth[0])  # the plain form is the checkers' own
    state = [{"watcher": "n1", "last": 4, "end": 4, "start": 2}]
    whole = [{"watcher": "n1", "kind": "resume", "revision": 2}] + [
        {"watcher": "n1", **t} for t in truth
    ]
    aux: dict[str, list[Any]] = {"watch_truth_items": truth, "watch_state": state}
    good = WatchWorkload().check(_writes(), {**aux, "watch_items": whole})
    assert good["watch_guarantees"]["valid"] is True, good
    missed = WatchWorkload().check(_writes(), {**aux, "watch_items": whole[:2] + whole[3:]})
    assert missed["watch_guarantees"]["valid"] is False
    assert "missed" in missed["watch_guarantees"]["anomaly_types"]
