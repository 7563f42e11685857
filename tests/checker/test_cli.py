"""``python -m jepsen_like check-history``: output and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from jepsen_like.cli import EXIT_BAD_INPUT, EXIT_USAGE, cli, main

from .conftest import FIXTURES

needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason="fixtures absent")


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["check-history", *args])
    return res.exit_code, res.output


@needs_fixtures
def test_linearizable_register_log_exits_0() -> None:
    code, out = run(
        "--format", "jepsen-log", "--model", "cas-register",
        str(FIXTURES / "jepsen-etcd" / "etcd_002.log"),
    )  # fmt: skip
    assert (code, out) == (0, "linearizable\n")


@needs_fixtures
def test_non_linearizable_kv_history_exits_1_with_a_pointer() -> None:
    code, out = run("--format", "edn", "--model", "kv", str(FIXTURES / "kv" / "c10-bad.txt"))
    assert code == 1
    first, *rest = out.splitlines()
    assert first == "not linearizable"
    assert any(line.strip().startswith("partition: ") for line in rest)
    assert any("cannot linearize before it returns: op " in line for line in rest)


def _hard_history(path: Path, writers: int) -> Path:
    """Concurrent writes of distinct values and a read of none of them: 2**writers states."""
    lines = [f"INFO  jepsen.util - {p}\t:invoke\t:write\t{p}" for p in range(writers)]
    lines += [f"INFO  jepsen.util - {p}\t:ok\t:write\t{p}" for p in range(writers)]
    lines += [
        "INFO  jepsen.util - 99\t:invoke\t:read\tnil",
        "INFO  jepsen.util - 99\t:ok\t:read\t-1",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_budget_exhausted_prints_unknown_and_exits_2(tmp_path: Path) -> None:
    f = _hard_history(tmp_path / "hard.log", 16)
    code, out = run("--format", "jepsen-log", "--model", "cas-register", "--timeout", "0", str(f))
    assert code == 2
    assert out.startswith("unknown")


def test_same_history_small_enough_is_refuted(tmp_path: Path) -> None:
    f = _hard_history(tmp_path / "small.log", 5)
    code, out = run("--format", "jepsen-log", "--model", "cas-register", str(f))
    assert code == 1
    assert out.startswith("not linearizable")


def test_malformed_history_and_wrong_model_exit_3(tmp_path: Path) -> None:
    bad = tmp_path / "bad.log"
    bad.write_text("INFO  jepsen.util - 0\t:ok\t:read\t1\n")
    assert main(
        ["check-history", "--format", "jepsen-log", "--model", "cas-register", str(bad)]
    ) == (EXIT_BAD_INPUT)
    assert main(["check-history", "--format", "jepsen-log", "--model", "kv", str(bad)]) == (
        EXIT_BAD_INPUT
    )


def test_usage_error_is_not_a_verdict(tmp_path: Path) -> None:
    assert main(["check-history", "--format", "csv", "--model", "kv", str(tmp_path)]) == EXIT_USAGE


@needs_fixtures
def test_module_entry_point_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "jepsen_like", "check-history", "--format", "edn",
         "--model", "kv", str(FIXTURES / "kv" / "c01-ok.txt")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (0, "linearizable\n")
