"""Lock clients as real processes: feeding worker lines into the history, the ``pause``
nemesis's ``client`` mode, and (slow) whole runs: ``lock-unfenced`` must fail under ``pause``
once the lock holder is SIGSTOPped past its TTL, ``lock`` must pass, and no worker outlives
its run."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from jepsen_like import nemesis as nem
from jepsen_like.control import ClientProcs
from jepsen_like.workloads.base import NEMESIS, Recorder, pairs
from jepsen_like.workloads.lock import check_lock, feed
from jepsen_like.workloads.lock_worker import LineRecorder

ROOT = Path(__file__).resolve().parents[2]


def _line(**kw: Any) -> bytes:
    return (json.dumps(kw) + "\n").encode()


# --- feeding worker lines ------------------------------------------------------------------


def test_feed_keeps_worker_times_and_arrival_order() -> None:
    rec = Recorder()
    clients = ClientProcs()
    # worker-1's completion arrives after worker-0's invocation but was timed earlier
    feed(rec, clients, "worker-0", _line(process=0, type="invoke", f="incr", time_ns=500))
    feed(
        rec,
        clients,
        "worker-1",
        _line(process=1, type="ok", f="incr", key="jl/counter", value=3, time_ns=400,
              extra={"token": 9}, index=77),
    )  # fmt: skip
    assert [e["index"] for e in rec.events] == [0, 1], "indices are arrival order"
    assert [e["time_ns"] for e in rec.events] == [500, 400], "the worker's own times"
    assert rec.events[1]["value"] == 3 and rec.events[1]["extra"] == {"token": 9}
    assert rec.events[0]["extra"] == {} and rec.events[0]["key"] is None


def test_feed_tracks_the_holder_from_markers() -> None:
    rec = Recorder()
    clients = ClientProcs()
    feed(rec, clients, "worker-0", _line(marker="holding"))
    assert clients.holder == "worker-0" and rec.events == [], "markers are not history"
    feed(rec, clients, "worker-1", _line(marker="released"))  # not the holder: no change
    assert clients.holder == "worker-0"
    feed(rec, clients, "worker-0", _line(marker="released"))
    assert clients.holder is None
    feed(rec, clients, "worker-2", _line(marker="holding"))
    clients.unregister("worker-2")  # a worker that ends while holding is no holder
    assert clients.holder is None


async def test_worker_recorder_lines_feed_back_into_the_same_history(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The worker's LineRecorder prints what the runner's feed() records: same ok / fail /
    info semantics, times against the runner's t0."""
    runner = Recorder()
    worker = LineRecorder(runner.t0)

    async def ok() -> int:
        return 1

    async def boom() -> int:
        raise OSError("connection reset")

    await worker.run(3, "incr", "jl/counter", None, ok)
    await worker.run(3, "incr", "jl/counter", None, boom)
    before = runner.now()
    for line in capsys.readouterr().out.splitlines():
        feed(runner, ClientProcs(), "worker-3", line.encode())
    assert [(e["type"], e["value"]) for e in runner.events] == [
        ("invoke", None),
        ("ok", 1),
        ("invoke", None),
        ("info", None),
    ]
    assert all(0 <= e["time_ns"] <= before for e in runner.events)
    assert [e["index"] for e in runner.events] == [0, 1, 2, 3]
    assert [done is not None for _, done in pairs(runner.events)] == [True, True]


# --- the pause nemesis's client mode -------------------------------------------------------


