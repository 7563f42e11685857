"""The search at scale: 50-client kv histories of thousands of operations, simulated from a
correct store (linearizable) or with one get corrupted (not), answered fast; the memory
bound turns a search into 'unknown'; the pruning agrees with the plain search."""

from __future__ import annotations

import math
import random
from collections.abc import Hashable
from typing import cast

import pytest

from jepsen_like.checker.formats import parse_edn
from jepsen_like.checker.linearizability import (
    DEFAULT_MEMORY_LIMIT,
    Operation,
    UnknownT,
    Verdict,
    check,
    report,
)
from jepsen_like.checker.models import KvFn, KvInput, KvOutput, KvStore

from .conftest import FIXTURES
from .histgen import corrupt, generate, to_edn

KV = KvStore()
KvOp = Operation[KvInput, KvOutput]


class PlainKv:
    """The kv model without the optional hooks: the search runs without any pruning."""

    name = "plain-kv"

    def init(self) -> str:
        return KV.init()

    def step(self, state: str, input: KvInput, output: KvOutput | UnknownT) -> tuple[bool, str]:
        return KV.step(state, input, output)

    def partition_key(self, input: KvInput) -> Hashable:
        return KV.partition_key(input)

    def describe_operation(self, input: KvInput, output: KvOutput | UnknownT) -> str:
        return KV.describe_operation(input, output)

    def describe_state(self, state: str) -> str:
        return KV.describe_state(state)


@pytest.mark.parametrize("seed", range(3))
def test_fifty_clients_thousands_of_ops_linearizable(seed: int) -> None:
    gen = generate(clients=50, n_ops=5000, keys=10, seed=seed)
    result = check(KV, gen.ops, timeout=60)
    assert result.verdict is Verdict.LINEARIZABLE
    assert result.partitions == 10 == result.partitions_checked
    assert result.memo_bytes < DEFAULT_MEMORY_LIMIT


def test_fifty_clients_with_timed_out_writes_linearizable() -> None:
    gen = generate(clients=50, n_ops=3000, keys=10, seed=7, unknown_rate=0.05)
    assert any(op.unknown for op in gen.ops)
    assert check(KV, gen.ops, timeout=60).verdict is Verdict.LINEARIZABLE


@pytest.mark.parametrize("seed", range(3))
def test_fifty_clients_one_corrupted_get_is_pointed_at(seed: int) -> None:
    gen = generate(clients=50, n_ops=5000, keys=10, seed=seed)
    ops, victim = corrupt(gen, seed)
    key = next(op.input.key for op in ops if op.id == victim)
    result = check(KV, ops, timeout=60, all_partitions=True)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.partitions_checked == 10  # every partition searched
    assert len(result.anomalies) == 1 and result.anomaly is result.anomalies[0]
    a = result.anomaly
    assert a.partition == key
    assert a.blocking_op == victim and a.unplaced[0] == victim
    assert victim not in a.longest_prefix
    # The prefix is a real linearization of its partition: replay it.
    by_id = {op.id: op for op in ops}
    state = KV.init()
    for op_id in a.longest_prefix:
        ok, state = KV.step(state, by_id[op_id].input, by_id[op_id].output)
        assert ok
    assert repr(state) == a.state
    assert f"op {victim} " in report(KV, ops, result)


def test_generated_history_reads_back_through_edn() -> None:
    gen = generate(clients=50, n_ops=400, keys=10, seed=3)
    ops = cast(list[KvOp], parse_edn(to_edn(gen.ops).splitlines()))
    assert len(ops) == 400
    assert check(KV, ops).verdict is Verdict.LINEARIZABLE
    bad, _ = corrupt(gen, 3)
    bad_ops = cast(list[KvOp], parse_edn(to_edn(bad).splitlines()))
    assert check(KV, bad_ops).verdict is Verdict.NOT_LINEARIZABLE


def test_small_memory_bound_gives_unknown_not_a_crash() -> None:
    gen = generate(clients=50, n_ops=2000, keys=4, seed=1)
    result = check(PlainKv(), gen.ops, memory_limit=64 * 1024)
    assert result.verdict is Verdict.UNKNOWN
    assert result.exhausted == "memory"
    assert result.anomaly is None
    assert 64 * 1024 < result.memo_bytes < 64 * 1024 + 4096
    assert report(PlainKv(), gen.ops, result).startswith("unknown (memory budget ran out")
    # The same history with the default bound is answered.
    assert check(KV, gen.ops).verdict is Verdict.LINEARIZABLE


