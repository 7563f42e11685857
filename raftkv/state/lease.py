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

Scale (100,000 leases): the leader keeps two heaps, of deadlines and of the times each lease
next needs a checkpoint, with about one live entry per lease (a renewal does not push a new
one), so :meth:`Lessor.expired` and :meth:`Lessor.checkpoint` touch only the leases that came
due, never every lease.  A budget is recorded again only once it changed materially
(:meth:`Lessor.material_drop`: a quarter of the TTL, between 1 s and 15 min), in entries of at
most ``checkpoint_batch`` (1,000) leases: an idle lease of TTL 2 h is recorded 4 times an hour.
A member that stayed up ages each record on its own clock, so its view is exact; only a member
that restarted since the record over-reads an unrenewed lease, by at most that drop.
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
    """The smallest change of a budget that :meth:`Lessor.checkpoint` reports (see
    :meth:`Lessor.material_drop`)."""
    checkpoint_drop_fraction: float = 0.25
    """:meth:`Lessor.checkpoint` reports an unrenewed lease once its budget dropped this
    fraction of its TTL below the recorded one (at least ``checkpoint_min_drop``, at most
    ``checkpoint_max_drop``): an unrenewed lease is recorded about ``1 / fraction`` times in
    its life, whatever its TTL."""
    checkpoint_max_drop: float = 900.0
    """The cap on the drop that triggers a checkpoint, for long TTLs: a lease is recorded at
    least every this many seconds (100,000 idle leases: 400,000 records, ~6.4 MB of log an
    hour)."""
    checkpoint_batch: int = 1000
    """At most this many leases per :class:`~raftkv.api.LeaseCheckpointRequest` (etcd's
    ``maxLeaseCheckpointBatchSize``); :meth:`Lessor.checkpoint` returns one batch per call."""
    checkpoint_retry_interval: float = 3.0
    """A lease reported by :meth:`Lessor.checkpoint` is looked at again after this many seconds
    (its entry may have been lost with a leader change); if its record was applied meanwhile
    it is not reported again."""


