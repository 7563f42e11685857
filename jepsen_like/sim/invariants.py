"""Raft's safety properties (Raft paper, Figure 3) and the Ready contract, checked incrementally.

The cluster calls the ``on_*`` hooks as it carries out each node's ``Ready`` and calls
:meth:`Checker.observe_leaders` after every step, so each property is checked after every
step at a cost proportional to what changed, not to the length of the logs:

- Election Safety: at most one leader per term, over the whole run.
- Leader Append-Only: a leader never overwrites or deletes entries of its own log.
- Log Matching: checked on *persisted* logs through its inductive form: whenever an entry
  ``(index, term)`` is persisted anywhere, its payload and the term of the entry before it
  must be the same as everywhere else it was ever persisted.  By induction, two logs that
  share ``(index, term)`` then share the whole prefix.
- Leader Completeness: an entry committed in term U is in the log of every leader of a term
  greater than U.
- State Machine Safety: no two nodes apply different entries at one index; each node applies
  in order, exactly once (a hash chain over the applied entries is compared index by index,
  snapshot restores included).
- Persistence contract: a message leaves a node only after what it promises is durable.
- Linearizable ReadIndex: a ReadState's index is at least the highest index known to be
  committed anywhere when the read was requested.

Liveness is checked by the cluster itself (it needs to drive ticks).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from raftkv.errors import RaftError
from raftkv.raft.types import Entry, HardState, Message, MessageType, ReadState


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken property, with the step it was seen at."""

    step: int
    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"step {self.step}: {self.invariant}: {self.detail}"


class LogView(Protocol):
    """The part of a log the checker reads (``RaftLog`` and ``MemoryStorage`` both fit)."""

    def term(self, i: int) -> int: ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...


def term_or_none(log: LogView, i: int) -> int | None:
    """The term at ``i`` or None when ``i`` is compacted away or beyond the log."""
    try:
        return log.term(i)
    except RaftError:
        return None


_TERMLESS = frozenset({MessageType.PRE_VOTE, MessageType.PRE_VOTE_RESP})