def test_memory_bound_after_a_violation_keeps_the_violation() -> None:
    gen = generate(clients=50, n_ops=2000, keys=4, seed=1)
    ops, victim = corrupt(gen, 1)
    first = check(KV, ops, all_partitions=True)
    assert first.verdict is Verdict.NOT_LINEARIZABLE
    # With a bound tight enough to stop some later partition, the violation stands.
    result = check(KV, ops, all_partitions=True, memory_limit=first.memo_bytes - 1)
    assert result.verdict is Verdict.NOT_LINEARIZABLE or result.exhausted == "memory"
    if result.anomaly is not None:
        assert result.anomaly.blocking_op == victim


def _stale_history(rng: random.Random, clients: int, n_ops: int, keys: int) -> list[KvOp]:
    """A simulated history where a few gets return some other value the key once held."""
    seed = rng.randrange(10**6)
    gen = generate(clients, n_ops, keys, seed, unknown_rate=0.15)
    seen: dict[str, list[str]] = {}
    out: list[KvOp] = []
    for op in gen.ops:
        if op.input.fn is KvFn.GET and isinstance(op.output, str):
            values = seen.setdefault(op.input.key, [""])
            values.append(op.output)
            if rng.random() < 0.08:
                wrong = rng.choice(values)
                op = Operation(op.id, op.process, op.input, wrong, op.call, op.ret)
        out.append(op)
    return out


@pytest.mark.parametrize(("clients", "n_ops", "keys"), [(6, 60, 2), (8, 30, 1), (3, 40, 1)])
def test_pruned_search_agrees_with_plain_search(clients: int, n_ops: int, keys: int) -> None:
    rng = random.Random(2024 + clients)
    verdicts = set()
    compared = 0
    for _ in range(120):
        ops = _stale_history(rng, clients, n_ops, keys)
        fast = check(KV, ops)
        assert fast.verdict is not Verdict.UNKNOWN
        # The plain search can blow up on these (that is what the pruning is for).
        plain = check(PlainKv(), ops, memory_limit=2 * 2**20)
        if plain.verdict is Verdict.UNKNOWN:
            continue
        compared += 1
        assert fast.verdict is plain.verdict, ops
        verdicts.add(fast.verdict)
        if fast.anomaly is not None and plain.anomaly is not None:
            assert fast.anomaly.partition == plain.anomaly.partition
    assert verdicts == {Verdict.LINEARIZABLE, Verdict.NOT_LINEARIZABLE}
    assert compared >= 70


def test_unknown_put_rescues_a_get_only_if_its_value_fits() -> None:
    def op(i: int, inp: KvInput, out: KvOutput | UnknownT, call: float, ret: float) -> KvOp:
        return Operation(i, i, inp, out, call, ret)

    from jepsen_like.checker.linearizability import UNKNOWN

    base = [
        op(0, KvInput(KvFn.APPEND, "k", "a"), None, 0, 1),
        op(1, KvInput(KvFn.APPEND, "k", "b"), None, 2, 3),
        op(2, KvInput(KvFn.PUT, "k", "x"), UNKNOWN, 4, math.inf),
        op(3, KvInput(KvFn.APPEND, "k", "c"), None, 5, 6),
    ]
    # 'xc': the timed-out put took effect before the append; 'abc': it never did.
    for seen, want in (("xc", True), ("abc", True), ("ac", False), ("yc", False)):
        ops = [*base, op(4, KvInput(KvFn.GET, "k"), seen, 7, 8)]
        assert check(KV, ops).ok is want, seen
        assert check(PlainKv(), ops).ok is want, seen


def test_fixture_kv_bad_history_all_partitions() -> None:
    path = FIXTURES / "kv" / "c10-bad.txt"
    if not path.is_file():
        pytest.skip(f"fixtures absent: {path}")
    with path.open() as f:
        ops = parse_edn(f)
    kv_ops: list[KvOp] = ops  # type: ignore[assignment]
    result = check(KV, kv_ops, all_partitions=True)
    assert result.verdict is Verdict.NOT_LINEARIZABLE
    assert result.partitions_checked == result.partitions
    lines = path.read_text().splitlines()
    for a in result.anomalies:
        for op_id in a.unplaced:
            assert ":invoke" in lines[op_id - 1]
            assert op_id not in a.longest_prefix
    plain = check(PlainKv(), kv_ops, all_partitions=True)
    assert [a.partition for a in plain.anomalies] == [a.partition for a in result.anomalies]
