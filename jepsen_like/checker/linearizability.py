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

The search is bounded by a time budget: when it runs out the verdict is
:attr:`Verdict.UNKNOWN` rather than a hang.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Final, Generic, Literal, Protocol, TypeAlias, TypeVar

__all__ = [
    "UNKNOWN",
    "Anomaly",
    "CheckResult",
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
    """Where the search got stuck in the first non-linearizable partition.

    ``longest_prefix`` is the longest linearization found (operation ids, in order) and
    ``state`` the model state after it (described).  ``blocking_op`` returned before it could
    be linearized after any extension of that prefix; ``pending`` are the other operations
    that were candidates at that point (invoked, not yet linearized) and all were refused.
    """

    partition: Hashable
    longest_prefix: tuple[int, ...]
    state: str
    blocking_op: int
    pending: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict, the first anomaly (if any) and how much of the work was done."""

    verdict: Verdict
    anomaly: Anomaly | None
    partitions: int
    partitions_checked: int
    steps: int

    @property
    def ok(self) -> bool:
        """True only for a proven linearizable history."""
        return self.verdict is Verdict.LINEARIZABLE


class _Timeout(Exception):
    """Internal: the time budget ran out inside one partition."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps


_CHECK_EVERY: Final = 2048  # search steps between two looks at the clock


def check(
    model: Model[S, I, O],
    history: Sequence[Operation[I, O]],
    timeout: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> CheckResult:
    """Decide whether ``history`` is linearizable with respect to ``model``.

    Partitions are searched one after another in the order of their first invocation; the
    first non-linearizable one ends the check with its :class:`Anomaly`.  ``timeout`` (seconds
    of ``clock``) bounds the whole check; when it runs out the verdict is UNKNOWN unless a
    violation was already found.
    """
    deadline = math.inf if timeout is None else clock() + timeout
    parts: dict[Hashable, list[Operation[I, O]]] = {}
    for op in sorted(history, key=lambda o: (o.call, o.id)):
        parts.setdefault(model.partition_key(op.input), []).append(op)
    steps = 0
    checked = 0
    for key, ops in parts.items():
        try:
            found, n = _check_partition(model, key, ops, deadline, clock)
        except _Timeout as t:
            return CheckResult(Verdict.UNKNOWN, None, len(parts), checked, steps + t.steps)
        steps += n
        checked += 1
        if found is not None:
            return CheckResult(Verdict.NOT_LINEARIZABLE, found, len(parts), checked, steps)
    return CheckResult(Verdict.LINEARIZABLE, None, len(parts), checked, steps)


def _check_partition(
    model: Model[S, I, O],
    key: Hashable,
    ops: list[Operation[I, O]],
    deadline: float,
    clock: Callable[[], float],
) -> tuple[Anomaly | None, int]:
    """Search one partition; an :class:`Anomaly` if it is not linearizable, and the steps."""
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
    bits = [1 << i for i in range(n)]
    step = model.step

    state = model.init()
    linearized = 0
    cache: set[tuple[int, Hashable]] = set()
    calls: list[tuple[int, S]] = []  # (call entry, state before it)
    best_len = -1
    best: Anomaly | None = None
    steps = 0
    entry = nxt[head]
    while nxt[head] != -1:
        steps += 1
        if steps % _CHECK_EVERY == 0 and clock() >= deadline:
            raise _Timeout(steps)
        ret = match[entry]
        if ret >= 0:
            i = op_of[entry]
            ok, new_state = step(state, inputs[i], outputs[i])
            if ok:
                new_lin = linearized | bits[i]
                ck = (new_lin, new_state)
                if ck not in cache:
                    cache.add(ck)
                    calls.append((entry, state))
                    state = new_state
                    linearized = new_lin
                    # lift: unlink the call and its return
                    p, q = prv[entry], nxt[entry]
                    nxt[p] = q
                    prv[q] = p
                    p, q = prv[ret], nxt[ret]
                    nxt[p] = q
                    if q != -1:
                        prv[q] = p
                    entry = nxt[head]
                    continue
            entry = nxt[entry]
        else:
            if len(calls) > best_len:
                best_len = len(calls)
                best = _anomaly(model, key, ops, calls, state, op_of, match, nxt, head, entry)
            if not calls:
                return best, steps
            entry, state = calls.pop()
            linearized &= ~bits[op_of[entry]]
            # unlift: relink the return, then the call
            ret = match[entry]
            p, q = prv[ret], nxt[ret]
            nxt[p] = ret
            if q != -1:
                prv[q] = ret
            p, q = prv[entry], nxt[entry]
            nxt[p] = entry
            prv[q] = entry
            entry = nxt[entry]
    return None, steps


def _anomaly(
    model: Model[S, I, O],
    key: Hashable,
    ops: list[Operation[I, O]],
    calls: list[tuple[int, S]],
    state: S,
    op_of: list[int],
    match: list[int],
    nxt: list[int],
    head: int,
    stop: int,
) -> Anomaly:
    """Snapshot the search at a dead end: the prefix so far and the refused candidates."""
    pending: list[int] = []
    e = nxt[head]
    while e != stop and e != -1:
        if match[e] >= 0 and op_of[e] != op_of[stop]:
            pending.append(ops[op_of[e]].id)
        e = nxt[e]
    return Anomaly(
        partition=key,
        longest_prefix=tuple(ops[op_of[c]].id for c, _ in calls),
        state=model.describe_state(state),
        blocking_op=ops[op_of[stop]].id,
        pending=tuple(pending),
    )


def report(model: Model[S, I, O], history: Sequence[Operation[I, O]], result: CheckResult) -> str:
    """The human verdict: ``linearizable``, ``unknown`` or ``not linearizable`` + pointer."""
    if result.verdict is Verdict.LINEARIZABLE:
        return "linearizable"
    if result.verdict is Verdict.UNKNOWN:
        return (
            f"unknown (time budget ran out; {result.partitions_checked} of "
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
