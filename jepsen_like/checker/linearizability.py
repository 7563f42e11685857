"""Linearizability checking: the Wing-Gong-Lowe search, as porcupine runs it.

A history is a list of :class:`Operation` (an input, an output, and the interval between
invocation and return).  It is linearizable when some total order of the operations, each
placed somewhere inside its own interval, is accepted by a sequential :class:`Model`.

The search (Wing & Gong, with Lowe's state cache) walks a doubly linked list of call and
return entries sorted by time.  It tries to linearize the first pending call; if the model
accepts it, the call and its return are unlinked and the search restarts at the head.  Reaching
a return entry means the operation it closes had to be linearized already: backtrack.  A cache
of ``(set of linearized operations, model state)`` prunes configurations already explored,
which turns the exponential search into something that finishes on real histories.

Two more things make it practical:

* P-compositionality: a history is linearizable iff each partition (e.g. each key) is, so the
  model names a partition key per input and every partition is searched alone.
* Operations whose outcome is unknown (a timed-out write) get a return time of +infinity and
  the output :data:`UNKNOWN`: they may take effect at any point after their invocation, and
  placing them after everything else is the same as "never".

Models may offer optional methods that prune the search (see :class:`Model`).  The search is
bounded by a time budget and a memory bound on its memo: when either runs out the verdict
is :attr:`Verdict.UNKNOWN` rather than a hang or an out-of-memory kill.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Final, Generic, Literal, Protocol, TypeAlias, TypeVar

__all__ = [
    "DEFAULT_MEMORY_LIMIT",
    "UNKNOWN",
    "Anomaly",
    "CheckResult",
    "Exhausted",
    "Model",
    "Operation",
    "UnknownOutcome",
    "Verdict",
    "check",
    "report",
]


class UnknownOutcome(Enum):
    """Marker type of :data:`UNKNOWN`."""

    UNKNOWN = "unknown"


UNKNOWN: Final = UnknownOutcome.UNKNOWN
"""The output of an operation whose outcome is unknown (it may or may not have happened)."""

UnknownT: TypeAlias = Literal[UnknownOutcome.UNKNOWN]

S = TypeVar("S", bound=Hashable)
I = TypeVar("I")  # noqa: E741 - input, as in porcupine's (state, input, output)
O = TypeVar("O")  # noqa: E741
I_contra = TypeVar("I_contra", contravariant=True)
O_contra = TypeVar("O_contra", contravariant=True)


class Verdict(IntEnum):
    """The answer of a check; the values are the CLI's exit codes."""

    LINEARIZABLE = 0
    NOT_LINEARIZABLE = 1
    UNKNOWN = 2


@dataclass(frozen=True, slots=True)
class Operation(Generic[I, O]):
    """One operation of a history: ``input`` invoked at ``call``, ``output`` seen at ``ret``.

    Intervals are closed: two operations that touch at one instant are concurrent.  An
    operation with unknown outcome has ``output=UNKNOWN`` and ``ret=math.inf``.
    """

    id: int
    process: int
    input: I
    output: O | UnknownT
    call: float
    ret: float = math.inf

    # Invariant: call <= ret, and ret == inf exactly when the outcome is unknown.
    def __post_init__(self) -> None:
        if self.call > self.ret:
            raise ValueError(f"operation {self.id}: returns ({self.ret}) before call ({self.call})")
        if (self.output is UNKNOWN) != (self.ret == math.inf):
            raise ValueError(f"operation {self.id}: unknown outcome iff return time is +inf")

    @property
    def unknown(self) -> bool:
        """True when the operation may or may not have taken effect."""
        return self.output is UNKNOWN


