"""Basic checkers: small safety properties that need no search.

* :func:`check_revision_monotonic` -- every response header revision a client sees never
  decreases across its operations (etcd's "revisions only move forward" for one session).
* :func:`check_convergence` -- after healing, every member reports the same revision and
  content hash.
* :func:`check_fencing` -- a lock judged by fencing tokens: the guarded resource never
  accepts a write with a token older than one it already accepted, and two holders with the
  same token never hold the lock at overlapping times.
* :func:`check_lease_expiry` -- keys of a lease whose last keep-alive was at T with TTL t are
  gone by T + t + slack; keys of a lease still live are there.
* :func:`check_set` -- every acknowledged add is in the final read; nothing is read that was
  never attempted.

Each returns ``{"valid": bool, "anomaly_types": [...], "anomalies": {type: examples},
"counts": {...}, "stats": {...}}``, the shape of the Elle and watch checkers.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from jepsen_like.checker.anomalies import Anomalies
from jepsen_like.checker.history import Completed

__all__ = [
    "FencedWrite",
    "LeaseRecord",
    "LockHold",
    "Presence",
    "check_convergence",
    "check_fencing",
    "check_lease_expiry",
    "check_revision_monotonic",
    "check_set",
]


class _Result(Anomalies):
    __slots__ = ()

    def done(self, stats: dict[str, Any]) -> dict[str, Any]:
        types = sorted(self.anomalies)
        return {
            "valid": not types,
            "anomaly_types": types,
            "anomalies": self.anomalies,
            "counts": self.counts,
            "stats": stats,
        }


# --- revision monotonicity ------------------------------------------------------------------


def _header_revision(c: Completed) -> int | None:
    rev = c.extra.get("revision")
    return rev if isinstance(rev, int) and not isinstance(rev, bool) else None


def check_revision_monotonic(
    ops: Iterable[Completed],
    revision_of: Callable[[Completed], int | None] = _header_revision,
    client_of: Callable[[Completed], Hashable] = lambda c: c.process,
    max_examples: int = 8,
) -> dict[str, Any]:
    """Per client, header revisions in operation order never decrease.

    Only successful operations count (a failed or unknown one saw no response).  By default
    the revision is ``extra["revision"]`` and the client is the process; operations of one
    client are ordered by invocation time (a client runs one at a time).
    """
    res = _Result(max_examples)
    last: dict[Hashable, tuple[int, int]] = {}  # client -> (revision, op index)
    checked = 0
    for c in sorted((c for c in ops if c.ok), key=lambda c: (c.invoke_ns, c.index)):
        rev = revision_of(c)
        if rev is None:
            continue
        checked += 1
        client = client_of(c)
        prev = last.get(client)
        if prev is not None and rev < prev[0]:
            res.add(
                "revision-went-back",
                {"client": client, "op": c.index, "revision": rev, "after": prev[0], "of": prev[1]},
            )
        if prev is None or rev >= prev[0]:
            last[client] = (rev, c.index)
    return res.done({"ops_checked": checked, "clients": len(last)})


# --- convergence ----------------------------------------------------------------------------


def check_convergence(
    statuses: Sequence[Mapping[str, Any]], max_examples: int = 8
) -> dict[str, Any]:
    """All members report the same ``revision`` and ``hash`` (status dicts with ``member``).

    A member whose status is missing a field, or fewer than one status, is itself a failure:
    convergence cannot be shown.
    """
    res = _Result(max_examples)
    if not statuses:
        res.add("no-status", {})
    seen: dict[tuple[Any, Any], list[Any]] = {}
    for i, s in enumerate(statuses):
        member = s.get("member", i)
        if "revision" not in s or "hash" not in s:
            res.add("incomplete-status", {"member": member, "status": dict(s)})
            continue
        seen.setdefault((s["revision"], s["hash"]), []).append(member)
    if len(seen) > 1:
        groups = [{"revision": r, "hash": h, "members": m} for (r, h), m in seen.items()]
        res.add("diverged", {"groups": groups})
    return res.done({"members": len(statuses)})


# --- lock fencing ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LockHold:
    """A client believed it held the lock with ``token`` from ``start_ns`` to ``end_ns``
    (``None``: until the end of the run, or unknown)."""

    holder: Hashable
    token: int
    start_ns: int
    end_ns: int | None


@dataclass(frozen=True, slots=True)
class FencedWrite:
    """A write the guarded resource accepted, in the order it accepted them."""

    token: int
    holder: Hashable = None
    time_ns: int = 0


def check_fencing(
    holds: Sequence[LockHold], accepted: Sequence[FencedWrite], max_examples: int = 8
) -> dict[str, Any]:
    """Fencing-token mutual exclusion.

    ``stale-token``: the resource accepted a write whose token is older than one it already
    accepted.  ``shared-token``: two holds with the same token overlap in time (two holders
    for one token; with distinct tokens overlap is allowed, fencing makes it harmless).
    """
    res = _Result(max_examples)
    high: FencedWrite | None = None
    for i, w in enumerate(accepted):
        if high is not None and w.token < high.token:
            res.add(
                "stale-token",
                {"write": i, "token": w.token, "holder": w.holder, "after": high.token},
            )
        if high is None or w.token > high.token:
            high = w
    by_token: dict[int, list[LockHold]] = {}
    for h in holds:
        by_token.setdefault(h.token, []).append(h)
    for token, hs in by_token.items():
        hs.sort(key=lambda h: h.start_ns)
        for a, b in pairwise(hs):
            if a.end_ns is None or b.start_ns <= a.end_ns:
                res.add(
                    "shared-token",
                    {"token": token, "holders": [a.holder, b.holder], "at": b.start_ns},
                )
    return res.done({"holds": len(holds), "accepted_writes": len(accepted)})


# --- lease expiry ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """A lease as the client saw it: granted at ``granted_ns`` with ``ttl_s``; its last
    acknowledged keep-alive at ``last_keepalive_ns`` (the grant if none); the keys put with it.
    ``revoked_ns`` when the client revoked it."""

    lease_id: int
    ttl_s: float
    granted_ns: int
    last_keepalive_ns: int
    keys: tuple[Hashable, ...]
    revoked_ns: int | None = None


@dataclass(frozen=True, slots=True)
class Presence:
    """A read of ``key`` invoked at ``invoke_ns`` and returned at ``return_ns``: was it there?"""

    key: Hashable
    present: bool
    invoke_ns: int
    return_ns: int


def check_lease_expiry(
    leases: Sequence[LeaseRecord],
    reads: Iterable[Presence],
    slack_s: float = 1.0,
    max_examples: int = 8,
) -> dict[str, Any]:
    """``outlived-lease``: a read invoked after T + ttl + slack (or after the revoke + slack)
    still saw the key.  ``lost-before-expiry``: a read that returned before the lease could
    have expired (T + ttl - slack), after the key was put, found it missing.

    Keys are assumed not to be deleted by the workload other than through their lease.
    """
    res = _Result(max_examples)
    slack = int(slack_s * 1e9)
    by_key: dict[Hashable, list[LeaseRecord]] = {}
    for lease in leases:
        for k in lease.keys:
            by_key.setdefault(k, []).append(lease)
    checked = 0
    for r in reads:
        for lease in by_key.get(r.key, ()):
            ttl = int(lease.ttl_s * 1e9)
            expires = lease.last_keepalive_ns + ttl
            if lease.revoked_ns is not None:
                expires = min(expires, lease.revoked_ns)
            checked += 1
            if r.present and r.invoke_ns > expires + slack:
                res.add(
                    "outlived-lease",
                    {
                        "lease": lease.lease_id,
                        "key": r.key,
                        "read_at": r.invoke_ns,
                        "expired_by": expires + slack,
                    },
                )
            live_until = lease.last_keepalive_ns + ttl - slack
            if lease.revoked_ns is not None:
                live_until = min(live_until, lease.revoked_ns)
            if not r.present and lease.granted_ns <= r.invoke_ns and r.return_ns < live_until:
                res.add(
                    "lost-before-expiry",
                    {
                        "lease": lease.lease_id,
                        "key": r.key,
                        "read_at": r.invoke_ns,
                        "live_until": live_until,
                    },
                )
    return res.done({"leases": len(leases), "reads_checked": checked})


# --- set ------------------------------------------------------------------------------------


def check_set(
    adds: Iterable[Completed], final_read: Iterable[Hashable], max_examples: int = 8
) -> dict[str, Any]:
    """The set workload: ``adds`` are paired ``add`` operations (``value`` = the element),
    ``final_read`` the elements read at the end, after healing.

    ``lost``: acknowledged adds missing from the final read.  ``unexpected``: elements read
    that no add ever attempted.  ``duplicated``: an element read twice.  Adds that failed
    must not appear (``failed-add-present``); unknown ones may or may not.
    """
    res = _Result(max_examples)
    ok: set[Hashable] = set()
    failed: set[Hashable] = set()
    attempted: set[Hashable] = set()
    for c in adds:
        attempted.add(c.value)
        if c.ok:
            ok.add(c.value)
        elif c.failed:
            failed.add(c.value)
    read = list(final_read)
    present = set(read)
    if len(present) != len(read):
        counts: dict[Hashable, int] = {}
        for x in read:
            counts[x] = counts.get(x, 0) + 1
        for x, n in counts.items():
            if n > 1:
                res.add("duplicated", {"element": x, "times": n})
    for x in sorted(ok - present, key=repr):
        res.add("lost", {"element": x})
    for x in sorted(present - attempted, key=repr):
        res.add("unexpected", {"element": x})
    for x in sorted((failed - ok) & present, key=repr):
        res.add("failed-add-present", {"element": x})
    return res.done(
        {
            "attempted": len(attempted),
            "acknowledged": len(ok),
            "read": len(present),
            "recovered_unknown": len(present & (attempted - ok - failed)),
        }
    )
