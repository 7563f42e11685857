"""The simulator end to end: many seeds clean, each mutation caught, replay exact, CLI shape."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from jepsen_like.sim.__main__ import main, run_seeds, run_seeds_parallel
from jepsen_like.sim.cluster import run
from raftkv.raft.config import MUTATIONS

STEPS = 300
SAFETY = {
    "election safety",
    "leader append-only",
    "log matching",
    "leader completeness",
    "state machine safety",
    "persistence",
    "linearizable read",
}


def first_failing(mutation: str) -> int:
    """The first seed in 0..199 on which ``mutation`` is caught."""
    _, failed = run_seeds(range(200), STEPS, mutation=mutation, stop_at_first=True)
    assert failed, f"{mutation} not caught in 200 seeds"
    return failed[0].seed


def _assert_clean(first: int, count: int) -> None:
    n, failed = run_seeds(range(first, first + count), STEPS)
    assert n == count
    if failed:
        res = failed[0]
        trace = "\n".join(res.trace())
        pytest.fail(f"{len(failed)} violating seeds; first {res.seed}: {res.violation}\n{trace}")


@pytest.mark.slow
def test_seeds_0_to_499_have_no_violation() -> None:
    _assert_clean(0, 500)


@pytest.mark.slow
def test_seeds_500_to_999_have_no_violation() -> None:
    _assert_clean(500, 500)


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_each_mutation_is_caught_by_a_safety_invariant(mutation: str) -> None:
    result = CliRunner().invoke(
        main, ["--seeds", "200", "--steps", str(STEPS), "--mutation", mutation, "--stop"]
    )
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].endswith(", 1 violations")
    seed = int(lines[1].split()[3])
    res = run(seed, STEPS, mutation=mutation)
    assert res.violation is not None and res.violation.invariant in SAFETY, res.violation


def test_replaying_a_seed_gives_the_same_trace() -> None:
    a = run(11, STEPS)
    b = run(11, STEPS)
    assert a.events == b.events and a.digest == b.digest
    assert len(a.events) > 50
    assert run(12, STEPS).digest != a.digest


def test_replaying_a_failing_seed_gives_the_same_violation_and_trace() -> None:
    seed = first_failing("vote_ignores_log")
    a = run(seed, STEPS, mutation="vote_ignores_log")
    b = run(seed, STEPS, mutation="vote_ignores_log")
    assert a.violation is not None and a.violation == b.violation
    assert a.events == b.events


def test_cli_summary_line_and_exit_code_on_success() -> None:
    result = CliRunner().invoke(main, ["--seeds", "3", "--steps", "100"])
    assert result.exit_code == 0, result.output
    assert result.output == "3 seeds, 0 violations\n"


def test_cli_replays_one_seed_and_prints_the_trace() -> None:
    seed = first_failing("vote_ignores_log")
    args = ["--seed", str(seed), "--steps", str(STEPS), "--mutation", "vote_ignores_log"]
    first = CliRunner().invoke(main, args)
    again = CliRunner().invoke(main, args)
    assert first.exit_code == 1
    assert first.output == again.output
    lines = first.output.splitlines()
    assert lines[0] == "1 seeds, 1 violations"
    assert lines[1].startswith(f"first failing seed: {seed} ")
    assert "VIOLATION" in lines[-1]
    assert 20 <= len([ln for ln in lines if ln.startswith("  [")]) <= 30


def test_cli_lists_the_mutations() -> None:
    result = CliRunner().invoke(main, ["--mutation", "list"])
    assert result.exit_code == 0
    assert result.output.split() == sorted(MUTATIONS)


def test_cli_refuses_an_unknown_mutation() -> None:
    result = CliRunner().invoke(main, ["--mutation", "nope", "--seeds", "1"])
    assert result.exit_code == 2


def test_nodes_option_fixes_the_cluster_size() -> None:
    assert {run(s, 30, nodes=5, liveness=False).nodes for s in range(3)} == {5}
    assert [run(s, 30, liveness=False).nodes for s in range(3)] == [3, 5, 7]


def test_replay_is_identical_across_processes_and_hash_seeds() -> None:
    mutation = "skip_log_matching_check"
    seed = first_failing(mutation)

    def replay(hash_seed: str) -> str:
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        args = ["--seed", str(seed), "--steps", str(STEPS), "--mutation", mutation]
        out = subprocess.run(
            [sys.executable, "-m", "jepsen_like.sim", *args, "--trace", "1000"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert out.returncode == 1, out.stderr
        return out.stdout

    assert replay("1") == replay("2")


def test_parallel_runs_find_the_same_failing_seeds_as_serial_runs() -> None:
    seeds = range(30)
    _, serial = run_seeds(seeds, 200, mutation="skip_log_matching_check")
    _, parallel = run_seeds_parallel(seeds, 200, 2, mutation="skip_log_matching_check")
    assert serial, "the mutation is caught in 30 seeds"
    assert [(r.seed, r.violation, r.digest) for r in serial] == [
        (r.seed, r.violation, r.digest) for r in parallel
    ]