def _stopped(pid: int, timeout: float = 2.0) -> bool:
    """Whether the process is stopped (state T in /proc), waiting up to ``timeout`` for a
    signal just sent to take effect (delivery is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "T":
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def _running(pid: int, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while _stopped(pid, 0):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class _FakeControl:
    """Just what Pause needs: members (never paused here) and client processes."""

    def __init__(self) -> None:
        self.names = ["n1", "n2", "n3"]
        self.paused: set[str] = set()
        self.clients = ClientProcs()
        self.member_pauses: list[str] = []

    def alive(self, name: str) -> bool:
        return True

    async def leader(self) -> str | None:
        return "n1"

    def pause(self, name: str) -> None:
        self.member_pauses.append(name)

    def resume(self, name: str) -> None:
        pass


@pytest.fixture
def sleepers() -> Any:
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in "ab"]
    yield procs
    for p in procs:
        p.kill()
        p.wait()


async def test_client_mode_pauses_the_holder_past_its_ttl(sleepers: list[Any]) -> None:
    c: Any = _FakeControl()
    c.clients.lease_ttl = 2.0
    for i, p in enumerate(sleepers):
        c.clients.register(f"worker-{i}", p.pid)
    c.clients.holding("worker-1", True)
    pause = nem.Pause(("client",))
    info = await pause.start(c, random.Random(1))
    assert info["clients"] == ["worker-1"] and info["holder"] == "worker-1"
    assert 3.0 <= info["min_duration_s"] <= 5.0, "TTL + 1..3 s"
    assert _stopped(sleepers[1].pid) and _running(sleepers[0].pid, 0)
    assert c.member_pauses == []
    info = await pause.stop(c)
    assert info["clients"] == ["worker-1"]
    assert _running(sleepers[1].pid) and not c.clients.paused


async def test_client_mode_waits_briefly_for_a_holder(sleepers: list[Any]) -> None:
    c: Any = _FakeControl()
    for i, p in enumerate(sleepers):
        c.clients.register(f"worker-{i}", p.pid)
    pausing = asyncio.create_task(nem.Pause(("client",)).start(c, random.Random(0)))
    await asyncio.sleep(0.1)
    assert not pausing.done()
    c.clients.holding("worker-1", True)
    info = await pausing
    assert info["holder"] == "worker-1" and _stopped(sleepers[1].pid)
    c.clients.resume_all()


async def test_client_mode_without_holder_pauses_some_client_and_heal_resumes(
    sleepers: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nem, "HOLDER_WAIT", 0.1)
    c: Any = _FakeControl()
    for i, p in enumerate(sleepers):
        c.clients.register(f"worker-{i}", p.pid)
    info = await nem.Pause(("client",)).start(c, random.Random(2))
    assert info["holder"] is None and len(info["clients"]) == 1
    pid = sleepers[int(info["clients"][0][-1])].pid
    assert _stopped(pid)
    assert c.clients.resume_all() == info["clients"]
    assert _running(pid)
    c.clients.kill_all()
    assert not c.clients.pids
    for p in sleepers:
        assert p.wait(timeout=5) == -9


async def test_default_pause_picks_clients_only_when_registered(
    sleepers: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nem, "HOLDER_WAIT", 0.0)
    plain: Any = _FakeControl()
    modes = [(await nem.Pause().start(plain, random.Random(s)))["mode"] for s in range(40)]
    assert set(modes) <= set(nem.TARGETS), "no client mode for workloads without clients"
    with_clients: Any = _FakeControl()
    with_clients.clients.register("worker-0", sleepers[0].pid)
    picked = []
    for s in range(40):
        pause = nem.Pause()
        picked.append((await pause.start(with_clients, random.Random(s)))["mode"])
        await pause.stop(with_clients)
    assert 10 <= picked.count("client") <= 30, picked
    assert set(picked) - {"client"} <= set(nem.TARGETS)
    # an explicit variant list is obeyed as given: no client mode unless asked for
    explicit = nem.parse("pause:leader")[0]
    assert isinstance(explicit, nem.Pause)
    assert [(await explicit.start(with_clients, random.Random(s)))["mode"] for s in range(10)] == [
        "leader"
    ] * 10
    assert isinstance(p := nem.parse("pause:client+leader")[0], nem.Pause)
    assert p.modes == ("client", "leader")
    with pytest.raises(ValueError, match="unknown variant"):
        nem.parse("kill:client")


class _MinLength:
    name = "minlen"

    async def start(self, c: Any, rng: random.Random) -> dict[str, Any]:
        return {"min_duration_s": 0.3}

    async def stop(self, c: Any) -> dict[str, Any]:
        return {}

    async def heal(self, c: Any) -> None:
        return None


async def test_schedule_keeps_a_fault_for_its_minimum_duration() -> None:
    rec = Recorder()
    stop = asyncio.Event()
    task = asyncio.create_task(
        nem.schedule([_MinLength()], None, rec, random.Random(0), stop, quiet=(0, 0.01),
                     fault=(0, 0.01))
    )  # fmt: skip
    while not any(e["f"] == "stop-minlen" and e["type"] == "info" for e in rec.events):
        await asyncio.sleep(0.01)
    stop.set()
    await task
    start = next(e for e in rec.events if e["f"] == "start-minlen" and e["type"] == "info")
    end = next(e for e in rec.events if e["f"] == "stop-minlen" and e["type"] == "invoke")
    assert end["time_ns"] - start["time_ns"] >= 0.3e9
    assert all(e["process"] == NEMESIS for e in rec.events)


# --- whole runs (slow) ---------------------------------------------------------------------


def _run(out: Path, workload: str, nemesis: str, seed: int, secs: int) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "jepsen_like", "run", "--out", str(out), "--workload", workload,
        "--nemesis", nemesis, "--time", str(secs), "--seed", str(seed),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    doc: dict[str, Any] = json.loads((out / "results.json").read_text())
    doc["_rc"] = proc.returncode
    doc["_text"] = proc.stdout + proc.stderr
    doc["_history"] = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    return doc


def _no_worker_left(out: Path) -> None:
    pids = [json.loads(x)["pid"] for x in (out / "lock_workers.jsonl").read_text().splitlines()]
    assert len(pids) == 5
    deadline = time.monotonic() + 5
    for pid in pids:
        cmdline = Path(f"/proc/{pid}/cmdline")
        while cmdline.exists() and b"lock_worker" in cmdline.read_bytes():
            assert time.monotonic() < deadline, f"worker {pid} outlived the run"
            time.sleep(0.1)


def _holder_pauses(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        e["value"]
        for e in history
        if e["process"] == NEMESIS
        and e["f"] == "start-pause"
        and e["type"] == "info"
        and e["value"].get("mode") == "client"
        and e["value"].get("holder")
    ]


@pytest.mark.slow
@pytest.mark.e2e
def test_unfenced_lock_fails_when_the_holder_is_paused(tmp_path: Path) -> None:
    out = tmp_path / "unfenced"
    doc = _run(out, "lock-unfenced", "pause", seed=1, secs=25)
    assert doc["_rc"] == 1 and doc["_text"].strip().splitlines()[-1].startswith("INVALID")
    assert _holder_pauses(doc["_history"]), "the nemesis paused a lock holder"
    res = doc["checks"]["lock"]
    assert res["valid"] is False
    assert res["lost_increments"] > 0 or res["duplicate_steps"], res
    # only the lock check fails: the cluster itself stayed correct
    assert [k for k, r in doc["checks"].items() if r["valid"] is not True] == ["lock"]
    _no_worker_left(out)


@pytest.mark.slow
@pytest.mark.e2e
def test_fenced_lock_refuses_the_paused_holders_write(tmp_path: Path) -> None:
    out = tmp_path / "fenced"
    doc = _run(out, "lock", "pause", seed=1, secs=25)
    assert doc["_rc"] == 0, doc["_text"] + json.dumps(doc["checks"], default=str)[:2000]
    assert doc["checks"]["lock"]["valid"] is True
    assert _holder_pauses(doc["_history"])
    refused = [
        e
        for e in doc["_history"]
        if e["type"] == "fail" and "fenced write refused" in e["extra"].get("error", "")
    ]
    assert refused, "a paused holder's write was refused by the fence"
    assert check_lock(doc["_history"])["acknowledged"] > 50
    _no_worker_left(out)


_PARENT = """
import subprocess, sys, time
w = subprocess.Popen(
    [sys.executable, "-m", "jepsen_like.workloads.lock_worker", "--endpoints", "127.0.0.1:9",
     "--process", "0", "--clients", "1", "--t0-ns", "0", "--command-timeout", "0.3"],
    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=sys.stdout,
)
print(w.pid, flush=True)
time.sleep(60)
"""


def test_a_stopped_worker_dies_with_its_runner() -> None:
    """A SIGSTOPped worker cannot see its stdin close; when the runner dies it is killed all
    the same (parent-death signal), so no worker outlives a crashed run."""
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        # its first error line: the worker is past start-up and in its loop
        assert parent.stdout.readline().startswith("p0: "), "the worker runs its loop"
        os.kill(pid, signal.SIGSTOP)
        assert _stopped(pid)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and not _zombie(pid):
        assert time.monotonic() < deadline, "the stopped worker outlived its parent"
        time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        return True