class Checker:
    """Accumulates what the run has shown so far and records every broken property."""

    def __init__(self) -> None:
        self.step = 0
        self.violations: list[Violation] = []
        self.leader_of_term: dict[int, int] = {}
        # (node, term) -> (last index, term of last index) when last seen as leader
        self._leader_tail: dict[tuple[int, int], tuple[int, int]] = {}
        # (index, term) -> (entry type, data, term of index - 1), over all persisted logs
        self._persisted: dict[tuple[int, int], tuple[int, bytes, int]] = {}
        # index -> (entry term, term in which it was first known committed)
        self.committed: dict[int, tuple[int, int]] = {}
        self.max_commit = 0
        # index -> (entry term, hash chain value after applying it)
        self._applied: dict[int, tuple[int, bytes]] = {}
        self._read_floor: dict[bytes, int] = {}
        self.reads_served = 0
        self._fresh: list[int] = []  # indices first recorded committed during this step

    # --- reporting -------------------------------------------------------------------------

    def fail(self, invariant: str, detail: str) -> None:
        self.violations.append(Violation(self.step, invariant, detail))

    @property
    def ok(self) -> bool:
        return not self.violations

    # --- persistence -----------------------------------------------------------------------

    def on_persist_entries(self, node: int, entries: Iterable[Entry], log: LogView) -> None:
        """Called after ``entries`` were appended to ``node``'s stable storage ``log``."""
        persisted = self._persisted
        prev_term: int | None = None
        for e in entries:
            if prev_term is None:
                prev_term = term_or_none(log, e.index - 1)
                if prev_term is None:
                    prev_term = -1  # compacted below the snapshot: unknown
            key = (e.index, e.term)
            kind = int(e.type)
            seen = persisted.get(key)
            if seen is None:
                persisted[key] = (kind, e.data, prev_term)
            else:
                seen_kind, seen_data, seen_prev = seen
                if seen_data != e.data or seen_kind != kind:
                    self.fail(
                        "log matching",
                        f"node {node} persisted ({e.index}, t{e.term}) with payload "
                        f"{e.data!r}, elsewhere {seen_data!r}",
                    )
                elif prev_term >= 0 and seen_prev >= 0 and seen_prev != prev_term:
                    self.fail(
                        "log matching",
                        f"node {node} persisted ({e.index}, t{e.term}) after an entry of term "
                        f"{prev_term}; elsewhere it follows term {seen_prev}",
                    )
                elif seen_prev < 0 <= prev_term:
                    persisted[key] = (kind, e.data, prev_term)
            prev_term = e.term

    def on_message_out(self, node: int, m: Message, hs: HardState, last_index: int) -> None:
        """Called for each message of a Ready after the Ready was persisted, before sending."""
        if m.type not in _TERMLESS and m.term > hs.term:
            self.fail(
                "persistence",
                f"node {node} sent {m.type.name} term {m.term} > persisted term {hs.term}",
            )
        # A grant or an ack from a term older than the persisted one is covered: the node can
        # never act in that term again.  Both happen when one Ready spans two terms.
        if m.term != hs.term or m.reject:
            return
        if m.type == MessageType.VOTE_RESP and hs.vote != m.to:
            self.fail(
                "persistence",
                f"node {node} granted its vote to {m.to} in term {m.term} but persisted "
                f"vote={hs.vote}",
            )
        elif m.type == MessageType.APP_RESP and m.index > last_index:
            self.fail(
                "persistence",
                f"node {node} acked index {m.index} to {m.to} but its persisted log ends at "
                f"{last_index}",
            )

    # --- commit ----------------------------------------------------------------------------

    def on_commit(self, node: int, old: int, new: int, term_now: int, log: LogView) -> None:
        """``node`` durably advanced its commit index from ``old`` to ``new`` in ``term_now``."""
        committed = self.committed
        fresh = self._fresh
        for i in range(old + 1, new + 1):
            t = term_or_none(log, i)
            if t is None:
                continue
            seen = committed.get(i)
            if seen is None:
                committed[i] = (t, term_now)
                fresh.append(i)
            elif seen[0] != t:
                self.fail(
                    "state machine safety",
                    f"node {node} committed index {i} with term {t}; it was committed with "
                    f"term {seen[0]} before",
                )
        if new > self.max_commit:
            self.max_commit = new

    # --- apply -----------------------------------------------------------------------------

    def on_apply(self, node: int, index: int, term: int, chain: bytes) -> None:
        seen = self._applied.get(index)
        if seen is None:
            self._applied[index] = (term, chain)
        elif seen[1] != chain:
            self.fail(
                "state machine safety",
                f"node {node} applied (index {index}, t{term}); another node applied "
                f"t{seen[0]} there or a different history before it",
            )

    def on_apply_out_of_order(self, node: int, index: int, applied: int) -> None:
        self.fail(
            "state machine safety",
            f"node {node} was handed index {index} to apply after applying {applied} "
            "(not in order / not exactly once)",
        )

    def on_restore(self, node: int, index: int, chain: bytes) -> None:
        """``node`` restored its state machine from a snapshot taken at ``index``."""
        if index == 0:
            return
        seen = self._applied.get(index)
        if seen is not None and seen[1] != chain:
            self.fail(
                "state machine safety",
                f"node {node} restored a snapshot at {index} whose state differs from what "
                "was applied there elsewhere",
            )

    # --- reads -----------------------------------------------------------------------------

    def on_read_index(self, ctx: bytes) -> None:
        """A ReadIndex was requested now: its answer must cover every commit known now."""
        self._read_floor[ctx] = self.max_commit

    def on_read_state(self, node: int, rs: ReadState) -> None:
        floor = self._read_floor.get(rs.request_ctx)
        if floor is None:
            return
        self.reads_served += 1
        if rs.index < floor:
            self.fail(
                "linearizable read",
                f"node {node} answered read {rs.request_ctx!r} at index {rs.index}, but index "
                f"{floor} was already committed when it was requested",
            )

    # --- leaders ---------------------------------------------------------------------------

    def observe_leaders(self, leaders: Iterable[tuple[int, int, LogView]]) -> None:
        """After each step: every live node that believes it leads, as (id, term, log)."""
        for node, term, log in leaders:
            key = (node, term)
            last = log.last_index()
            tail = self._leader_tail.get(key)
            if tail is None:
                other = self.leader_of_term.get(term)
                if other is not None and other != node:
                    self.fail("election safety", f"nodes {other} and {node} both lead term {term}")
                self.leader_of_term[term] = node
                self._check_completeness(node, term, log, self.committed.items())
            else:
                old_last, old_term = tail
                now_term = term_or_none(log, old_last)
                if last < old_last or (now_term is not None and now_term != old_term):
                    self.fail(
                        "leader append-only",
                        f"leader {node} of term {term} had ({old_last}, t{old_term}); now its "
                        f"log ends at {last} with t{now_term} there",
                    )
            self._leader_tail[key] = (last, term_or_none(log, last) or 0)

    def check_fresh_commits(self, leaders: Iterable[tuple[int, int, LogView]]) -> None:
        """Leader Completeness for the commits first recorded in this step, against the
        current leaders (a leader elected earlier must hold them too)."""
        if not self._fresh:
            return
        items = [(i, self.committed[i]) for i in self._fresh]
        self._fresh = []
        for node, term, log in leaders:
            self._check_completeness(node, term, log, items)

    def _check_completeness(
        self,
        node: int,
        term: int,
        log: LogView,
        items: Iterable[tuple[int, tuple[int, int]]],
    ) -> None:
        first = log.first_index()
        for i, (t, in_term) in items:
            if in_term >= term or i < first:
                continue
            have = term_or_none(log, i)
            if have != t:
                self.fail(
                    "leader completeness",
                    f"leader {node} of term {term} has t{have} at index {i}, but (index {i}, "
                    f"t{t}) was committed in term {in_term}",
                )
                return
