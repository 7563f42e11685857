"""Checks on what the members' own logs say about Raft's promises.

Two of Raft's safety properties (Figure 3 of the Raft paper) are about state a client never
sees directly, so the history alone cannot show them broken; the members log the facts:

* **vote durability** (Figure 2, "persistent state ... updated on stable storage before
  responding to RPCs"): a member logs ``campaigning`` (its vote for itself) and ``vote
  granted`` as the vote leaves, and ``node started`` with the term and vote it restored.  After
  a crash, the restored state must still hold the last promise: a later term, or the same term
  with the same vote.  A member that forgets its vote can vote twice in one term and elect two
  leaders (the ``no_persist_vote`` unsafe switch is caught here, usually on the first kill of a
  leader).
* **election safety**: at most one member logs ``became leader`` for a term.

A member whose data the harness wiped on purpose (the ``member`` and ``disk`` nemeses) has a
marker line (:data:`jepsen_like.control.WIPED`); its earlier promises are void.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from jepsen_like.control import WIPED

LogLines = Mapping[str, list[dict[str, Any]]]
"""Member name -> its JSON log lines, oldest first."""


def read_member_logs(out: Path) -> dict[str, list[dict[str, Any]]]:
    """The JSON lines of every ``<member>.log`` in a run directory (other lines skipped)."""
    logs: dict[str, list[dict[str, Any]]] = {}
    for p in sorted(out.glob("n*.log")):
        logs[p.stem] = list(_json_lines(p.read_text(encoding="utf-8", errors="replace")))
    return logs


def _json_lines(text: str) -> Iterable[dict[str, Any]]:
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut short by SIGKILL
        if isinstance(rec, dict):
            yield rec


def check_vote_durability(logs: LogLines) -> dict[str, Any]:
    """Every restart restores at least the last vote the member promised."""
    forgotten: list[dict[str, Any]] = []
    restarts = 0
    promises = 0
    for member, lines in logs.items():
        promised: tuple[int, str] | None = None
        for rec in lines:
            msg = rec.get("msg")
            if msg in ("campaigning", "vote granted") and "term" in rec:
                promised = (int(rec["term"]), str(rec["vote"]))
                promises += 1
            elif msg == WIPED:
                promised = None
            elif msg == "node started" and "term" in rec:
                restarts += 1
                term, vote = int(rec["term"]), str(rec["vote"])
                if promised is not None and (
                    term < promised[0] or (term == promised[0] and vote != promised[1])
                ):
                    forgotten.append(
                        {
                            "member": member,
                            "promised_term": promised[0],
                            "promised_vote": promised[1],
                            "restored_term": term,
                            "restored_vote": vote,
                            "ts": rec.get("ts"),
                        }
                    )
                promised = None
    return {
        "valid": not forgotten,
        "promises": promises,
        "starts": restarts,
        "forgotten": forgotten[:20],
    }


def check_election_safety(logs: LogLines) -> dict[str, Any]:
    """At most one leader per term."""
    leaders: dict[int, set[str]] = {}
    for member, lines in logs.items():
        for rec in lines:
            if rec.get("msg") == "became leader" and "term" in rec:
                leaders.setdefault(int(rec["term"]), set()).add(member)
    two = {t: sorted(ms) for t, ms in sorted(leaders.items()) if len(ms) > 1}
    first = dict(list(two.items())[:20])
    return {"valid": not two, "terms": len(leaders), "several_leaders": first}
