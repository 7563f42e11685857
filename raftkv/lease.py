"""The lessor: leases, their attached keys, and the leader's expiry clock.

State comes in two kinds (see docs/api.md, "Leases"):

* **Replicated** (changed only by applied log entries, identical on every member, part of the
  snapshot and the hash): each lease's id, granted TTL, *remaining budget* and attached keys,
  and the next automatic id.  The budget is the remaining TTL the last checkpoint recorded; it
  starts at the TTL, is lowered by checkpoints and reset to the TTL by a keep-alive.
* **Leader-local** (only meaningful on the leader, never compared between members): each
  lease's deadline on the leader's own monotonic clock.  Only the leader-local methods
  (:meth:`Lessor.promote`, :meth:`Lessor.renew`, :meth:`Lessor.expired`,
  :meth:`Lessor.checkpoint`, :meth:`Lessor.remaining`) read or set it, always with the ``now``
  the caller passes; the leader-stamped ``now`` of a log entry is never compared with it, since
  it may come from another machine's clock.

Expiry is decided by the leader (:meth:`Lessor.expired` returns ids it must propose as a
:class:`~raftkv.api.LeaseExpireRequest`) and happens on every member when that entry applies.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any

from raftkv.api import LeaseCheckpoint, LeaseCheckpointRequest
from raftkv.errors import (
    CorruptionError,
    InvalidArgument,
    LeaseExists,
    LeaseNotFound,
    NotLeader,
)

MAX_LEASE_ID = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class LeaseConfig:
    min_ttl: int = 1
    """Granted TTLs below this are raised to it (etcd raises them to its minimum TTL)."""
    max_ttl: int = 9_000_000_000
    """Granted TTLs above this are refused with InvalidArgument (etcd's MaxLeaseTTL)."""
    max_expire_per_call: int = 500
    """At most this many ids per :meth:`Lessor.expired` call; called every 0.5 s this is etcd's
    1000 revocations/s (``leaseRevokeRate``)."""
    expire_retry_interval: float = 3.0
    """An id returned by :meth:`Lessor.expired` is not returned again before this many
    seconds (its LeaseExpire entry may still be on its way through the log)."""
    stall_threshold: float = math.inf
    """If two consecutive leader-local calls are further apart than this, the leader was
    stalled; deadlines are pushed back by the gap (clients could not renew meanwhile).  Off by
    default; a node that calls :meth:`Lessor.expired` every tick should set a few ticks."""
    checkpoint_min_drop: float = 1.0
    """:meth:`Lessor.checkpoint` reports a lease only if its budget dropped at least this much
    since the last recorded checkpoint (bounds the log traffic)."""


class Lease:
    """One lease.  ``ttl``, ``remaining`` and ``keys`` are replicated; the rest is leader-local."""

    __slots__ = (
        "budget_deadline",
        "deadline",
        "id",
        "keys",
        "recorded_at",
        "remaining",
        "retry_at",
        "ttl",
    )

    def __init__(self, lease_id: int, ttl: int, remaining: float) -> None:
        self.id = lease_id
        self.ttl = ttl
        # Invariant: 0 <= remaining <= ttl.
        self.remaining = remaining
        self.keys: set[bytes] = set()
        # Leader-local: None until the leader has set a clock for this lease.
        self.deadline: float | None = None
        self.budget_deadline: float | None = None
        self.retry_at = -math.inf
        # Member-local (never replicated, never hashed): this member's clock when it applied
        # the entry that recorded ``remaining``; None if unknown (restored from a snapshot).
        self.recorded_at: float | None = None

    def effective_remaining(self, now: float) -> float:
        """The recorded budget minus the time since this member applied it."""
        if self.recorded_at is None:
            return self.remaining
        return max(0.0, self.remaining - max(0.0, now - self.recorded_at))


class Lessor:
    """Deterministic lease bookkeeping; all time comes in as ``now`` (seconds)."""

    def __init__(self, config: LeaseConfig | None = None) -> None:
        self.config = config or LeaseConfig()
        self._leases: dict[int, Lease] = {}
        self._next_id = 1
        # leader-local
        self._primary = False
        self._heap: list[tuple[float, int]] = []  # (deadline, id), lazily invalidated
        self._last_now: float | None = None
        self._unclocked: set[int] = set()  # leases the leader has not started a clock for
        self.apply_clock: float | None = None
        """Member-local: the node sets this to its lease clock before applying each entry, so
        a recorded budget carries *when* this member learned it (see :meth:`promote`)."""

    # --- replicated operations (applied from the log on every member) ---------------------

    def grant(self, lease_id: int, ttl: int) -> Lease:
        """Create a lease (``lease_id`` 0: the next free automatic id).  LeaseExists if taken;
        InvalidArgument for a negative id or a TTL over the maximum."""
        if lease_id < 0 or lease_id > MAX_LEASE_ID:
            raise InvalidArgument(f"lease id {lease_id} out of range")
        if ttl > self.config.max_ttl:
            raise InvalidArgument(f"lease ttl {ttl} too large (max {self.config.max_ttl})")
        if lease_id == 0:
            while self._next_id in self._leases:
                self._next_id += 1
            lease_id = self._next_id
            self._next_id += 1
        elif lease_id in self._leases:
            raise LeaseExists(lease_id)
        ttl = max(ttl, self.config.min_ttl)
        lease = Lease(lease_id, ttl, float(ttl))
        lease.recorded_at = self.apply_clock
        self._leases[lease_id] = lease
        self._unclocked.add(lease_id)
        return lease

    def revoke(self, lease_id: int) -> list[bytes]:
        """Forget the lease; returns its attached keys (sorted) for the caller to delete in one
        revision.  LeaseNotFound if absent."""
        lease = self._leases.pop(lease_id, None)
        if lease is None:
            raise LeaseNotFound(lease_id)
        return sorted(lease.keys)

    def attach(self, lease_id: int, key: bytes) -> None:
        self._leases[lease_id].keys.add(key)

    def detach(self, lease_id: int, key: bytes) -> None:
        lease = self._leases.get(lease_id)
        if lease is not None:
            lease.keys.discard(key)

    def apply_checkpoint(self, req: LeaseCheckpointRequest) -> None:
        """Record remaining budgets (ids that no longer exist are skipped)."""
        for cp in req.checkpoints:
            lease = self._leases.get(cp.id)
            if lease is not None:
                lease.remaining = min(max(cp.remaining_ttl, 0.0), float(lease.ttl))
                lease.recorded_at = self.apply_clock

    def apply_keep_alive(self, lease_id: int) -> Lease:
        """A keep-alive that went through the log: budget back to the full TTL; the leader
        restarts this lease's clock at its next leader-local call."""
        lease = self.get(lease_id)
        lease.remaining = float(lease.ttl)
        lease.recorded_at = self.apply_clock
        lease.deadline = lease.budget_deadline = None
        self._unclocked.add(lease_id)
        return lease

    def get(self, lease_id: int) -> Lease:
        lease = self._leases.get(lease_id)
        if lease is None:
            raise LeaseNotFound(lease_id)
        return lease

    def exists(self, lease_id: int) -> bool:
        return lease_id in self._leases

    def leases(self) -> list[int]:
        return sorted(self._leases)

    def __len__(self) -> int:
        return len(self._leases)

    # --- leader-local operations ----------------------------------------------------------

    @property
    def is_primary(self) -> bool:
        return self._primary

    def _set_clock(self, lease: Lease, deadline: float, budget_deadline: float) -> None:
        lease.deadline = deadline
        lease.budget_deadline = budget_deadline
        heapq.heappush(self._heap, (deadline, lease.id))

    def _observe(self, now: float) -> None:
        """Start clocks of leases granted since the last call; absorb a leader stall."""
        last = self._last_now
        if last is not None and now - last > self.config.stall_threshold:
            gap = now - last
            self._heap = []
            for lease in self._leases.values():
                if lease.deadline is not None and lease.budget_deadline is not None:
                    lease.deadline += gap
                    lease.budget_deadline += gap
                    self._heap.append((lease.deadline, lease.id))
            heapq.heapify(self._heap)
        self._last_now = now if last is None else max(last, now)
        for lease_id in sorted(self._unclocked):
            fresh = self._leases.get(lease_id)
            if fresh is not None and fresh.deadline is None:
                self._set_clock(fresh, now + fresh.remaining, now + fresh.remaining)
        self._unclocked.clear()

    def promote(self, now: float, extend: float) -> LeaseCheckpointRequest | None:
        """Become the lease authority (on winning an election).  Each lease with budget ``b``
        left gets deadline ``now + b + extend`` (``extend``, normally the election timeout,
        lets clients find the new leader) — a lease whose budget is exhausted gets no grace.
        Returns the *promotion charge* the new leader must propose: every budget lowered by
        ``extend``, so that repeated elections cannot keep an unrenewed lease alive forever.

        The budget ``b`` is the recorded one minus the time since this member applied it
        (:meth:`Lease.effective_remaining`, on this member's own clock): the time without a
        leader counts against the lease, so a lease whose leader dies mid-TTL still expires
        about TTL after its last renewal, not TTL after the election (etcd 9395)."""
        self._primary = True
        self._heap = []
        self._last_now = now
        self._unclocked.clear()
        charges: list[LeaseCheckpoint] = []
        for lease in self._leases.values():
            lease.retry_at = -math.inf
            base = lease.effective_remaining(now)
            charged = max(0.0, base - extend)
            if base > 0:
                self._set_clock(lease, now + base + extend, now + charged)
            else:
                self._set_clock(lease, now, now)
            charges.append(LeaseCheckpoint(lease.id, charged))
        return LeaseCheckpointRequest(tuple(charges)) if charges else None

    def demote(self) -> None:
        """Stop being the lease authority (leadership lost); the clocks are dropped."""
        self._primary = False
        self._heap = []
        self._last_now = None
        self._unclocked = set(self._leases)
        for lease in self._leases.values():
            lease.deadline = lease.budget_deadline = None
            lease.retry_at = -math.inf

    def renew(self, lease_id: int, now: float) -> tuple[int, LeaseCheckpointRequest | None]:
        """Keep-alive served by the leader: the lease runs its full TTL again from ``now``.
        Returns ``(ttl, reset)``; if ``reset`` is not None the budget recorded in the log is
        below the TTL and the leader must propose ``reset`` (and should answer the client only
        once it applied), so a new leader does not fall back to the old budget.
        LeaseNotFound if the lease does not exist or its deadline has passed; NotLeader if
        this lessor was not promoted."""
        if not self._primary:
            raise NotLeader()
        self._observe(now)
        lease = self.get(lease_id)
        if lease.deadline is not None and now >= lease.deadline:
            raise LeaseNotFound(lease_id)
        self._set_clock(lease, now + lease.ttl, now + lease.ttl)
        lease.retry_at = -math.inf
        reset = None
        if lease.remaining < lease.ttl:
            reset = LeaseCheckpointRequest((LeaseCheckpoint(lease_id, float(lease.ttl)),))
        return lease.ttl, reset

    def remaining(self, lease_id: int, now: float) -> float:
        """Seconds left: from the leader's clock when primary, else the recorded budget."""
        lease = self.get(lease_id)
        if self._primary and lease.deadline is not None:
            return max(0.0, lease.deadline - now)
        return lease.remaining

    def expired(self, now: float) -> list[int]:
        """Ids whose deadline has passed, earliest first (ties by id), at most
        ``max_expire_per_call`` of them; each id is not returned again for
        ``expire_retry_interval`` seconds.  Empty unless primary."""
        if not self._primary:
            return []
        self._observe(now)
        heap = self._heap
        out: list[int] = []
        retry: list[tuple[float, int]] = []
        limit = self.config.max_expire_per_call
        while heap and heap[0][0] <= now and len(out) < limit:
            deadline, lease_id = heapq.heappop(heap)
            lease = self._leases.get(lease_id)
            if lease is None or lease.deadline != deadline:
                continue  # revoked, or superseded by a newer clock
            if lease.retry_at > now:
                retry.append((deadline, lease_id))
                continue
            lease.retry_at = now + self.config.expire_retry_interval
            out.append(lease_id)
            retry.append((deadline, lease_id))
        for item in retry:
            heapq.heappush(heap, item)
        return out

    def checkpoint(self, now: float) -> LeaseCheckpointRequest | None:
        """Budgets to record through the log (call periodically while leader).

        A lease is reported when its budget on this leader's clock is at least
        ``checkpoint_min_drop`` below the recorded one (so a new leader cannot extend it), or
        — for a lease renewed by leader-local keep-alives — when the record, aged by the time
        since it was applied, has fallen a third of the TTL below the real budget (so a new
        leader does not expire a lease its holder kept renewing)."""
        if not self._primary:
            return None
        self._observe(now)
        out: list[LeaseCheckpoint] = []
        for lease_id in sorted(self._leases):
            lease = self._leases[lease_id]
            if lease.budget_deadline is None:
                continue
            budget = max(0.0, lease.budget_deadline - now)
            dropped = budget <= lease.remaining - self.config.checkpoint_min_drop
            stale = lease.recorded_at is not None and budget >= lease.effective_remaining(
                now
            ) + max(self.config.checkpoint_min_drop, lease.ttl / 3)
            if dropped or stale:
                out.append(LeaseCheckpoint(lease_id, budget))
        return LeaseCheckpointRequest(tuple(out)) if out else None

    # --- persistence ----------------------------------------------------------------------

    def to_plain(self) -> list[Any]:
        """Replicated state only (keys are rebuilt from the KV store on restore)."""
        leases = [[lid, lease.ttl, lease.remaining] for lid, lease in sorted(self._leases.items())]
        return [self._next_id, leases]

    def restore_plain(self, plain: Any) -> None:
        try:
            next_id, leases = plain
            self._next_id = int(next_id)
            self._leases = {}
            for lid, ttl, remaining in leases:
                self._leases[int(lid)] = Lease(int(lid), int(ttl), float(remaining))
        except (TypeError, ValueError) as e:
            raise CorruptionError(f"bad lessor snapshot: {e}") from None
        self.demote()

    def hash_into(self, h: Any) -> None:
        h.update(b"leases%d;" % self._next_id)
        for lid, lease in sorted(self._leases.items()):
            h.update(b"%d,%d,%r:" % (lid, lease.ttl, lease.remaining))
            for key in sorted(lease.keys):
                h.update(b"%d:" % len(key))
                h.update(key)
