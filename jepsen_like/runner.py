"""The jepsen_like runner: a fresh real cluster, clients recording a history, nemeses on a
seeded schedule, healing, final reads, checks, and a report.

``python -m jepsen_like run --workload register --nemesis kill,partition --time 30`` and
``python -m jepsen_like check DIR`` (re-check a stored run) are the entry points; the work is
:func:`run` and :func:`check_dir`.  A run directory holds:

* ``run.json``: the options (enough to re-check, and to re-run with the same seed);
* ``history.jsonl``: every event (client ops and nemesis actions), Jepsen-style;
* ``<aux>.jsonl``: workload records beside the history (e.g. watch streams);
* ``n1.log`` ...: the members' logs;
* ``results.json``: every checker's result, and ``valid``;
* ``report.html``: the verdict and a timeline with the first anomaly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import raftkv
from jepsen_like import nemesis as nem
from jepsen_like.checker.basic import check_convergence, check_revision_monotonic
from jepsen_like.checker.history import HistoryWriter, pair
from jepsen_like.checker.raftlog import (
    check_election_safety,
    check_vote_durability,
    read_member_logs,
)
from jepsen_like.control import Control
from jepsen_like.report import write_report
from jepsen_like.workloads import WORKLOADS, make_workload
from jepsen_like.workloads.base import (
    Event,
    Recorder,
    RunContext,
    read_history_file,
    read_jsonl,
    to_op,
    write_jsonl,
)
from raftkv.errors import RaftKVError


@dataclass
class RunOptions:
    workload: str = "register"
    nemesis: str = "kill"
    time: float = 30.0
    nodes: int = 3
    clients: int = 5
    seed: int = 0
    out: str = "jepsen-out"
    unsafe: str = ""
    recovery_timeout: float = 60.0
    snapshot_count: int = 10_000
    rate: float | None = None
    """Operations per second over all clients (None: unpaced)."""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    valid: bool | str
    results: dict[str, Any]
    summary: str
    out: Path


def _verdict(results: dict[str, Any]) -> bool | str:
    vals = [r.get("valid") for r in results.values()]
    if any(v is False for v in vals):
        return False
    if all(v is True for v in vals):
        return True
    return "unknown"


def run(opts: RunOptions) -> RunResult:
    """Run one test and check it (blocking)."""
    return asyncio.run(_run(opts))


async def _run(opts: RunOptions) -> RunResult:
    if opts.workload not in WORKLOADS:
        raise ValueError(f"unknown workload {opts.workload!r} (known: {', '.join(WORKLOADS)})")
    nemeses = nem.parse(opts.nemesis)
    if opts.workload == "watch" and any(n.name == "compact" for n in nemeses):
        raise ValueError("the watch workload needs the whole history: no compact nemesis")
    out = Path(opts.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "run.json").write_text(json.dumps(asdict(opts), indent=2))
    env: dict[str, str] = {}
    if opts.unsafe:
        env["RAFTKV_UNSAFE"] = opts.unsafe
    snap_count = opts.snapshot_count
    if any(n.name == "snapshot" for n in nemeses):
        snap_count = min(snap_count, nem.Snapshot.snapshot_count)
    control = Control(opts.nodes, out / "data", env=env, snapshot_count=snap_count)
    rng = random.Random(opts.seed)
    writer = HistoryWriter(out / "history.jsonl")
    rec = Recorder(writer, rate=opts.rate)
    workload = make_workload(opts.workload)
    ctx = RunContext(control, rec, random.Random(rng.random()), out, opts.clients)
    nemesis_rng = random.Random(rng.random())
    notes: dict[str, Any] = {}
    interrupted = _on_signals(notes)
    try:
        await _drive(opts, control, workload, ctx, nemeses, nemesis_rng, notes, interrupted)
    except Exception as e:  # a harness or cluster failure: keep everything, report it
        notes["run_error"] = f"{type(e).__name__}: {e}"
    finally:
        _restore_signals()
        control.stop()
        control.copy_logs(out)
        writer.close()
    for name, rows in ctx.aux.items():
        write_jsonl(out / f"{name}.jsonl", rows)
    (out / "notes.json").write_text(json.dumps(notes, indent=2, default=str))
    return check_dir(out)


_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


def _on_signals(notes: dict[str, Any]) -> asyncio.Event:
    """The first SIGINT / SIGTERM ends the run early: faults are healed and what was
    recorded is checked as usual (``notes["interrupted"]``); a second one exits at once,
    stopping every process the run started."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def handler(sig: signal.Signals) -> None:
        if stop.is_set():
            raise SystemExit(128 + sig)  # propagates out of the loop; finally blocks run
        notes["interrupted"] = sig.name
        stop.set()

    for sig in _SIGNALS:
        loop.add_signal_handler(sig, handler, sig)
    return stop


def _restore_signals() -> None:
    loop = asyncio.get_running_loop()
    for sig in _SIGNALS:
        loop.remove_signal_handler(sig)


