"""Shared helpers for the checker tests: where the fixtures live, and history builders."""

from __future__ import annotations

import math
from pathlib import Path

from jepsen_like.checker.linearizability import UNKNOWN, Operation
from jepsen_like.checker.models import RegisterFn, RegisterInput, RegisterOutput, Value


def _fixtures() -> Path:
    beside = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
    fallback = Path("/work/shared/fixtures")
    root = beside if beside.is_dir() or not fallback.is_dir() else fallback
    return root / "linearizability"


FIXTURES = _fixtures()
"""Real Jepsen histories with known verdicts, in ../shared/fixtures beside the project (not
copied), or /work/shared/fixtures when that is where they are."""

RegOp = Operation[RegisterInput, RegisterOutput]


class Hist:
    """Builds register histories by hand: ``h.write(1, call=0, ret=2)``; ids count up."""

    def __init__(self) -> None:
        self.ops: list[RegOp] = []

    def _add(self, inp: RegisterInput, out: RegisterOutput, call: float, ret: float) -> int:
        op_id = len(self.ops)
        output = UNKNOWN if ret == math.inf else out
        self.ops.append(Operation(op_id, op_id, inp, output, call, ret))
        return op_id

    def read(self, value: Value, call: float, ret: float = math.inf) -> int:
        return self._add(RegisterInput(RegisterFn.READ), value, call, ret)

    def write(self, value: Value, call: float, ret: float = math.inf) -> int:
        return self._add(RegisterInput(RegisterFn.WRITE, value), None, call, ret)

    def cas(self, expected: Value, new: Value, ok: bool, call: float, ret: float = math.inf) -> int:
        return self._add(RegisterInput(RegisterFn.CAS, new, expected), ok, call, ret)