class Lease:
    """One lease.  ``ttl``, ``remaining`` and ``keys`` are replicated; the rest is leader-local."""

    __slots__ = (
        "budget_deadline",
        "cp_at",
        "deadline",
        "heap_at",
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
        # Leader-local: the key of this lease's one live entry in the expiry heap and in the
        # checkpoint heap (inf: none).  An entry may come due early; it is then re-pushed at
        # the lease's real time, so each heap holds about one entry per lease however often
        # the lease is renewed.
        self.heap_at = math.inf
        self.cp_at = math.inf
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
        self._heap: list[tuple[float, int]] = []  # (time, id): expiry, see Lease.heap_at
        self._cp_heap: list[tuple[float, int]] = []  # (time, id): checkpoint, Lease.cp_at
        self._last_now: float | None = None
        self._unclocked: set[int] = set()  # leases the leader has not started a clock for
        self.checkpoint_looks = 0
        """Leader-local count of leases :meth:`checkpoint` examined (all calls together)."""
        self.expiry_looks = 0
        """Leader-local count of leases :meth:`expired` examined (all calls together)."""
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
                if self._primary:
                    self._schedule_checkpoint(lease)

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
        self._push_expiry(lease, deadline)
        self._schedule_checkpoint(lease)

    def _push_expiry(self, lease: Lease, at: float) -> None:
        """Make sure the expiry heap looks at ``lease`` no later than ``at`` (an earlier live
        entry is kept: when it comes due the lease is re-pushed at its real deadline)."""
        if at < lease.heap_at:
            lease.heap_at = at
            heapq.heappush(self._heap, (at, lease.id))
            if len(self._heap) > 2 * len(self._leases) + 1024:
                self._heap = self._compacted(self._heap, "heap_at")

    def _push_checkpoint(self, lease: Lease, at: float) -> None:
        """Make sure :meth:`checkpoint` looks at ``lease`` no later than ``at``."""
        if at < lease.cp_at:
            lease.cp_at = at
            heapq.heappush(self._cp_heap, (at, lease.id))
            if len(self._cp_heap) > 2 * len(self._leases) + 1024:
                self._cp_heap = self._compacted(self._cp_heap, "cp_at")

    def _compacted(self, heap: list[tuple[float, int]], field: str) -> list[tuple[float, int]]:
        """``heap`` without its superseded entries (amortized: run when it is twice too big)."""
        leases = self._leases
        live = [
            (at, lid)
            for at, lid in heap
            if (lease := leases.get(lid)) is not None and getattr(lease, field) == at
        ]
        heapq.heapify(live)
        return live

    def material_drop(self, ttl: int) -> float:
        """How far a lease's budget must fall below its recorded one before
        :meth:`checkpoint` reports it: ``ttl * checkpoint_drop_fraction``, at least
        ``checkpoint_min_drop``, at most ``checkpoint_max_drop``.  This is also the most a
        member that restarted (and so cannot age the record on its own clock) may over-read
        an unrenewed lease's budget if it becomes the leader."""
        c = self.config
        drop = min(c.checkpoint_max_drop, ttl * c.checkpoint_drop_fraction)
        return max(c.checkpoint_min_drop, drop)

    def _stale_threshold(self, ttl: int) -> float:
        return max(self.config.checkpoint_min_drop, ttl / 3)

    def _drop_due(self, lease: Lease) -> float:
        """When the budget on this leader's clock will have dropped :meth:`material_drop`
        below the recorded one (inf: never, the record is already within it of zero)."""
        assert lease.budget_deadline is not None
        slack = lease.remaining - self.material_drop(lease.ttl)
        return math.inf if slack <= 0 else lease.budget_deadline - slack

    def _schedule_checkpoint(self, lease: Lease) -> None:
        """Leader-local: (re)schedule ``lease`` in the checkpoint heap after its clock or its
        record changed.  A renewed lease whose aged record may be too low comes due at once;
        otherwise it comes due when its budget has dropped materially (that time only moves
        when the clock or the record changes, so nothing needs to be scanned meanwhile)."""
        if not self._primary or lease.budget_deadline is None:
            return
        stale = lease.recorded_at is not None and lease.budget_deadline >= (
            lease.recorded_at + lease.remaining + self._stale_threshold(lease.ttl)
        )
        self._push_checkpoint(lease, -math.inf if stale else self._drop_due(lease))

    def _observe(self, now: float) -> None:
        """Start clocks of leases granted since the last call; absorb a leader stall."""
        last = self._last_now
        if last is not None and now - last > self.config.stall_threshold:
            gap = now - last
            self._heap = []
            self._cp_heap = []
            for lease in self._leases.values():
                lease.heap_at = lease.cp_at = math.inf
                if lease.deadline is not None and lease.budget_deadline is not None:
                    lease.deadline += gap
                    lease.budget_deadline += gap
                    lease.heap_at = lease.deadline
                    self._heap.append((lease.deadline, lease.id))
            heapq.heapify(self._heap)
            for lease in self._leases.values():
                self._schedule_checkpoint(lease)
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
        self._last_now = now
        self._unclocked.clear()
        charges: list[LeaseCheckpoint] = []
        heap: list[tuple[float, int]] = []
        cp_heap: list[tuple[float, int]] = []
        inf = math.inf
        # One pass, both heaps heapified at the end (O(n) once per election; this runs on
        # the event loop, so the per-lease work is kept inline).
        for lease in self._leases.values():
            lease.retry_at = -inf
            base = lease.effective_remaining(now)
            if base > 0:
                charged = base - extend if base > extend else 0.0
                lease.deadline = deadline = now + base + extend
                lease.budget_deadline = budget_deadline = now + charged
            else:
                charged = 0.0
                lease.deadline = lease.budget_deadline = deadline = budget_deadline = now
            lease.heap_at = deadline
            heap.append((deadline, lease.id))
            # As _schedule_checkpoint; a fresh clock is never stale (its budget is at most
            # the aged record), so only the material drop can make it due.
            slack = lease.remaining - self.material_drop(lease.ttl)
            if slack > 0:
                lease.cp_at = due = budget_deadline - slack
                cp_heap.append((due, lease.id))
            else:
                lease.cp_at = inf
            charges.append(LeaseCheckpoint(lease.id, charged))
        heapq.heapify(heap)
        heapq.heapify(cp_heap)
        self._heap = heap
        self._cp_heap = cp_heap
        return LeaseCheckpointRequest(tuple(charges)) if charges else None

    def batches(self, req: LeaseCheckpointRequest) -> list[LeaseCheckpointRequest]:
        """``req`` split into entries of at most ``checkpoint_batch`` leases (for the
        promotion charge, which lists every lease)."""
        size = max(1, self.config.checkpoint_batch)
        cps = req.checkpoints
        if len(cps) <= size:
            return [req]
        return [LeaseCheckpointRequest(cps[i : i + size]) for i in range(0, len(cps), size)]

    def demote(self) -> None:
        """Stop being the lease authority (leadership lost); the clocks are dropped."""
        self._primary = False
        self._heap = []
        self._cp_heap = []
        self._last_now = None
        self._unclocked = set(self._leases)
        for lease in self._leases.values():
            lease.deadline = lease.budget_deadline = None
            lease.retry_at = -math.inf
            lease.heap_at = lease.cp_at = math.inf

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
        out: list[int] = []
        limit = self.config.max_expire_per_call
        # Touches only entries that came due: O(expired + renewed since), never every lease.
        while self._heap and self._heap[0][0] <= now and len(out) < limit:
            at, lease_id = heapq.heappop(self._heap)
            lease = self._leases.get(lease_id)
            if lease is None or lease.heap_at != at:
                continue  # revoked, or a superseded entry
            lease.heap_at = math.inf
            if lease.deadline is None:
                continue  # clock dropped; re-pushed when it restarts
            self.expiry_looks += 1
            if lease.deadline > now:
                self._push_expiry(lease, lease.deadline)  # renewed since this entry
            elif lease.retry_at > now:
                self._push_expiry(lease, lease.retry_at)  # its LeaseExpire is on its way
            else:
                lease.retry_at = now + self.config.expire_retry_interval
                out.append(lease_id)
                self._push_expiry(lease, lease.retry_at)
        return out

    def checkpoint(self, now: float) -> LeaseCheckpointRequest | None:
        """Budgets to record through the log (call periodically while leader).

        Only leases whose remaining TTL changed materially since the record in the log are
        reported, at most ``checkpoint_batch`` per call (ordered by id; the rest come in the
        next calls):

        * a lease whose budget on this leader's clock is :meth:`material_drop` below the
          recorded one (so a member that restarted, and cannot age the record on its own
          clock, does not extend the lease by more than that if it becomes the leader);
        * a lease renewed by leader-local keep-alives (or moved by a stall) whose record, aged
          by the time since it was applied, has fallen a third of the TTL below the real
          budget (so a new leader does not expire a lease its holder kept renewing).

        Each lease sits in a heap at the time it next needs a look, and that time changes only
        when its clock or its record does: a call touches the leases that came due, not every
        lease (an idle leader with N leases does O(1) work per call between checkpoints)."""
        if not self._primary:
            return None
        self._observe(now)
        out: list[LeaseCheckpoint] = []
        limit = max(1, self.config.checkpoint_batch)
        retry = now + self.config.checkpoint_retry_interval
        while self._cp_heap and self._cp_heap[0][0] <= now and len(out) < limit:
            at, lease_id = heapq.heappop(self._cp_heap)
            lease = self._leases.get(lease_id)
            if lease is None or lease.cp_at != at:
                continue  # revoked, or a superseded entry
            lease.cp_at = math.inf
            if lease.budget_deadline is None:
                continue  # clock dropped; rescheduled when it restarts
            self.checkpoint_looks += 1
            budget = max(0.0, lease.budget_deadline - now)
            dropped = budget <= lease.remaining - self.material_drop(lease.ttl)
            stale = lease.recorded_at is not None and budget >= lease.effective_remaining(
                now
            ) + self._stale_threshold(lease.ttl)
            if dropped or stale:
                out.append(LeaseCheckpoint(lease_id, budget))
                # Looked at again if the record has not been applied by then.
                self._push_checkpoint(lease, retry)
            else:
                due = self._drop_due(lease)
                self._push_checkpoint(lease, due if due > now else retry)
        out.sort(key=lambda cp: cp.id)
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