class Model(Protocol[S, I_contra, O_contra]):
    """A sequential specification, per partition.

    States are immutable values: the cache compares them with ``==`` and ``hash()``, so a
    model picks a state type where equal states mean the same future behaviour (ints, strings,
    tuples, frozen dataclasses, frozensets of states for a nondeterministic model).

    Optional: ``read_only(input, output) -> bool``, true when the operation leaves every
    state it is accepted in unchanged (a read).  The search then never undoes such an
    operation to try an alternative, which prunes most of the work on read-heavy histories.
    A model without it is checked correctly, only more slowly.

    Optional too, as a pair: ``resets(input) -> bool``, true for operations that set the
    state to a value that does not depend on the state before (a put); and
    ``unreachable(state, input, output) -> bool`` for a read-only operation, true when no
    state reached from ``state`` by operations that do not reset accepts it.  A read that is
    unreachable from the current state, and from the state each reset able to come before
    it returns would leave, ends the branch at once instead of after every order of the
    other operations.  A model offering ``unreachable`` also promises that its operations
    other than reads are accepted in every state (as puts and appends are).  Then a state
    that every read able to come before the next reset finds unreachable is never
    observed, and configurations that differ only in such a state are explored once.
    """

    name: str

    def init(self) -> S:
        """The state of one partition before any operation."""
        ...

    def step(self, state: S, input: I_contra, output: O_contra | UnknownT) -> tuple[bool, S]:
        """Can ``input`` observe ``output`` from ``state``; and the state after it.

        With ``output is UNKNOWN`` the step must be accepted (the outcome was not observed)
        and return the state the operation would leave if it took effect.  Must not mutate.
        """
        ...

    def partition_key(self, input: I_contra) -> Hashable:
        """The partition an input belongs to (a constant: no partitioning)."""
        ...

    def describe_operation(self, input: I_contra, output: O_contra | UnknownT) -> str:
        """A short human text, e.g. ``cas(1, 2) -> ok``, for reports."""
        ...

    def describe_state(self, state: S) -> str:
        """A short human text for a state, for reports."""
        ...


@dataclass(frozen=True, slots=True)
class Anomaly:
    """Where the search got stuck in a non-linearizable partition.

    ``longest_prefix`` is the linearization of the dead end the search reached furthest
    (operation ids, in order) and ``state`` the model state after it (described).
    ``blocking_op`` returned, or is a read no longer acceptable, before it could be
    linearized after any extension of that prefix; ``pending`` are the other operations
    invoked before it and not linearized, all refused.
    """

    partition: Hashable
    longest_prefix: tuple[int, ...]
    state: str
    blocking_op: int
    pending: tuple[int, ...]

    @property
    def unplaced(self) -> tuple[int, ...]:
        """The operations that cannot be placed after the longest prefix: the blocking op
        first, then the refused candidates.  A timeline marks these."""
        return (self.blocking_op, *self.pending)


Exhausted: TypeAlias = Literal["time", "memory"]
"""Which budget ran out when the verdict is UNKNOWN."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict, the first anomaly (if any) and how much of the work was done.

    ``anomalies`` holds one :class:`Anomaly` per non-linearizable partition searched (only
    the first unless ``all_partitions``); ``anomaly`` is the first of them.  ``exhausted``
    names the budget that ran out, if one did.  ``memo_bytes`` is the largest estimated size
    of one partition's memo, the figure ``memory_limit`` bounds.
    """

    verdict: Verdict
    anomaly: Anomaly | None
    partitions: int
    partitions_checked: int
    steps: int
    anomalies: tuple[Anomaly, ...] = ()
    exhausted: Exhausted | None = None
    memo_bytes: int = 0

    @property
    def ok(self) -> bool:
        """True only for a proven linearizable history."""
        return self.verdict is Verdict.LINEARIZABLE


class _Exhausted(Exception):
    """Internal: a budget (time or memory) ran out inside one partition."""

    def __init__(self, which: Exhausted, steps: int, memo_bytes: int) -> None:
        super().__init__()
        self.which: Exhausted = which
        self.steps = steps
        self.memo_bytes = memo_bytes


_CHECK_EVERY: Final = 2048  # search steps between two looks at the clock

DEFAULT_MEMORY_LIMIT: Final = 512 * 2**20
"""Bytes one partition's memo may use (estimated) before the verdict is UNKNOWN."""

_LOOKAHEAD: Final = 16
"""List entries past the candidates whose reads are tested for being unreachable."""
_SLOT_BYTES: Final = 72
"""Memo set slot with the table's slack and its resizes, plus the int's header."""
_STATE_BYTES: Final = 120
"""Per distinct model state, beside ``sys.getsizeof(state)``: its dict slot and its id."""


