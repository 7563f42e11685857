"""CI smoke matrix: real `raftkv serve` clusters under faults, through the CLI (slow).

Six short correct runs that must pass, and four runs against deliberately broken servers
(RAFTKV_UNSAFE) that must fail: the proof that these checks can fail at all.  About 4-5
minutes in all on two cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]


def _run(out: Path, *args: str) -> tuple[int, str, dict[str, Any], list[dict[str, Any]]]:
    cmd = [sys.executable, "-m", "jepsen_like", "run", "--out", str(out), *args]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        text, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        text = _stuck(proc, out)
        pytest.fail(f"jepsen_like run did not end within 240 s; its stacks and output:\n{text}")
    doc = json.loads((out / "results.json").read_text())
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    return proc.returncode, text, doc, history


def _stuck(proc: subprocess.Popen[str], out: Path) -> str:
    """A run past its time: its stacks (SIGUSR1), then SIGINT (it heals and stops its members),
    then SIGKILL; any member process still running under ``out`` is killed by its pid."""
    text = ""
    try:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        text, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        text, _ = proc.communicate()
    finally:
        pids = subprocess.run(
            ["pgrep", "-f", str(out / "data")], capture_output=True, text=True
        ).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    return text[-20000:]


def _faults(history: list[dict[str, Any]], name: str) -> list[Any]:
    return [
        e.get("value")
        for e in history
        if e["process"] == -1 and e["type"] == "info" and e["f"] == f"start-{name}"
    ]


MATRIX = [
    ("register", "kill", "linearizable"),
    ("register", "partition", "linearizable"),
    ("append", "pause", "elle"),
    ("watch", "kill", "watch"),
    ("lease", "clock", "lease"),
    ("register", "garbage", "linearizable"),
]


@pytest.mark.parametrize(("workload", "nemesis", "check"), MATRIX)
def test_correct_cluster_passes(tmp_path: Path, workload: str, nemesis: str, check: str) -> None:
    out = tmp_path / "run"
    rc, text, doc, history = _run(
        out, "--workload", workload, "--nemesis", nemesis, "--time", "20", "--seed", "1"
    )
    assert rc == 0, text + json.dumps(doc["checks"], default=str)[:3000]
    assert text.strip().splitlines()[-1].startswith("VALID"), "one summary line at the end"
    assert doc["checks"][check]["valid"] is True
    assert doc["ops"]["ok"] > 50, "the clients got work done"
    faults = _faults(history, nemesis)
    assert faults and not any("error" in (f or {}) for f in faults), faults
    assert sorted(p.name for p in out.glob("n*.log")) == ["n1.log", "n2.log", "n3.log"]
    assert (out / "report.html").stat().st_size > 1000
    # the members' logs were read: votes promised, kept across restarts, one leader per term
    assert doc["checks"]["vote_durability"]["promises"] > 0
    assert doc["checks"]["election_safety"]["terms"] > 0


def test_stale_reads_are_not_linearizable(tmp_path: Path) -> None:
    out = tmp_path / "stale"
    rc, text, doc, _ = _run(
        out, "--workload", "register", "--nemesis", "partition", "--time", "12",
        "--unsafe", "stale_reads", "--seed", "2",
    )  # fmt: skip
    assert rc == 1, text
    assert doc["checks"]["linearizable"]["valid"] is False
    assert "not linearizable" in doc["checks"]["linearizable"]["report"]
    assert "First anomaly" in (out / "report.html").read_text()
    # the stored run re-checks to the same verdict
    again = subprocess.run(
        [sys.executable, "-m", "jepsen_like", "check", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 1 and again.stdout.startswith("INVALID")


def test_apply_twice_duplicates_set_elements(tmp_path: Path) -> None:
    """Forgetting exactly-once shows up as duplicates once a committed write is retried.
    Whether a given run retries a committed write depends on timing, so up to three seeds
    are tried; the harness must catch it in at least one (it did in every run we measured)."""
    results = []
    for seed in (3, 4, 5):
        out = tmp_path / f"twice-{seed}"
        rc, text, doc, _ = _run(
            out, "--workload", "set", "--nemesis", "kill:followers", "--time", "15",
            "--unsafe", "apply_twice", "--seed", str(seed),
        )  # fmt: skip
        results.append(text)
        if rc == 1:
            res = doc["checks"]["set"]
            assert res["valid"] is False
            assert res["duplicates"], res
            return
        assert rc == 0, text  # anything else is a harness failure
    raise AssertionError(f"apply_twice was never caught: {results}")


def test_ack_before_fsync_loses_acknowledged_writes(tmp_path: Path) -> None:
    """Acknowledging before persisting loses acknowledged elements once a majority dies at a
    storage crash point or by SIGKILL; the same nemeses against the real build are VALID.
    Either the set check finds them lost, or the members themselves find out (the leader's
    commit index beyond a restarted member's log: it stops serving, and the run cannot end
    in a successful final read)."""
    out = tmp_path / "abf"
    rc, text, doc, _ = _run(
        out, "--workload", "set", "--nemesis", "kill:majority,crash-point", "--time", "15",
        "--unsafe", "ack_before_fsync", "--seed", "1",
    )  # fmt: skip
    assert rc == 1, text
    res = doc["checks"]["set"]
    found = res["valid"] is False and (res.get("lost") or res.get("duplicates"))
    detected = [
        p.name
        for p in out.glob("n*.log")
        if "acknowledged state lost" in p.read_text(errors="replace")
    ]
    assert found or detected, res


def test_no_persist_vote_forgets_votes_across_a_kill(tmp_path: Path) -> None:
    """A member that does not persist its vote restarts with the term but no vote: the
    members' logs show the promise and the restored state disagree (the vote could be given
    twice in that term).  Killing the leader (which voted for itself) shows it at once."""
    out = tmp_path / "npv"
    rc, text, doc, _ = _run(
        out, "--workload", "register", "--nemesis", "kill:leader", "--time", "12",
        "--unsafe", "no_persist_vote", "--seed", "1",
    )  # fmt: skip
    assert rc == 1, text
    res = doc["checks"]["vote_durability"]
    assert res["valid"] is False, res
    assert all(f["restored_vote"] == "0" for f in res["forgotten"]), res
    assert all(f["restored_term"] == f["promised_term"] for f in res["forgotten"]), res


def test_membership_disk_and_crash_point_nemeses(tmp_path: Path) -> None:
    """The heavier nemeses do what they say: a member is replaced through the member API,
    a damaged member refuses (CorruptionError) or recovers, a crash point is armed; the
    register history stays linearizable throughout."""
    out = tmp_path / "mix"
    _, text, doc, history = _run(
        out, "--workload", "register", "--nemesis", "member,disk,crash-point", "--time", "30",
        "--clients", "2", "--seed", "7",
    )  # fmt: skip
    assert doc["checks"]["linearizable"]["valid"] is True, text
    done = [
        e["value"]
        for e in history
        if e["process"] == -1 and e["type"] == "info" and e["f"].startswith(("start-", "stop-"))
    ]
    assert done and not any("error" in v for v in done), done
    kinds = {e["f"] for e in history if e["process"] == -1}
    assert kinds & {"start-member", "start-disk", "start-crash-point"}
    if "disk" in doc["checks"]:
        assert doc["checks"]["disk"]["valid"] is True, doc["checks"]["disk"]
    added = [v["added"] for v in done if v.get("added")]
    if added:
        assert (out / f"{added[0]}.log").exists(), "the new member ran and its log was kept"


def test_disk_nemesis_lost_writes_are_detected_and_the_member_replaced(tmp_path: Path) -> None:
    """A follower whose WAL is cut to half, or whose data dir is rolled back to an older copy,
    takes itself out of service (/health: log lost, one log line); the harness then replaces
    it as an operator would (remove, wipe, add an empty member), and the run ends VALID with
    every member alive and converged."""
    out = tmp_path / "loss"
    rc, text, doc, _ = _run(
        out, "--workload", "register", "--nemesis", "disk:wal-truncate+rollback",
        "--time", "30", "--clients", "3", "--seed", "3",
    )  # fmt: skip
    assert rc == 0, text + json.dumps(doc["checks"], default=str)[:3000]
    outcomes = doc["checks"]["disk"]["outcomes"]
    assert outcomes and all(
        o["outcome"] in ("detected", "refused", "recovered") for o in outcomes
    ), outcomes
    detected = [o for o in outcomes if o["outcome"] == "detected"]
    assert detected, outcomes
    assert all(o["lost_lines"] == 1 and o.get("replaced_by", {}).get("added") for o in detected)
    statuses = [json.loads(x) for x in (out / "statuses.jsonl").read_text().splitlines()]
    assert len(statuses) == 3 and len({(s["revision"], s["hash"]) for s in statuses}) == 1


def test_sigint_ends_the_run_early_and_still_checks_it(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) on a long run: faults healed, history checked, one summary line, and
    no member process left behind."""
    out = tmp_path / "int"
    cmd = [
        sys.executable, "-m", "jepsen_like", "run", "--out", str(out), "--workload", "register",
        "--nemesis", "kill", "--time", "600", "--seed", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        hist = out / "history.jsonl"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # wait for real work, not for a fixed time
            if hist.exists() and hist.read_text().count('"type":"ok"') >= 200:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = stdout.decode()
    assert proc.returncode == 0, text
    last = text.strip().splitlines()[-1]
    assert last.startswith("VALID") and "interrupted-by=SIGINT" in last, last
    doc = json.loads((out / "results.json").read_text())
    assert doc["notes"]["interrupted"] == "SIGINT" and doc["ops"]["ok"] >= 200
    leftover = subprocess.run(
        ["pgrep", "-f", str(out / "data")], capture_output=True, text=True
    ).stdout.split()
    assert not leftover, f"member processes left: {leftover}"
