"""Watch workload: writers change keys ``w/*`` while one watcher per member follows them
(etcd's robustness tests: watch guarantees ordered, unique, atomic, reliable, resumable).

Every watcher starts at one revision and, whenever its stream breaks for good (the client
itself resumes across connection losses), opens a new watch at ``last revision seen + 1``;
each response and each resume is kept in ``watch.jsonl``.  After healing, one last write
marks the end revision; each watcher must reach it.  The ground truth is a fresh watch from
the start revision on a new connection (``watch_truth.jsonl``); the cluster runs without
compaction in this workload, so the whole history is there.

Checked per watcher: its events, concatenated, equal the truth restricted to the revisions it
covered (no gap, no duplicate, same order, same keys, values, kinds and revisions); each
response holds one revision (atomic); revisions strictly increase (ordered, across resumes).
Checked on the truth: every acknowledged write appears at its revision with its value;
``create_revision == mod_revision`` exactly when ``version == 1``; ``prev_kv`` is the
previous version of the key.
"""

from __future__ import annotations

import asyncio
import itertools
from functools import partial
from typing import Any

import raftkv
from jepsen_like.checker.watch import (
    AckedWrite,
    EventLog,
    StreamItem,
    WatchedRange,
    WatchStream,
    check_watches,
    item_from_plain,
    item_from_response,
    item_to_plain,
)
from jepsen_like.workloads.base import Event, Observed, RunContext, pairs, result
from raftkv.api import Event as KvEvent
from raftkv.api import EventType, prefix_end
from raftkv.errors import RaftKVError

PREFIX = b"w/"
KEYS = 8
CATCH_UP = 30.0


def plain_event(e: KvEvent) -> dict[str, Any]:
    return {
        "type": "put" if e.type is EventType.PUT else "delete",
        "key": e.kv.key.decode(),
        "value": e.kv.value.decode(),
        "create": e.kv.create_revision,
        "mod": e.kv.mod_revision,
        "version": e.kv.version,
        "prev": None if e.prev_kv is None else e.prev_kv.value.decode(),
    }


async def _put(c: raftkv.Client, key: str, value: str) -> Observed:
    rev = (await c.put(key, value)).header.revision
    return Observed({"revision": rev}, {"revision": rev})


async def _delete(c: raftkv.Client, key: str) -> Observed:
    r = await c.delete(key)
    rev = r.header.revision
    return Observed({"revision": rev, "deleted": r.deleted}, {"revision": rev})


