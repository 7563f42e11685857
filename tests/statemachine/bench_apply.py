"""Apply-throughput figures for the state machine: ``python -m tests.statemachine.bench_apply``.

Not collected by pytest (timing on a shared machine is no pass/fail signal)."""

from __future__ import annotations

import time

from raftkv import api
from raftkv.protocol import codec
from raftkv.state.fsm import KVStateMachine


def main() -> None:
    f = KVStateMachine()
    N = 100_000
    datas = [
        codec.encode_command(
            api.Command(
                api.PutRequest(b"key%07d" % (i % 50_000), b"v" * 64),
                1 + i % 100,
                i + 1,
                1000.0 + i * 1e-4,
            )
        )
        for i in range(N)
    ]
    t = time.perf_counter()
    for i, d in enumerate(datas):
        f.apply(i + 1, d)
    dt = time.perf_counter() - t
    print(f"simple puts (encoded, dedup on): {N / dt:,.0f}/s")
    txns = [
        codec.encode_command(
            api.Command(
                api.TxnRequest(
                    compare=(
                        api.Compare(
                            b"key%07d" % i, api.CompareTarget.VERSION, api.CompareResult.GREATER, 0
                        ),
                    ),
                    success=tuple(api.PutRequest(b"t%d-%d" % (i, j), b"x") for j in range(10)),
                )
            )
        )
        for i in range(5000)
    ]
    t = time.perf_counter()
    for d in txns:
        N += 1
        f.apply(N, d)
    dt = time.perf_counter() - t
    print(f"txn 1 compare + 10 puts: {5000 / dt:,.0f} txns/s")
    t = time.perf_counter()
    for _ in range(100):
        f.range(api.RangeRequest(b"key", api.prefix_end(b"key"), limit=1000))
    print(f"range over 50k keys, limit 1000: {(time.perf_counter() - t) * 10:.1f} ms")
    t = time.perf_counter()
    s = f.snapshot()
    ts = time.perf_counter() - t
    t = time.perf_counter()
    g = KVStateMachine()
    g.restore(s)
    tr = time.perf_counter() - t
    print(
        f"snapshot {len(f.store)} keys / {f.revision} revs: {len(s) / 1e6:.1f} MB, "
        f"{ts * 1e3:.0f} ms; restore {tr * 1e3:.0f} ms; hashes equal {f.hash() == g.hash()}"
    )
    t = time.perf_counter()
    f.store.compact(f.revision)
    print(f"compact all history: {(time.perf_counter() - t) * 1e3:.0f} ms")
    t = time.perf_counter()
    f.hash()
    print(f"hash: {(time.perf_counter() - t) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