def check(
    model: Model[S, I, O],
    history: Sequence[Operation[I, O]],
    timeout: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    *,
    memory_limit: int | None = DEFAULT_MEMORY_LIMIT,
    all_partitions: bool = False,
) -> CheckResult:
    """Decide whether ``history`` is linearizable with respect to ``model``.

    Partitions are searched one after another in the order of their first invocation; the
    first non-linearizable one ends the check with its :class:`Anomaly`, unless
    ``all_partitions`` asks for every partition (one anomaly each).  ``timeout`` (seconds of
    ``clock``) bounds the whole check; ``memory_limit`` (bytes, estimated; ``None`` = no
    bound) bounds each partition's memo.  When a budget runs out the verdict is UNKNOWN
    unless a violation was already found.
    """
    deadline = math.inf if timeout is None else clock() + timeout
    limit = math.inf if memory_limit is None else memory_limit
    parts: dict[Hashable, list[Operation[I, O]]] = {}
    for op in sorted(history, key=lambda o: (o.call, o.id)):
        parts.setdefault(model.partition_key(op.input), []).append(op)
    steps = 0
    checked = 0
    memo = 0
    found: list[Anomaly] = []
    for key, ops in parts.items():
        try:
            anomaly, n, used = _check_partition(model, key, ops, deadline, clock, limit)
        except _Exhausted as e:
            verdict = Verdict.NOT_LINEARIZABLE if found else Verdict.UNKNOWN
            return CheckResult(
                verdict,
                found[0] if found else None,
                len(parts),
                checked,
                steps + e.steps,
                tuple(found),
                e.which,
                max(memo, e.memo_bytes),
            )
        steps += n
        checked += 1
        memo = max(memo, used)
        if anomaly is not None:
            found.append(anomaly)
            if not all_partitions:
                break
    verdict = Verdict.NOT_LINEARIZABLE if found else Verdict.LINEARIZABLE
    first = found[0] if found else None
    return CheckResult(verdict, first, len(parts), checked, steps, tuple(found), None, memo)


