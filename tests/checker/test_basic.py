"""Basic checkers: each one flags its anomaly and accepts a clean history of the same shape."""

from __future__ import annotations

import time
from typing import Any

from jepsen_like.checker.basic import (
    FencedWrite,
    LeaseRecord,
    LockHold,
    Presence,
    check_convergence,
    check_fencing,
    check_lease_expiry,
    check_revision_monotonic,
    check_set,
)
from jepsen_like.checker.history import Completed, Op, OpType, Outcome, pair

S = 1_000_000_000  # one second in ns


def done(i: int, process: int, rev: int | None, outcome: Outcome = Outcome.OK) -> Completed:
    extra: dict[str, Any] = {} if rev is None else {"revision": rev}
    ret = None if outcome is Outcome.UNKNOWN else 10 * i + 5
    return Completed(i, process, "get", "k", None, None, outcome, 10 * i, ret, None, extra)


def test_revisions_per_client() -> None:
    ok = [done(0, 1, 5), done(1, 2, 3), done(2, 1, 5), done(3, 2, 4), done(4, 1, 7)]
    assert check_revision_monotonic(ok)["valid"] is True
    bad = [*ok, done(5, 1, 6)]
    res = check_revision_monotonic(bad)
    assert res["anomaly_types"] == ["revision-went-back"]
    assert res["anomalies"]["revision-went-back"][0] == {
        "client": 1,
        "op": 5,
        "revision": 6,
        "after": 7,
        "of": 4,
    }


def test_revisions_ignore_failed_and_unknown_ops() -> None:
    h = [done(0, 1, 9), done(1, 1, 2, Outcome.FAIL), done(2, 1, 1, Outcome.UNKNOWN), done(3, 1, 9)]
    assert check_revision_monotonic(h)["valid"] is True


def test_revisions_from_a_recorded_history() -> None:
    ops = [
        Op(0, 1, OpType.INVOKE, "get", "k", None, 1),
        Op(1, 1, OpType.OK, "get", "k", "v", 2, extra={"revision": 4}),
        Op(2, 1, OpType.INVOKE, "put", "k", "w", 3),
        Op(3, 1, OpType.OK, "put", "k", "w", 4, extra={"revision": 3}),
    ]
    assert check_revision_monotonic(pair(ops))["anomaly_types"] == ["revision-went-back"]
    assert check_revision_monotonic(pair(ops[:2]))["valid"] is True


def test_revision_check_is_fast() -> None:
    ops = [done(i, i % 16, i) for i in range(50_000)]
    t = time.perf_counter()
    assert check_revision_monotonic(ops)["valid"] is True
    assert time.perf_counter() - t < 2.0


def test_convergence() -> None:
    same: list[dict[str, Any]] = [
        {"member": m, "revision": 9, "hash": 123} for m in ("n1", "n2", "n3")
    ]
    assert check_convergence(same)["valid"] is True
    split = [*same[:2], {"member": "n3", "revision": 9, "hash": 124}]
    res = check_convergence(split)
    assert res["anomaly_types"] == ["diverged"]
    groups = res["anomalies"]["diverged"][0]["groups"]
    assert sorted(g["members"] for g in groups) == [["n1", "n2"], ["n3"]]
    behind = [*same[:2], {"member": "n3", "revision": 8, "hash": 123}]
    assert check_convergence(behind)["anomaly_types"] == ["diverged"]
    assert check_convergence([])["anomaly_types"] == ["no-status"]
    assert check_convergence([*same, {"member": "n4"}])["anomaly_types"] == ["incomplete-status"]


def test_fencing_tokens() -> None:
    holds = [LockHold("a", 1, 0, 10), LockHold("b", 2, 8, 20), LockHold("c", 3, 21, None)]
    writes = [FencedWrite(1, "a"), FencedWrite(2, "b"), FencedWrite(2, "b"), FencedWrite(3, "c")]
    assert check_fencing(holds, writes)["valid"] is True  # a and b overlap: distinct tokens
    stale = [*writes[:2], FencedWrite(1, "a"), writes[3]]
    res = check_fencing(holds, stale)
    assert res["anomaly_types"] == ["stale-token"]
    assert res["anomalies"]["stale-token"][0]["after"] == 2


def test_shared_token_holds() -> None:
    apart = [LockHold("a", 5, 0, 10), LockHold("b", 5, 11, 20)]
    assert check_fencing(apart, [])["valid"] is True
    overlap = [LockHold("a", 5, 0, 10), LockHold("b", 5, 10, 20)]
    assert check_fencing(overlap, [])["anomaly_types"] == ["shared-token"]
    open_ended = [LockHold("a", 5, 0, None), LockHold("b", 5, 100, 200)]
    assert check_fencing(open_ended, [])["anomaly_types"] == ["shared-token"]


LEASE = LeaseRecord(7, ttl_s=5, granted_ns=0, last_keepalive_ns=10 * S, keys=("k",))


def test_lease_keys_must_go_after_expiry() -> None:
    gone = [Presence("k", True, 12 * S, 12 * S), Presence("k", False, 17 * S, 17 * S)]
    assert check_lease_expiry([LEASE], gone, slack_s=1)["valid"] is True
    stays = [Presence("k", True, 16 * S + 1, 16 * S + 2)]  # past 10 + 5 + 1 seconds
    res = check_lease_expiry([LEASE], stays, slack_s=1)
    assert res["anomaly_types"] == ["outlived-lease"]
    within_slack = [Presence("k", True, 15 * S + 1, 15 * S + 2)]
    assert check_lease_expiry([LEASE], within_slack, slack_s=1)["valid"] is True


def test_lease_keys_must_stay_while_live() -> None:
    lost = [Presence("k", False, 3 * S, 4 * S)]
    assert check_lease_expiry([LEASE], lost)["anomaly_types"] == ["lost-before-expiry"]
    other_key = [Presence("j", False, 3 * S, 4 * S)]
    assert check_lease_expiry([LEASE], other_key)["valid"] is True


def test_revoked_lease() -> None:
    revoked = LeaseRecord(7, 5, 0, 10 * S, ("k",), revoked_ns=11 * S)
    assert check_lease_expiry([revoked], [Presence("k", False, 12 * S, 12 * S)])["valid"] is True
    res = check_lease_expiry([revoked], [Presence("k", True, 13 * S, 13 * S)], slack_s=1)
    assert res["anomaly_types"] == ["outlived-lease"]


def add(i: int, element: int, outcome: Outcome) -> Completed:
    ret = None if outcome is Outcome.UNKNOWN else i + 1
    return Completed(i, i, "add", None, element, None, outcome, i, ret)


ADDS = [
    add(0, 1, Outcome.OK),
    add(1, 2, Outcome.FAIL),
    add(2, 3, Outcome.UNKNOWN),
    add(3, 4, Outcome.OK),
]


def test_set_workload() -> None:
    assert check_set(ADDS, [1, 4])["valid"] is True
    res = check_set(ADDS, [1, 3, 4])
    assert res["valid"] is True and res["stats"]["recovered_unknown"] == 1
    assert check_set(ADDS, [1])["anomaly_types"] == ["lost"]
    assert check_set(ADDS, [1, 4, 9])["anomaly_types"] == ["unexpected"]
    assert check_set(ADDS, [1, 2, 4])["anomaly_types"] == ["failed-add-present"]
    assert check_set(ADDS, [1, 4, 4])["anomaly_types"] == ["duplicated"]
