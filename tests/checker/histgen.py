"""Large simulated kv histories: many clients running a correct store, optionally corrupted.

Each client runs one operation at a time.  Every operation takes effect at one instant inside
its own interval, and the outputs come from applying the operations in that order to a real
sequential store, so the history is linearizable by construction.  ``corrupt`` then changes
one get to a value the key never held at any point of that get's interval, which no
linearization can explain.

``python -m tests.checker.histgen --clients 50 --ops 5000 [--bad] [--seed N]`` writes the
history as EDN lines (the format ``check-history --format edn`` reads) to stdout.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import sys
from dataclasses import dataclass

from jepsen_like.checker.linearizability import UNKNOWN, Operation
from jepsen_like.checker.models import KvFn, KvInput, KvOutput

KvOp = Operation[KvInput, KvOutput]


@dataclass(frozen=True, slots=True)
class Generated:
    """The history, and for each op the instant it took effect (``None``: it never did)."""

    ops: list[KvOp]
    points: dict[int, float | None]


def generate(
    clients: int,
    n_ops: int,
    keys: int = 10,
    seed: int = 0,
    unknown_rate: float = 0.0,
) -> Generated:
    """``n_ops`` operations by ``clients`` clients over ``keys`` keys, linearizable.

    ``unknown_rate`` is the share of puts/appends whose outcome is not observed (a timeout);
    half of those take effect, half never do.  A client whose op timed out moves on, as a
    Jepsen process does, under a fresh process number.
    """
    rng = random.Random(seed)
    # (call time, client): when each client starts its next operation.
    ready = [(rng.random(), c) for c in range(clients)]
    heapq.heapify(ready)
    process = list(range(clients))
    planned: list[tuple[float, float, float, int, KvInput, bool, bool]] = []
    for op_id in range(n_ops):
        call, c = heapq.heappop(ready)
        duration = rng.expovariate(1.0) * 2.0
        point = call + rng.random() * duration
        ret = call + duration
        roll = rng.random()
        key = str(rng.randrange(keys))
        if roll < 0.5:
            inp = KvInput(KvFn.GET, key)
        elif roll < 0.6:
            inp = KvInput(KvFn.PUT, key, f"p {process[c]} {op_id} ")
        else:
            inp = KvInput(KvFn.APPEND, key, f"x {process[c]} {op_id} y")
        unknown = inp.fn is not KvFn.GET and rng.random() < unknown_rate
        effective = not unknown or rng.random() < 0.5
        planned.append((call, point, ret, process[c], inp, unknown, effective))
        if unknown:
            process[c] += clients
        heapq.heappush(ready, (ret + rng.random() * 0.1, c))
    order = sorted(range(n_ops), key=lambda i: planned[i][1])
    store: dict[str, str] = {}
    outputs: dict[int, KvOutput] = {}
    for i in order:
        _, _, _, _, inp, _, effective = planned[i]
        if not effective:
            continue
        if inp.fn is KvFn.GET:
            outputs[i] = store.get(inp.key, "")
        elif inp.fn is KvFn.PUT:
            store[inp.key] = inp.value
        else:
            store[inp.key] = store.get(inp.key, "") + inp.value
    ops: list[KvOp] = []
    points: dict[int, float | None] = {}
    for i, (call, point, ret, proc, inp, unknown, effective) in enumerate(planned):
        if unknown:
            ops.append(Operation(i, proc, inp, UNKNOWN, call, math.inf))
        else:
            ops.append(Operation(i, proc, inp, outputs.get(i), call, ret))
        points[i] = point if effective else None
    return Generated(ops, points)


def corrupt(gen: Generated, seed: int = 0) -> tuple[list[KvOp], int]:
    """Make one get of a non-empty key return a value it never had; the history and its id."""
    rng = random.Random(seed)
    gets = [
        op
        for op in gen.ops
        if op.input.fn is KvFn.GET and isinstance(op.output, str) and len(op.output) > 8
    ]
    victim = gets[rng.randrange(len(gets))]
    bad: KvOp = Operation(
        victim.id, victim.process, victim.input, "never written", victim.call, victim.ret
    )
    return [bad if op.id == victim.id else op for op in gen.ops], victim.id


def to_edn(ops: list[KvOp]) -> str:
    """The history as EDN event lines, in time order (calls before returns at equal times)."""
    events: list[tuple[float, int, int, KvOp]] = []
    for op in ops:
        events.append((op.call, 0, op.id, op))
        if op.ret != math.inf:
            events.append((op.ret, 1, op.id, op))
    events.sort()
    lines: list[str] = []
    for _, kind, _, op in events:
        inp = op.input
        f = {KvFn.GET: "get", KvFn.PUT: "put", KvFn.APPEND: "append"}[inp.fn]
        if inp.fn is KvFn.GET:
            value = "nil" if kind == 0 else _edn_str(str(op.output))
        else:
            value = _edn_str(inp.value)
        typ = ":invoke" if kind == 0 else ":ok"
        lines.append(
            f'{{:process {op.process}, :type {typ}, :f :{f}, :key "{inp.key}", :value {value}}}'
        )
    return "\n".join(lines) + "\n"


def _edn_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.checker.histgen")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--ops", type=int, default=5000)
    ap.add_argument("--keys", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bad", action="store_true", help="corrupt one get")
    args = ap.parse_args(argv)
    gen = generate(args.clients, args.ops, args.keys, args.seed)
    ops = corrupt(gen, args.seed)[0] if args.bad else gen.ops
    sys.stdout.write(to_edn(ops))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