def _check_partition(
    model: Model[S, I, O],
    key: Hashable,
    ops: list[Operation[I, O]],
    deadline: float,
    clock: Callable[[], float],
    limit: float,
) -> tuple[Anomaly | None, int, int]:
    """Search one partition: an :class:`Anomaly` if it is not linearizable, the steps, and
    the memo's estimated size in bytes."""
    n = len(ops)
    # Entries 0..2n-1 sorted by time, calls before returns at equal times (closed intervals);
    # entry 2n is the head sentinel.  The list is kept in the arrays nxt / prv (-1 = none).
    raw = [(op.call, 0, i) for i, op in enumerate(ops)] + [
        (op.ret, 1, i) for i, op in enumerate(ops)
    ]
    raw.sort()
    head = 2 * n
    nxt = [*range(1, 2 * n), -1, 0]
    prv = [head, *range(0, 2 * n - 1), -1]
    ret_pos = [0] * n
    for pos, (_, kind, i) in enumerate(raw):
        if kind == 1:
            ret_pos[i] = pos
    # For a call entry: the position of its return; for a return entry: -1.
    match = [ret_pos[i] if kind == 0 else -1 for _, kind, i in raw]
    op_of = [i for _, _, i in raw]
    inputs = [op.input for op in ops]
    outputs = [op.output for op in ops]
    # Read-only operations (a get: accepted only where it leaves the state as it was) are
    # never a choice: linearizing one as soon as it is accepted loses nothing, so it is
    # taken at once, alone, and backtracking pops it without trying alternatives.
    read_only: Callable[[I, O | UnknownT], bool] | None = getattr(model, "read_only", None)
    ro = [bool(read_only(inputs[op_of[e]], outputs[op_of[e]])) if read_only else False
          for e in range(2 * n)]  # fmt: skip
    # The other candidates are tried in the order of their intervals' midpoints (unknown
    # outcomes last): a guess at the real order, so a linearizable history is usually
    # found on the first path.  Any order is correct; this one is fast.
    by_mid = sorted(range(2 * n), key=lambda e: (ops[op_of[e]].call + ops[op_of[e]].ret, e))
    rank = [0] * (2 * n)
    for r, e in enumerate(by_mid):
        rank[e] = r
    rank_of = rank.__getitem__
    # A refused read that cannot be accepted in any state reached from here without a
    # reset (a get of 'ab' when the key already holds 'abc' and only appends can follow) is
    # a dead end as soon as no reset can come before the read returns.
    unreachable: Callable[[S, I, O | UnknownT], bool] | None = getattr(model, "unreachable", None)
    resets_fn: Callable[[I], bool] | None = getattr(model, "resets", None)
    if resets_fn is None:
        unreachable = None
    resets = [bool(resets_fn(inputs[op_of[e]])) if resets_fn else True for e in range(2 * n)]

    def forgettable(doomed: list[int], at: S) -> bool:
        """Whether every read not yet linearized that is called before the first of
        ``doomed`` returns is unreachable from ``at``: then some reset comes before any read
        observes the state, and the state itself does not matter."""
        assert unreachable is not None
        limit = min(match[d] for d in doomed)
        e = nxt[head]
        while 0 <= e < limit:
            if ro[e] and match[e] >= 0:
                i = op_of[e]
                if not unreachable(at, inputs[i], outputs[i]):
                    return False
            e = nxt[e]
        return True

    def rescue(read: int, at: S) -> bool:
        """Whether a reset not yet linearized, called before ``read`` returns, leaves a
        state from which the read can still be accepted."""
        assert unreachable is not None
        i = op_of[read]
        e = nxt[head]
        limit = match[read]
        while 0 <= e < limit:
            if match[e] >= 0 and resets[e]:
                j = op_of[e]
                ok, after = step(at, inputs[j], outputs[j])
                if ok and not unreachable(after, inputs[i], outputs[i]):
                    return True
            e = nxt[e]
        return False

    step = model.step

    # Memo: one int per configuration, the linearized set as a bitset (bits 0..n-1) with the
    # id of the model state above it.  Equal states share one id, so the memo holds each
    # state once; its size is estimated as it grows and checked against the limit.
    state = model.init()
    # Id 0 stands for every "forgotten" state (see below); real states count from 1.
    state_ids: dict[Hashable, int] = {state: 1}
    entry_bytes = _SLOT_BYTES + 4 * ((n + 64) // 30 + 1)
    memo_bytes = sys.getsizeof(state) + _STATE_BYTES
    memo: set[int] = set()
    linearized = 0
    # One frame per step taken: (the candidates of its configuration in trial order, the
    # index of the one taken, the state before it).
    frames: list[tuple[list[int], int, S]] = []
    # The dead end reported is the one the search reached furthest: latest blocking entry
    # in time, then longest prefix.  (The pruning ends wrong branches early, at a read
    # called before the real culprit; this keeps them from hiding it.)
    best_at = (-1, -1)
    best: tuple[list[int], S, int, tuple[int, ...]] | None = None
    steps = 0
    next_check = _CHECK_EVERY
    cands: list[int] = []
    idx = 0
    fresh = True  # a configuration reached by a step: gather its candidates
    while True:
        if fresh:
            if nxt[head] == -1:
                return None, steps, memo_bytes
            fresh = False
            cands = []
            forced = -1
            doomed: list[int] = []
            e = nxt[head]
            while match[e] >= 0:  # every call's return follows it, so a return ends this
                if ro[e]:
                    if forced < 0:
                        i = op_of[e]
                        steps += 1
                        if step(state, inputs[i], outputs[i])[0]:
                            forced = e
                        elif unreachable is not None and unreachable(state, inputs[i], outputs[i]):
                            doomed.append(e)
                else:
                    cands.append(e)
                e = nxt[e]
            stop = e
            if forced < 0 and unreachable is not None:
                # Reads called later must be accepted some day too: look a little ahead.
                ahead = _LOOKAHEAD
                while ahead and e != -1:
                    if ro[e] and match[e] >= 0:
                        i = op_of[e]
                        if unreachable(state, inputs[i], outputs[i]):
                            doomed.append(e)
                    ahead -= 1
                    e = nxt[e]
            if forced >= 0:
                cands = [forced]
            elif doomed and (stuck := _stuck(doomed, state, rescue)) >= 0:
                # A refused read that no state reachable from here accepts, not even after
                # a reset that can still come before it returns: a dead end already.
                cands = []
                stop = stuck
            elif doomed and forgettable(doomed, state):
                # Every read that could come before the next reset is unreachable, so the
                # state will be overwritten before anything observes it: configurations
                # with this set of operations and any such state share one memo entry.
                mk = linearized
                if mk in memo:
                    cands = []
                else:
                    memo_bytes += entry_bytes
                    if memo_bytes > limit:
                        raise _Exhausted("memory", steps, memo_bytes)
                    memo.add(mk)
                    cands.sort(key=rank_of)
            else:
                cands.sort(key=rank_of)
            idx = 0
        placed = False
        while idx < len(cands):
            steps += 1
            if steps >= next_check:
                next_check = steps + _CHECK_EVERY
                if clock() >= deadline:
                    raise _Exhausted("time", steps, memo_bytes)
            entry = cands[idx]
            i = op_of[entry]
            ok, new_state = step(state, inputs[i], outputs[i])
            if ok:
                new_lin = linearized | (1 << i)
                sid = state_ids.get(new_state)
                if sid is None:
                    sid = state_ids[new_state] = len(state_ids) + 1
                    memo_bytes += sys.getsizeof(new_state) + _STATE_BYTES
                mk = new_lin | (sid << n)
                if mk not in memo:
                    memo_bytes += entry_bytes
                    if memo_bytes > limit:
                        raise _Exhausted("memory", steps, memo_bytes)
                    memo.add(mk)
                    frames.append((cands, idx, state))
                    state = new_state
                    linearized = new_lin
                    # lift: unlink the call and its return
                    ret = match[entry]
                    p, q = prv[entry], nxt[entry]
                    nxt[p] = q
                    prv[q] = p
                    p, q = prv[ret], nxt[ret]
                    nxt[p] = q
                    if q != -1:
                        prv[q] = p
                    placed = True
                    break
            idx += 1
        if placed:
            fresh = True
            continue
        # Dead end: every candidate refused (or already explored).
        if (stop, len(frames)) > best_at:
            best_at = (stop, len(frames))
            prefix = [f[0][f[1]] for f in frames]
            best = (prefix, state, stop, _pending(ops, op_of, match, nxt, head, stop))
        # Undo the last step (and the read-only ones before it) and try the next candidate.
        while True:
            if not frames:
                assert best is not None, "a failing search meets a dead end at a return"
                prefix, at, blocking, pending = best
                return (
                    Anomaly(
                        partition=key,
                        longest_prefix=tuple(ops[op_of[c]].id for c in prefix),
                        state=model.describe_state(at),
                        blocking_op=ops[op_of[blocking]].id,
                        pending=pending,
                    ),
                    steps,
                    memo_bytes,
                )
            cands, idx, state = frames.pop()
            entry = cands[idx]
            i = op_of[entry]
            linearized ^= 1 << i
            # unlift: relink the return, then the call
            ret = match[entry]
            p, q = prv[ret], nxt[ret]
            nxt[p] = ret
            if q != -1:
                prv[q] = ret
            p, q = prv[entry], nxt[entry]
            nxt[p] = entry
            prv[q] = entry
            if not ro[entry]:
                break
        idx += 1
        # The dead end after this frame's candidates is its first return entry.
        e = nxt[head]
        while match[e] >= 0:
            e = nxt[e]
        stop = e


def _stuck(doomed: list[int], state: S, rescue: Callable[[int, S], bool]) -> int:
    """The first read of ``doomed`` that no reset can rescue, or -1."""
    for e in doomed:
        if not rescue(e, state):
            return e
    return -1


def _pending(
    ops: list[Operation[I, O]],
    op_of: list[int],
    match: list[int],
    nxt: list[int],
    head: int,
    stop: int,
) -> tuple[int, ...]:
    """The candidates refused before the dead end ``stop``: calls ahead of it in the list."""
    pending: list[int] = []
    e = nxt[head]
    while e != stop and e != -1:
        if match[e] >= 0 and op_of[e] != op_of[stop]:
            pending.append(ops[op_of[e]].id)
        e = nxt[e]
    return tuple(pending)


def report(model: Model[S, I, O], history: Sequence[Operation[I, O]], result: CheckResult) -> str:
    """The human verdict: ``linearizable``, ``unknown`` or ``not linearizable`` + pointer."""
    if result.verdict is Verdict.LINEARIZABLE:
        return "linearizable"
    if result.verdict is Verdict.UNKNOWN:
        budget = "memory" if result.exhausted == "memory" else "time"
        return (
            f"unknown ({budget} budget ran out; {result.partitions_checked} of "
            f"{result.partitions} partitions proven linearizable)"
        )
    a = result.anomaly
    assert a is not None, "a NOT_LINEARIZABLE result always carries its anomaly"
    by_id = {op.id: op for op in history}

    def show(op_id: int) -> str:
        op = by_id[op_id]
        end = "?" if op.ret == math.inf else f"{op.ret:g}"
        what = model.describe_operation(op.input, op.output)
        return f"op {op.id} (process {op.process}, {op.call:g}..{end}): {what}"

    lines = ["not linearizable"]
    if a.partition is not None:
        lines.append(f"  partition: {a.partition!r}")
    lines.append(
        f"  longest linearizable prefix: {len(a.longest_prefix)} operations, "
        f"leaving state {a.state}"
    )
    lines += [f"    ... {show(i)}" for i in a.longest_prefix[-3:]]
    lines.append(f"  cannot linearize before it returns: {show(a.blocking_op)}")
    lines += [f"    refused candidate: {show(i)}" for i in a.pending]
    return "\n".join(lines)
