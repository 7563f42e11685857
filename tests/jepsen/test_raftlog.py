"""The checks on the members' logs: vote durability and election safety (fast, synthetic
logs in the format raftkv's JSON logging writes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jepsen_like.checker.raftlog import (
    check_election_safety,
    check_vote_durability,
    read_member_logs,
)
from jepsen_like.control import WIPED


def started(term: int, vote: str) -> dict[str, Any]:
    return {"msg": "node started", "term": term, "vote": vote}


def granted(term: int, vote: str) -> dict[str, Any]:
    return {"msg": "vote granted", "term": term, "vote": vote}


def test_a_restart_that_keeps_the_vote_or_moves_on_is_fine() -> None:
    logs = {
        "n1": [started(0, "0"), granted(2, "b"), started(2, "b")],
        "n2": [started(0, "0"), {"msg": "campaigning", "term": 3, "vote": "a"}, started(5, "0")],
    }
    res = check_vote_durability(logs)
    assert res["valid"] is True and res["promises"] == 2 and res["starts"] == 4


def test_a_forgotten_vote_is_flagged() -> None:
    logs = {"n1": [started(0, "0"), granted(2, "b"), started(2, "0")]}
    res = check_vote_durability(logs)
    assert res["valid"] is False
    assert res["forgotten"][0] | {"ts": None} == {
        "member": "n1",
        "promised_term": 2,
        "promised_vote": "b",
        "restored_term": 2,
        "restored_vote": "0",
        "ts": None,
    }


def test_a_lost_term_or_a_different_vote_is_flagged() -> None:
    assert not check_vote_durability({"n1": [granted(4, "b"), started(3, "b")]})["valid"]
    assert not check_vote_durability({"n1": [granted(4, "b"), started(4, "c")]})["valid"]


def test_a_wipe_by_the_harness_voids_earlier_promises() -> None:
    logs = {"n1": [granted(7, "b"), {"msg": WIPED}, started(0, "0")]}
    assert check_vote_durability(logs)["valid"] is True


def test_two_leaders_in_one_term_are_flagged() -> None:
    ok = {"n1": [{"msg": "became leader", "term": 2}], "n2": [{"msg": "became leader", "term": 3}]}
    assert check_election_safety(ok) == {"valid": True, "terms": 2, "several_leaders": {}}
    bad = {**ok, "n3": [{"msg": "became leader", "term": 3}]}
    res = check_election_safety(bad)
    assert res["valid"] is False and res["several_leaders"] == {3: ["n2", "n3"]}


def test_logs_are_read_from_a_run_directory_skipping_torn_lines(tmp_path: Path) -> None:
    lines = [json.dumps(granted(2, "b")), "plain text", json.dumps(started(2, "b"))[:-5]]
    (tmp_path / "n1.log").write_text("\n".join(lines) + "\n")
    (tmp_path / "other.txt").write_text("{}")
    logs = read_member_logs(tmp_path)
    assert list(logs) == ["n1"] and logs["n1"] == [granted(2, "b")]