class WatchWorkload:
    name = "watch"

    def __init__(self) -> None:
        self.start_rev = 0
        self.last: dict[str, int] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.end_rev = 0
        self.done = asyncio.Event()
        self.counter = 0

    async def setup(self, ctx: RunContext) -> None:
        ctx.aux["watch"] = []
        ctx.aux["watch_items"] = []
        async with ctx.client(ctx.control.endpoints(), timeout=10.0) as c:
            self.start_rev = (await c.get(PREFIX)).header.revision + 1
        for name in ctx.control.names:
            self.last[name] = self.start_rev - 1
            self.tasks.append(asyncio.create_task(self._watcher(ctx, name)))

    async def _watcher(self, ctx: RunContext, name: str) -> None:
        home = ctx.control.member(name).client_addr
        eps = [home] + [e for e in ctx.control.endpoints() if e != home]
        rows = ctx.aux["watch"]
        items = ctx.aux["watch_items"]
        async with ctx.client(eps) as c:
            while not self._caught_up(name):
                start = self.last[name] + 1
                rows.append({"watcher": name, "resume": start, "t": ctx.recorder.now()})
                items.append({"watcher": name, "kind": "resume", "revision": start})
                try:
                    async with c.watch(
                        PREFIX, prefix=True, start_revision=start, prev_kv=True
                    ) as w:
                        async for resp in w:
                            if not resp.events:
                                continue
                            rows.append(
                                {
                                    "watcher": name,
                                    "revision": resp.revision,
                                    "events": [plain_event(e) for e in resp.events],
                                    "revisions": sorted({e.kv.mod_revision for e in resp.events}),
                                    "t": ctx.recorder.now(),
                                }
                            )
                            items.append(
                                {"watcher": name, **item_to_plain(item_from_response(resp))}
                            )
                            self.last[name] = max(self.last[name], resp.revision)
                            if self._caught_up(name):
                                return
                except RaftKVError as e:
                    rows.append({"watcher": name, "error": f"{type(e).__name__}: {e}"})
                    await asyncio.sleep(0.2)

    def _caught_up(self, name: str) -> bool:
        return self.done.is_set() and self.last[name] >= self.end_rev

    async def client(self, ctx: RunContext, process: int) -> None:
        proc = process
        async with ctx.client(ctx.endpoints_for(process)) as c:
            while not ctx.stop.is_set():
                self.counter += 1
                key = f"w/{ctx.rng.randrange(KEYS)}"
                if ctx.rng.random() < 0.1:
                    ev = await ctx.recorder.run(proc, "delete", key, None, partial(_delete, c, key))
                else:
                    value = f"{process}-{self.counter}"
                    ev = await ctx.recorder.run(
                        proc, "put", key, value, partial(_put, c, key, value)
                    )
                if ev["type"] == "info":
                    proc += ctx.clients

    async def final(self, ctx: RunContext) -> None:
        async with ctx.client(ctx.control.endpoints(), timeout=10.0) as c:
            ev = await ctx.recorder.run(
                ctx.clients * 1000, "put", "w/final", "end", partial(_put, c, "w/final", "end")
            )
            if ev["type"] == "ok":
                self.end_rev = int(ev["value"]["revision"])
            self.done.set()
            _, pending = (
                await asyncio.wait(self.tasks, timeout=CATCH_UP) if self.tasks else ((), ())
            )
            for t in pending:
                t.cancel()
            ctx.aux["watch_state"] = [
                {"watcher": n, "last": r, "end": self.end_rev, "start": self.start_rev}
                for n, r in self.last.items()
            ]
            truth: list[dict[str, Any]] = []
            truth_items: list[dict[str, Any]] = []
            ctx.aux["watch_truth_items"] = truth_items
            if self.end_rev:
                try:
                    async with asyncio.timeout(CATCH_UP):
                        w = c.watch(
                            PREFIX, prefix=True, start_revision=self.start_rev, prev_kv=True
                        )
                        async with w:
                            async for resp in w:
                                truth += [plain_event(e) for e in resp.events]
                                truth_items.append(item_to_plain(item_from_response(resp)))
                                if resp.revision >= self.end_rev:
                                    break
                except (RaftKVError, TimeoutError) as e:
                    truth.append({"error": f"{type(e).__name__}: {e}"})
            ctx.aux["watch_truth"] = truth

    def check(self, history: list[Event], aux: dict[str, list[Any]]) -> dict[str, Any]:
        out = check_watch(
            history, aux.get("watch", []), aux.get("watch_truth", []), aux.get("watch_state", [])
        )
        if aux.get("watch_truth_items"):
            out["watch_guarantees"] = guarantees(history, aux)
        return out


def guarantees(history: list[Event], aux: dict[str, list[Any]]) -> dict[str, Any]:
    """The checkers' own watch validators (:func:`jepsen_like.checker.watch.check_watches`):
    ordered, unique, atomic, reliable, resumable, bookmarkable, prev_kv, create flag, filter."""
    state = aux.get("watch_state", [])
    start = min((int(s["start"]) for s in state), default=1)
    log = EventLog.from_items((item_from_plain(d) for d in aux["watch_truth_items"]), start)
    watched = WatchedRange(PREFIX, prefix_end(PREFIX), prev_kv=True)
    by_watcher: dict[str, list[StreamItem]] = {}
    for d in aux.get("watch_items", []):
        by_watcher.setdefault(d["watcher"], []).append(item_from_plain(d))
    streams = [WatchStream(w, watched, items) for w, items in by_watcher.items()]
    writes: list[AckedWrite] = []
    for inv, done in pairs(history):
        if done is None or done["type"] != "ok" or inv["f"] not in ("put", "delete"):
            continue
        if inv["f"] == "delete":
            if done["value"].get("deleted"):
                writes.append(
                    AckedWrite(
                        EventType.DELETE, inv["key"].encode(), b"", done["value"]["revision"]
                    )
                )
        else:
            writes.append(
                AckedWrite(
                    EventType.PUT,
                    inv["key"].encode(),
                    str(inv["value"]).encode(),
                    done["value"]["revision"],
                )
            )
    return check_watches(log, streams, writes)