async def _drive(
    opts: RunOptions,
    control: Control,
    workload: Any,
    ctx: RunContext,
    nemeses: list[nem.Nemesis],
    nemesis_rng: random.Random,
    notes: dict[str, Any],
    interrupted: asyncio.Event,
) -> None:
    """Start, load, fault, heal, recover, final reads."""
    rec = ctx.recorder
    control.start()
    await control.wait_healthy(60.0)  # generous: CI shares two cores
    await workload.setup(ctx)
    clients = [
        asyncio.create_task(_client(workload, ctx, p), name=f"client-{p}")
        for p in range(opts.clients)
    ]
    sched = asyncio.create_task(nem.schedule(nemeses, control, rec, nemesis_rng, ctx.stop))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(interrupted.wait(), opts.time)
    ctx.stop.set()
    await sched
    await nem.heal_all(nemeses, control, rec)
    # let in-flight operations finish (bounded by the client's command timeout)
    done, pending = await asyncio.wait(clients, timeout=ctx.command_timeout * 2)
    for t in pending:
        t.cancel()
    for t in done:
        if t.exception() is not None:
            notes.setdefault("client_errors", []).append(repr(t.exception()))
    t0 = time.monotonic()
    try:
        await control.wait_healthy(opts.recovery_timeout)
        notes["recovery_s"] = round(time.monotonic() - t0, 2)
    except Exception as e:
        notes["recovery_error"] = f"{type(e).__name__}: {e}"
    await workload.final(ctx)
    ctx.aux["statuses"] = await _converged_statuses(control)


async def _converged_statuses(control: Control, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Every live member's revision and content hash, polled until they agree (a member may
    still be applying the last entries) or ``timeout`` passes; the last answers."""
    statuses: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    async with raftkv.Client(control.endpoints(), command_timeout=3.0) as c:
        while True:
            statuses = []
            for n in control.names:
                addr = control.member(n).client_addr
                try:
                    st = await c.status(addr, hash=True, timeout=3.0)
                except RaftKVError as e:
                    statuses.append({"member": n, "error": f"{type(e).__name__}: {e}"})
                    continue
                statuses.append(
                    {
                        "member": n,
                        "revision": st.revision,
                        "hash": st.hash,
                        "applied": st.raft_applied_index,
                    }
                )
            if check_convergence(statuses)["valid"] or time.monotonic() > deadline:
                return statuses
            await asyncio.sleep(0.5)


async def _client(workload: Any, ctx: RunContext, process: int) -> None:
    # one client process; a crash in the workload code is a harness bug: surface it
    await workload.client(ctx, process)


def check_dir(out: Path) -> RunResult:
    """(Re-)check a stored run: read its history, run the workload's checkers, write
    ``results.json`` and ``report.html``; the verdict and a one-line summary."""
    opts = json.loads((out / "run.json").read_text())
    history: list[Event] = read_history_file(out / "history.jsonl")
    aux = {p.stem: read_jsonl(p) for p in out.glob("*.jsonl") if p.stem != "history"}
    workload = make_workload(opts["workload"])
    results = workload.check(history, aux)
    results.update(_nemesis_checks(history))
    revisions = check_revision_monotonic(c for c in pair(to_op(ev) for ev in history) if c.ok)
    if revisions["stats"]["ops_checked"]:
        results["revision_monotonic"] = revisions
    if aux.get("statuses"):
        results["convergence"] = check_convergence(aux["statuses"])
    member_logs = read_member_logs(out)
    if member_logs:
        results["vote_durability"] = check_vote_durability(member_logs)
        results["election_safety"] = check_election_safety(member_logs)
    notes_path = out / "notes.json"
    notes = json.loads(notes_path.read_text()) if notes_path.exists() else {}
    if "recovery_error" in notes:
        results["recovery"] = {"valid": False, "error": notes["recovery_error"]}
    if notes.get("client_errors"):
        results["clients"] = {"valid": "unknown", "errors": notes["client_errors"]}
    if "run_error" in notes:
        results["run"] = {"valid": False, "error": notes["run_error"]}
    valid = _verdict(results)
    counts = _counts(history)
    doc = {
        "valid": valid,
        "workload": opts["workload"],
        "nemesis": opts["nemesis"],
        "seed": opts["seed"],
        "time": opts["time"],
        "nodes": opts["nodes"],
        "unsafe": opts.get("unsafe", ""),
        "ops": counts,
        "checks": results,
        "notes": notes,
    }
    (out / "results.json").write_text(json.dumps(doc, indent=2, default=str))
    write_report(out / "report.html", doc, history)
    bad = [k for k, r in results.items() if r.get("valid") is not True]
    word = {True: "VALID", False: "INVALID", "unknown": "UNKNOWN"}[valid]
    summary = (
        f"{word}: workload={opts['workload']} nemesis={opts['nemesis']} seed={opts['seed']} "
        f"ops={counts.get('ok', 0)} ok/{counts.get('fail', 0)} fail/{counts.get('info', 0)} info"
        + (f" failed-checks={','.join(bad)}" if bad else "")
        + (f" interrupted-by={notes['interrupted']}" if "interrupted" in notes else "")
        + f" -> {out}"
    )
    return RunResult(valid, results, summary, out)


def _counts(history: list[Event]) -> dict[str, int]:
    out: dict[str, int] = {}
    for ev in history:
        if ev["process"] >= 0 and ev["type"] != "invoke":
            out[ev["type"]] = out.get(ev["type"], 0) + 1
    return out


def _nemesis_checks(history: list[Event]) -> dict[str, Any]:
    """Checks on what the nemeses saw: a corrupted member must refuse (CorruptionError) or
    recover, never exit for another reason."""
    disk = [
        ev["value"]
        for ev in history
        if ev["f"] == "stop-disk" and ev["type"] == "info" and isinstance(ev["value"], dict)
    ]
    if not disk:
        return {}
    bad = [d for d in disk if d.get("outcome") == "unexpected"]
    return {"disk": {"valid": not bad, "outcomes": disk, "unexpected": bad}}


def main_run(opts: RunOptions) -> int:
    """CLI body of ``run``: print one summary line; 0 only when every check passed."""
    with contextlib.suppress(KeyboardInterrupt):
        res = run(opts)
        print(res.summary)
        return 0 if res.valid is True else 1
    return 130
