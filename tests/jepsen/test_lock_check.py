"""The lock workload's checker: it must flag lost or doubled steps and fencing going back."""

from __future__ import annotations

from typing import Any

from jepsen_like.workloads.lock import check_lock


def _history(incrs: list[tuple[int, int] | None], final: int) -> list[dict[str, Any]]:
    h: list[dict[str, Any]] = []
    for p, item in enumerate(incrs):
        h.append({"index": len(h), "process": p, "type": "invoke", "f": "incr", "value": None})
        if item is None:
            h.append({"index": len(h), "process": p, "type": "info", "f": "incr", "value": None})
        else:
            n, token = item
            h.append({
                "index": len(h), "process": p, "type": "ok", "f": "incr", "value": n,
                "extra": {"token": token},
            })  # fmt: skip
    p = len(incrs)
    h.append({"index": len(h), "process": p, "type": "invoke", "f": "final-read", "value": None})
    h.append({"index": len(h), "process": p, "type": "ok", "f": "final-read", "value": final})
    return h


def test_clean_history_is_valid_even_with_late_acknowledgements() -> None:
    # Step 2's acknowledgement arrives after step 3's: order by step, not by completion.
    assert check_lock(_history([(1, 10), (3, 12), (2, 11)], final=3))["valid"] is True


def test_unknown_outcomes_may_have_happened() -> None:
    assert check_lock(_history([(1, 10), None, (3, 12)], final=3))["valid"] is True


def test_doubled_step_is_caught() -> None:
    res = check_lock(_history([(1, 10), (2, 11), (2, 12)], final=2))
    assert res["valid"] is False and res["duplicate_steps"] == [2]


def test_fencing_going_back_is_caught() -> None:
    res = check_lock(_history([(1, 10), (2, 15), (3, 12)], final=3))
    assert res["valid"] is False and res["tokens_backwards"]


def test_lost_increment_is_caught() -> None:
    res = check_lock(_history([(1, 10), (2, 11), (3, 12)], final=2))
    assert res["valid"] is False and res["lost_increments"] == 1
