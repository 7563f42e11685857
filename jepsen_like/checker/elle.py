"""An Elle-style checker for list-append transactions.

After Kingsbury & Alvaro, "Elle: Inferring Isolation Anomalies from Experimental
Observations" (VLDB 2020); written from the paper's ideas, no code taken from the elle repo.

Each transaction is a list of micro-ops ``["append", k, v]`` and ``["r", k, list]``.  Every
value appended to a key is unique, so a read of ``k`` names, element by element, the very
writes it saw.  That is what makes the inference work:

* **Version order.**  All reads of ``k`` must be prefixes of one another (a list only grows);
  the longest read is the key's version order.  Two reads that disagree are an
  ``incompatible-order`` anomaly.
* **Dependencies** between committed transactions (Adya's DSG):
  ``ww`` -- T1 appended the element right before T2's in the version order;
  ``wr`` -- T2 read a list whose last element T1 appended;
  ``rw`` -- T1 read a list and T2 appended the element after its last one (anti-dependency).
  For strict serializability, ``rt`` edges add real time: T1 returned before T2 was invoked.
* **Cycles.**  Tarjan's algorithm finds the strongly connected components; inside each one a
  short cycle is searched for, most severe first, and named by its edges: ``G0`` (ww only),
  ``G1c`` (ww and wr), ``G-single`` (exactly one rw), ``G2`` (two or more rw), with a
  ``-realtime`` suffix when the cycle needs an rt edge.
* **Non-cycle anomalies**: ``G1a`` (a read saw an append of a failed transaction),
  ``G1b`` (a read ended at an append that was not its writer's last to that key),
  ``dirty-update`` (the version order puts a committed append after a failed one),
  ``duplicate-elements`` (an element twice in one read), ``garbage-read`` (an element nobody
  appended), ``internal`` (a transaction's read disagrees with its own earlier reads and
  appends).

Unknown outcomes (``info`` or never completed): their reads are unknown and ignored; their
appends may or may not have happened.  An observed append proves the transaction committed,
so it joins the graph; an unobserved one adds nothing.  Failed transactions never join it.

Entry points: :func:`check` over paired operations (:func:`jepsen_like.checker.history.pair`)
and :func:`check_history` over raw history events.  The result is a plain dict, ready for
JSON: ``valid``, ``anomaly_types``, ``anomalies`` (type -> examples; a cycle example lists the
txn ids, i.e. invocation indexes, and each step's edge kind and key), ``counts`` and ``stats``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntFlag
from itertools import pairwise
from typing import Any, Final, Literal, cast

from jepsen_like.checker.anomalies import Anomalies
from jepsen_like.checker.history import Completed, Op, Outcome, pair

__all__ = [
    "EdgeKind",
    "check",
    "check_history",
    "tarjan_scc",
]

ConsistencyModel = Literal["strict-serializable", "serializable"]


class EdgeKind(IntFlag):
    """Dependency kinds; an edge between two transactions may carry several."""

    WW = 1
    WR = 2
    RW = 4
    RT = 8

    @property
    def label(self) -> str:
        return {1: "ww", 2: "wr", 4: "rw", 8: "rt"}[int(self)]


# Plain ints in the hot paths: IntFlag's operators are slow in CPython.
_WW: Final = int(EdgeKind.WW)
_WR: Final = int(EdgeKind.WR)
_RW: Final = int(EdgeKind.RW)
_RT: Final = int(EdgeKind.RT)

_LABEL_ORDER: Final = (EdgeKind.WW, EdgeKind.WR, EdgeKind.RT, EdgeKind.RW)
"""When an edge carries several kinds, the cycle names the first one allowed (rw last)."""

Graph = dict[int, dict[int, int]]
"""Adjacency: node -> successor -> bitmask of :class:`EdgeKind`."""


@dataclass(slots=True)
class _Txn:
    id: int
    outcome: Outcome
    mops: list[tuple[str, Hashable, Any]]
    invoke_ns: int
    return_ns: int | None


@dataclass(slots=True)
class _Writer:
    txn: _Txn
    final: bool  # the writer's last append to this key


_Result = Anomalies


def _hashable(v: Any) -> Hashable:
    if not isinstance(v, list | tuple):
        return cast(Hashable, v)
    t = tuple(v)
    try:
        hash(t)  # the common case (ints, strings) stays at C speed
    except TypeError:
        return tuple(_hashable(x) for x in v)
    return t


def _txns(ops: Iterable[Completed]) -> list[_Txn]:
    out = []
    for c in ops:
        raw = c.result if c.ok and c.result is not None else c.value
        if not isinstance(raw, list | tuple):
            raise ValueError(f"txn {c.index}: value is not a list of micro-ops: {raw!r}")
        mops: list[tuple[str, Hashable, Any]] = []
        for m in raw:
            if not (isinstance(m, list | tuple) and len(m) == 3 and m[0] in ("append", "r")):
                raise ValueError(f"txn {c.index}: bad micro-op {m!r}")
            f, k, v = m
            unknown_read = f == "r" and (v is None or not c.ok)
            v = None if unknown_read else _hashable(v)
            mops.append((f, _hashable(k), v))
        out.append(_Txn(c.index, c.outcome, mops, c.invoke_ns, c.return_ns))
    return out


def check_history(
    history: Iterable[Op],
    model: ConsistencyModel = "strict-serializable",
    max_examples: int = 8,
) -> dict[str, Any]:
    """Pair the events of a history and :func:`check` its ``txn`` operations."""
    return check([c for c in pair(history) if c.f == "txn"], model, max_examples)


def check(
    ops: Iterable[Completed],
    model: ConsistencyModel = "strict-serializable",
    max_examples: int = 8,
) -> dict[str, Any]:
    """Check list-append transactions against ``model``; see the module docstring.

    Raises ``ValueError`` when the workload breaks Elle's precondition (the same value
    appended twice to one key) or a micro-op is malformed.
    """
    txns = _txns(ops)
    res = _Result(max_examples)
    writers = _index_writers(txns)
    reads = _check_reads(txns, writers, res)
    orders = _version_orders(reads, res)
    graph: Graph = {}
    why: dict[tuple[int, int, int], Hashable] = {}
    committed = _dependencies(orders, reads, writers, graph, why, res)
    if model == "strict-serializable":
        _realtime(txns, committed, graph, why)
    sccs = [c for c in tarjan_scc(graph) if len(c) > 1]
    for comp in sccs:
        _find_cycle(graph, set(comp), why, res, model == "strict-serializable")
    types = sorted(res.anomalies)
    return {
        "valid": not types,
        "model": model,
        "anomaly_types": types,
        "anomalies": res.anomalies,
        "counts": res.counts,
        "stats": {
            "txns": len(txns),
            "ok": sum(t.outcome is Outcome.OK for t in txns),
            "info": sum(t.outcome is Outcome.UNKNOWN for t in txns),
            "fail": sum(t.outcome is Outcome.FAIL for t in txns),
            "keys": len(orders),
            "edges": sum(len(s) for s in graph.values()),
            "cyclic_components": len(sccs),
        },
    }


# --- writes, reads, version orders ----------------------------------------------------------


def _index_writers(txns: Sequence[_Txn]) -> dict[tuple[Hashable, Hashable], _Writer]:
    writers: dict[tuple[Hashable, Hashable], _Writer] = {}
    for t in txns:
        last: dict[Hashable, tuple[Hashable, Hashable]] = {}
        for f, k, v in t.mops:
            if f != "append":
                continue
            if (k, v) in writers:
                other = writers[(k, v)].txn.id
                raise ValueError(
                    f"txns {other} and {t.id} both append {v!r} to {k!r}: "
                    "list-append needs unique values per key"
                )
            writers[(k, v)] = _Writer(t, False)
            last[k] = (k, v)
        for kv in last.values():
            writers[kv].final = True
    return writers


_Read = tuple[_Txn, Hashable, tuple[Hashable, ...]]


def _check_reads(
    txns: Sequence[_Txn], writers: dict[tuple[Hashable, Hashable], _Writer], res: _Result
) -> list[_Read]:
    """Per-read anomalies (internal, duplicates, garbage, G1a, G1b); returns the reads."""
    reads: list[_Read] = []
    checked: dict[Hashable, _Checked] = {}
    for t in txns:
        if t.outcome is not Outcome.OK:
            continue
        full: dict[Hashable, list[Hashable]] = {}  # key -> state known from an earlier read
        own: dict[Hashable, list[Hashable]] = {}  # key -> own appends since then
        for f, k, v in t.mops:
            if f == "append":
                if k in full:
                    full[k].append(v)
                else:
                    own.setdefault(k, []).append(v)
                continue
            if v is None:
                continue
            seen: tuple[Hashable, ...] = v
            consistent = True
            if k in full:
                if list(seen) != full[k]:
                    consistent = False
                    res.add("internal", _internal(t, k, full[k], seen))
            elif own.get(k):
                suffix = own[k]
                if list(seen[-len(suffix) :]) != suffix:
                    consistent = False
                    res.add("internal", _internal(t, k, ["...", *suffix], seen))
            full[k] = list(seen)
            own.pop(k, None)
            _check_elements(t, k, seen, writers, checked, res)
            if consistent:  # an inconsistent read says nothing reliable about the order
                reads.append((t, k, seen))
    return reads


def _internal(
    t: _Txn, k: Hashable, expected: list[Any], seen: tuple[Hashable, ...]
) -> dict[str, Any]:
    return {"txn": t.id, "key": k, "expected": expected, "read": list(seen)}


@dataclass(slots=True)
class _Checked:
    """Per key: the longest read whose elements were already checked, as a tuple and a set."""

    read: tuple[Hashable, ...] = ()
    elements: set[Hashable] = field(default_factory=set)


def _check_elements(
    t: _Txn,
    k: Hashable,
    seen: tuple[Hashable, ...],
    writers: dict[tuple[Hashable, Hashable], _Writer],
    checked: dict[Hashable, _Checked],
    res: _Result,
) -> None:
    """Duplicates, garbage, G1a and G1b of one read.

    Reads of a key mostly extend one another, so only the part past the longest read
    checked so far is looked at element by element (tuple prefix tests run at C speed);
    this keeps the checker linear in the number of distinct elements, not in total read size.
    """
    c = checked.setdefault(k, _Checked())
    n = len(c.read)
    if len(seen) <= n and c.read[: len(seen)] == seen:
        fresh: tuple[Hashable, ...] = ()
    elif seen[:n] == c.read:
        fresh = seen[n:]
        if len(set(fresh)) != len(fresh) or not c.elements.isdisjoint(fresh):
            _duplicates(t, k, seen, res)
        c.read = seen
        c.elements.update(fresh)
    else:  # not an extension (an incompatible read): check it all
        fresh = seen
        if len(set(seen)) != len(seen):
            _duplicates(t, k, seen, res)
    for x in fresh:
        w = writers.get((k, x))
        if w is None:
            res.add("garbage-read", {"txn": t.id, "key": k, "element": x})
        elif w.txn.outcome is Outcome.FAIL:
            res.add("G1a", {"txn": t.id, "key": k, "element": x, "writer": w.txn.id})
    if seen:
        w = writers.get((k, seen[-1]))
        if w is not None and not w.final and w.txn is not t:
            res.add(
                "G1b",
                {
                    "txn": t.id,
                    "key": k,
                    "element": seen[-1],
                    "writer": w.txn.id,
                    "read": list(seen),
                },
            )


def _duplicates(t: _Txn, k: Hashable, seen: tuple[Hashable, ...], res: _Result) -> None:
    counts: dict[Hashable, int] = {}
    for x in seen:
        counts[x] = counts.get(x, 0) + 1
    dupes = sorted((x for x, n in counts.items() if n > 1), key=repr)
    res.add("duplicate-elements", {"txn": t.id, "key": k, "read": list(seen), "dup": dupes})


def _version_orders(reads: Sequence[_Read], res: _Result) -> dict[Hashable, tuple[Hashable, ...]]:
    """The longest read per key; reads that are not a prefix of it are incompatible."""
    longest: dict[Hashable, tuple[Hashable, ...]] = {}
    for _, k, seen in reads:
        if len(seen) > len(longest.get(k, ())):
            longest[k] = seen
    for t, k, seen in reads:
        order = longest.get(k, ())
        if order[: len(seen)] != seen:
            res.add(
                "incompatible-order",
                {"key": k, "txn": t.id, "read": list(seen), "longest": list(order)},
            )
    return longest


# --- the dependency graph ----------------------------------------------------------------


def _edge(
    graph: Graph,
    why: dict[tuple[int, int, int], Hashable],
    a: int,
    b: int,
    kind: int,
    key: Hashable,
) -> None:
    if a == b:
        return
    succ = graph.setdefault(a, {})
    succ[b] = succ.get(b, 0) | kind
    why.setdefault((a, b, kind), key)


def _dependencies(
    orders: dict[Hashable, tuple[Hashable, ...]],
    reads: Sequence[_Read],
    writers: dict[tuple[Hashable, Hashable], _Writer],
    graph: Graph,
    why: dict[tuple[int, int, int], Hashable],
    res: _Result,
) -> set[int]:
    """ww, wr and rw edges; returns the ids of transactions known to have committed."""
    committed: set[int] = set()
    for k, order in orders.items():
        prev: _Txn | None = None
        failed_at: Hashable = None
        for x in order:
            w = writers.get((k, x))
            if w is None:
                prev = None
                continue
            if w.txn.outcome is Outcome.FAIL:
                failed_at, prev = x, None
                continue
            if failed_at is not None:
                res.add(
                    "dirty-update",
                    {"key": k, "failed-element": failed_at, "element": x, "writer": w.txn.id},
                )
                failed_at = None
            committed.add(w.txn.id)
            if prev is not None:
                _edge(graph, why, prev.id, w.txn.id, _WW, k)
            prev = w.txn
    for t, k, seen in reads:
        committed.add(t.id)
        if seen:
            w = writers.get((k, seen[-1]))
            if w is not None and w.txn.outcome is not Outcome.FAIL:
                _edge(graph, why, w.txn.id, t.id, _WR, k)
        order = orders.get(k, ())
        if len(order) > len(seen) and order[: len(seen)] == seen:
            w = writers.get((k, order[len(seen)]))
            if w is not None and w.txn.outcome is not Outcome.FAIL:
                _edge(graph, why, t.id, w.txn.id, _RW, k)
    return committed


def _realtime(
    txns: Sequence[_Txn],
    committed: set[int],
    graph: Graph,
    why: dict[tuple[int, int, int], Hashable],
) -> None:
    """rt edges, transitively reduced: T1 -> T2 when T1 returned before T2 was invoked.

    Sweep the invocations and returns in time order (invocations first at equal times: the
    intervals are closed).  The frontier holds the returned transactions not yet known to
    precede another returned one; each invocation gets an edge from every frontier member.
    Frontier members are pairwise concurrent, so the work is O(n * concurrency).
    """
    events: list[tuple[int, int, int]] = []
    for i, t in enumerate(txns):
        if t.outcome is Outcome.FAIL:
            continue
        events.append((t.invoke_ns, 0, i))
        if t.outcome is Outcome.OK and t.return_ns is not None:
            events.append((t.return_ns, 1, i))
    events.sort()
    frontier: set[int] = set()
    preds: dict[int, tuple[int, ...]] = {}
    for _, kind, i in events:
        t = txns[i]
        if kind == 0:
            preds[t.id] = tuple(frontier)
            if t.id in committed or t.outcome is Outcome.OK:
                for p in preds[t.id]:
                    _edge(graph, why, p, t.id, _RT, None)
        else:
            frontier.difference_update(preds.get(t.id, ()))
            frontier.add(t.id)


def tarjan_scc(graph: Graph) -> list[list[int]]:
    """Strongly connected components of ``graph`` (iterative Tarjan, any size)."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    out: list[list[int]] = []
    counter = 0
    for root in list(graph):
        if root in index:
            continue
        work: list[tuple[int, Iterable[int]]] = [(root, iter(graph.get(root, ())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(graph.get(w, ()))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                u = work[-1][0]
                low[u] = min(low[u], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(comp)
    return out


# --- cycle search ------------------------------------------------------------------------

_SEARCH_BUDGET: Final = 200_000
"""Node visits allowed per cycle search in one component (keeps bad histories fast)."""
_G2_STARTS: Final = 16
"""Start nodes tried when looking for a cycle with two or more rw edges."""


def _sub(graph: Graph, nodes: set[int], mask: int) -> Graph:
    return {
        a: {b: m & mask for b, m in graph.get(a, {}).items() if b in nodes and m & mask}
        for a in nodes
    }


def _path(
    g: Graph,
    src: int,
    dst: int,
    budget: list[int],
    rank: dict[int, int] | None = None,
) -> list[int] | None:
    """Shortest path src ->+ dst in ``g`` (BFS; src == dst gives a cycle), or None.

    Spends ``budget[0]`` node visits and gives up when they run out.  With ``rank`` (edges
    of ``g`` never go to a higher rank; see :func:`_single_rw_cycle`), nodes ranked below
    ``dst`` are not explored: they cannot reach it.
    """
    floor = 0 if rank is None else rank[dst]
    parent: dict[int, int] = {src: src}
    queue = deque([src])
    while queue:
        v = queue.popleft()
        budget[0] -= 1
        if budget[0] < 0:
            return None
        for w in g.get(v, ()):
            if w == dst:
                path = [w, v]
                while path[-1] != src:
                    path.append(parent[path[-1]])
                return path[::-1]
            if w not in parent and (rank is None or rank[w] >= floor):
                parent[w] = v
                queue.append(w)
    return None


def _cycle_in(g: Graph, prefer_rw: int = 0) -> list[int] | None:
    """A shortest cycle through one node of a cyclic component of ``g``, or None.

    With ``prefer_rw`` > 0, up to :data:`_G2_STARTS` start nodes (sources of rw-only edges
    first) are tried for a cycle with that many rw-only edges; failing that, the first cycle
    found is returned.
    """
    for comp in tarjan_scc(g):
        if len(comp) < 2:
            continue
        starts = sorted(comp)
        if prefer_rw:
            starts.sort(key=lambda v: not any(m == _RW for m in g[v].values()))
            starts = starts[:_G2_STARTS]
        first: list[int] | None = None
        budget = [_SEARCH_BUDGET]
        for start in starts:
            cycle = _path(g, start, start, budget)
            if cycle is None:
                break  # out of budget (every member of a cyclic component lies on a cycle)
            first = first or cycle
            rw = sum(g[a][b] == _RW for a, b in pairwise(cycle))
            if rw >= prefer_rw:
                return cycle
        if first is None:
            first = _path(g, starts[0], starts[0], [len(g) + 1])
        return first
    return None


def _single_rw_cycle(g_all: Graph, nodes: set[int], mask: int) -> list[int] | None:
    """A cycle with exactly one rw edge, the rest within ``mask``, or None.

    An rw edge a -> b closes such a cycle iff b reaches a without rw.  Tarjan lists the
    components of the rw-free subgraph sinks first, so with ``rank`` = that position every
    edge goes from a rank to the same or a lower one: b can reach a only if
    ``rank[b] >= rank[a]``, and the search never needs nodes ranked below a.  Candidates
    closest in rank are tried first; the whole search has a visit budget.
    """
    g = _sub(g_all, nodes, mask)
    rank = {v: i for i, comp in enumerate(tarjan_scc(g)) for v in comp}
    rw_edges = [
        (a, b)
        for a in nodes
        for b, m in g_all.get(a, {}).items()
        if b in nodes and m & _RW and rank[b] >= rank[a]
    ]
    rw_edges.sort(key=lambda e: rank[e[1]] - rank[e[0]])
    budget = [_SEARCH_BUDGET]
    for a, b in rw_edges:
        p = _path(g, b, a, budget, rank)
        if p is not None:
            return [a, *p]
        if budget[0] < 0:
            return None
    return None


def _find_cycle(
    graph: Graph,
    nodes: set[int],
    why: dict[tuple[int, int, int], Hashable],
    res: _Result,
    realtime: bool,
) -> None:
    """Report short cycles of one strongly connected component, one per anomaly type.

    Searches go from the most to the least restrictive edge set (ww; ww+wr; one rw; any),
    first without rt edges, then with them, so each cycle found is as severe as possible.
    """
    passes = [0, _RT] if realtime else [0]
    found: set[str] = set()
    for rt in passes:
        for mask, single_rw in (
            (_WW | rt, False),
            (_WW | _WR | rt, False),
            (_WW | _WR | rt, True),
            (_WW | _WR | _RW | rt, False),
        ):
            if single_rw:
                cycle = _single_rw_cycle(graph, nodes, mask)
            else:
                cycle = _cycle_in(_sub(graph, nodes, mask), 2 if mask & _RW else 0)
            if cycle is not None:
                _report_cycle(graph, cycle, mask | (_RW if single_rw else 0), why, res, found)


def _report_cycle(
    graph: Graph,
    cycle: list[int],
    allowed: int,
    why: dict[tuple[int, int, int], Hashable],
    res: _Result,
    found: set[str],
) -> None:
    """Name a cycle by its edges and report it, unless this component already has one."""
    steps = []
    rw = wr = rt = 0
    for a, b in pairwise(cycle):
        m = graph[a][b] & allowed
        kind = next(k for k in _LABEL_ORDER if m & k)
        rw += kind is EdgeKind.RW
        wr += kind is EdgeKind.WR
        rt += kind is EdgeKind.RT
        step: dict[str, Any] = {"from": a, "to": b, "kind": kind.label}
        if kind is not EdgeKind.RT:
            step["key"] = why.get((a, b, int(kind)))
        steps.append(step)
    name = "G2" if rw >= 2 else "G-single" if rw == 1 else "G1c" if wr else "G0"
    if rt:
        name += "-realtime"
    if name not in found:
        found.add(name)
        res.add(name, {"cycle": cycle, "steps": steps})
