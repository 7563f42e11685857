"""Runs every ``tests/raft/testdata/*.txt`` datadriven script against the Raft core.

One test per script.  A test fails when a ``check`` fails, when the core asserts, or when the
produced output differs from the golden output in the file (the failure shows a unified
diff).  ``RAFTKV_REWRITE=1 pytest tests/raft/datadriven`` or ``pytest tests/raft/datadriven
--rewrite`` regenerates the golden output; failed checks still fail the test then.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.raft.datadriven.interp import Env, parse_script, render_script, run_file

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"
SCRIPTS = sorted(TESTDATA.glob("*.txt"))


def rewrite_requested(config: pytest.Config) -> bool:
    if os.environ.get("RAFTKV_REWRITE", "") not in ("", "0"):
        return True
    return bool(config.getoption("datadriven_rewrite", default=False))


def test_testdata_is_not_empty() -> None:
    assert SCRIPTS, f"no scripts in {TESTDATA}"


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script(path: Path, request: pytest.FixtureRequest) -> None:
    result = run_file(path, rewrite=rewrite_requested(request.config))
    if result.failures or (not result.matches and not rewrite_requested(request.config)):
        pytest.fail(result.report(), pytrace=False)


# --- the interpreter itself can fail ------------------------------------------------------------

SMALL = """\
# a comment
add-nodes 3

campaign 1

stabilize

check leader=1
----
ok
"""


def test_wrong_golden_output_is_reported_with_a_diff(tmp_path: Path) -> None:
    script = tmp_path / "s.txt"
    script.write_text(SMALL)
    first = run_file(script, rewrite=True)  # fill in the output
    assert not first.failures and script.read_text() != SMALL
    golden = script.read_text()
    assert run_file(script).ok
    script.write_text(golden.replace("State: Leader Lead:1", "State: Leader Lead:2"))
    result = run_file(script)
    assert not result.ok and not result.failures
    assert "-  State: Leader Lead:2" in result.diff()
    assert "+  State: Leader Lead:1" in result.diff()


def test_failed_check_fails_even_when_rewriting(tmp_path: Path) -> None:
    script = tmp_path / "s.txt"
    script.write_text(SMALL.replace("check leader=1", "check leader=2"))
    result = run_file(script, rewrite=True)
    assert result.failures == ["s.txt:8: check leader=2: leader: want 2, got 1"]
    assert "FAILED: leader: want 2, got 1" in script.read_text()


def test_parse_and_render_round_trip() -> None:
    # every command has its separator: rendering with no new output gives the text back
    text = "# c\nadd-nodes 3\n----\nline 1\nline 2\n\n\n# d\ncampaign 1\n----\n"
    assert render_script(parse_script(text), {}) == text
    # a command without a separator gets one (and its output) on rewrite
    items = parse_script("campaign 1\n")
    assert render_script(items, {1: ["out"]}) == "campaign 1\n----\nout\n"


def test_state_machine_safety_violation_is_a_failure() -> None:
    env = Env()
    env.run("add-nodes 2")
    env.record_applied(env.nodes[1], 5, 2, '"a"')
    env.record_applied(env.nodes[2], 5, 3, '"a"')  # same payload, other term
    env.record_applied(env.nodes[2], 6, None, '"b"')
    env.record_applied(env.nodes[1], 6, 3, '"b"')  # a snapshot's entry agrees
    assert env.failures == [
        'State Machine Safety: 2 applied 3/5 "a", but 1 applied 2/5 "a"',
    ]