def _ident(e: dict[str, Any]) -> tuple[Any, ...]:
    return (e["mod"], e["type"], e["key"], e["value"], e["create"], e["version"], e["prev"])


def check_watch(
    history: list[Event],
    rows: list[dict[str, Any]],
    truth: list[dict[str, Any]],
    state: list[dict[str, Any]],
) -> dict[str, Any]:
    if not truth or "error" in truth[-1]:
        return {"watch": result("unknown", error="no ground truth", truth=truth[-1:])}
    problems: list[dict[str, Any]] = []
    # the truth against the writers' acknowledged writes
    by_rev: dict[int, list[dict[str, Any]]] = {}
    for e in truth:
        by_rev.setdefault(e["mod"], []).append(e)
    for inv, done in pairs(history):
        if done is None or done["type"] != "ok" or inv["f"] not in ("put", "delete"):
            continue
        rev = done["value"]["revision"]
        if inv["f"] == "delete" and not done["value"].get("deleted"):
            continue
        evs = [e for e in by_rev.get(rev, []) if e["key"] == inv["key"]]
        want = "put" if inv["f"] == "put" else "delete"
        if not evs or evs[0]["type"] != want or (want == "put" and evs[0]["value"] != inv["value"]):
            problems.append(
                {"kind": "write-missing-from-watch", "op": inv["index"], "revision": rev}
            )
    last_value: dict[str, str | None] = {}
    for e in truth:
        if e["type"] == "put":
            if (e["create"] == e["mod"]) != (e["version"] == 1):
                problems.append({"kind": "bad-create-flag", "event": e})
            if e["key"] in last_value and e["prev"] != last_value[e["key"]]:
                problems.append(
                    {"kind": "bad-prev-kv", "event": e, "expected": last_value[e["key"]]}
                )
            last_value[e["key"]] = e["value"]
        else:
            last_value[e["key"]] = None
    # every watcher against the truth
    streams: dict[str, list[dict[str, Any]]] = {}
    starts: dict[str, int] = {}
    for r in rows:
        w = r["watcher"]
        if "resume" in r:
            starts.setdefault(w, r["resume"])
            prev = streams.get(w, [])
            if prev and r["resume"] <= prev[-1]["mod"]:
                problems.append({"kind": "resume-repeats", "watcher": w, "resume": r["resume"]})
        if "events" in r:
            if len(r["revisions"]) != 1:
                problems.append({"kind": "not-atomic", "watcher": w, "revisions": r["revisions"]})
            streams.setdefault(w, []).extend(r["events"])
    for s in state:
        w = s["watcher"]
        got = streams.get(w, [])
        revs = [e["mod"] for e in got]
        if any(b < a for a, b in itertools.pairwise(revs)):
            problems.append({"kind": "unordered", "watcher": w})
        lo, hi = starts.get(w, s["start"]), s["last"]
        wanted = [_ident(e) for e in truth if lo <= e["mod"] <= hi]
        have = [_ident(e) for e in got]
        if have != wanted:
            first = next(
                (i for i, (a, b) in enumerate(zip(have, wanted, strict=False)) if a != b),
                min(len(have), len(wanted)),
            )
            problems.append(
                {
                    "kind": "stream-differs",
                    "watcher": w,
                    "at": first,
                    "have": have[first : first + 3],
                    "want": wanted[first : first + 3],
                    "have_len": len(have),
                    "want_len": len(wanted),
                }
            )
        if s["end"] and hi < s["end"]:
            problems.append({"kind": "stalled", "watcher": w, "last": hi, "end": s["end"]})
    return {
        "watch": result(
            not problems,
            events=len(truth),
            watchers=len(state),
            problems=problems[:20],
            anomaly_ops=[p["op"] for p in problems if "op" in p][:10],
        )
    }
