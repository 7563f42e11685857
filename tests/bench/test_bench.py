"""The client benchmarks against a real in-process cluster, driven through the CLI.

These tests check the shape of the reports and that the work really happened (every put
acknowledged and readable, check perf's keys deleted, the limiter never over the target
rate), never how fast it happened: timing belongs in docs/performance.md.
"""

from __future__ import annotations

import asyncio
import math
import re
import statistics
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner

from raftkv.api import prefix_end
from raftkv.bench.perf import KEY_SIZE, LOADS, perf_key, resolve_load
from raftkv.bench.report import PERCENTILES, Recorder, percentile
from raftkv.client import Client
from raftkv.errors import InvalidArgument
from raftkv.testing import LocalCluster
from raftkv_cli.main import cli

T = TypeVar("T")


class ThreadCluster:
    """A LocalCluster on its own event loop thread, so CLI commands (which call
    ``asyncio.run``) can run in the test's thread against it."""

    def __init__(self, root: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.cluster = LocalCluster(3, root)
        self.call(self.cluster.start())

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def endpoints(self) -> str:
        return ",".join(self.cluster.endpoints)

    def count(self, prefix: bytes) -> int:
        async def go() -> int:
            async with Client(self.cluster.endpoints) as c:
                r = await c.get(prefix, range_end=prefix_end(prefix), count_only=True)
            return r.count

        return self.call(go())

    def keys(self, prefix: bytes) -> list[bytes]:
        async def go() -> list[bytes]:
            async with Client(self.cluster.endpoints) as c:
                r = await c.get(prefix, range_end=prefix_end(prefix), keys_only=True)
            return [kv.key for kv in r.kvs]

        return self.call(go())

    def close(self) -> None:
        try:
            self.call(self.cluster.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture(scope="module")
def tc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadCluster]:
    c = ThreadCluster(tmp_path_factory.mktemp("bench"))
    try:
        yield c
    finally:
        c.close()


def summary_value(out: str, name: str) -> float:
    m = re.search(rf"^  {name}:\t([0-9.]+)", out, re.M)
    assert m, f"no {name} line in:\n{out}"
    return float(m.group(1))


def assert_report_shape(out: str, requests: int) -> None:
    assert "Summary:" in out and "Response time histogram:" in out
    assert int(summary_value(out, "Requests")) == requests
    fastest, slowest = summary_value(out, "Fastest"), summary_value(out, "Slowest")
    average = summary_value(out, "Average")
    assert 0 < fastest <= average <= slowest
    assert summary_value(out, "Requests/sec") > 0
    hist = re.findall(r"^  ([0-9.]+) \[(\d+)\]\t\|(∎*)$", out, re.M)
    assert len(hist) == 11
    assert sum(int(n) for _, n, _ in hist) == requests
    bounds = [float(b) for b, _, _ in hist]
    assert bounds == sorted(bounds)
    pcts = re.findall(r"^  ([0-9.]+)% in ([0-9.]+) ms\.$", out, re.M)
    assert [float(p) for p, _ in pcts] == list(PERCENTILES)
    ms = [float(v) for _, v in pcts]
    assert ms == sorted(ms)
    assert "Error distribution" not in out


# --- the report --------------------------------------------------------------------------


def test_recorder_stats_follow_their_definitions() -> None:
    lats = [0.001 * i for i in range(1, 201)]
    rec = Recorder()
    for x in reversed(lats):
        rec.ok(x)
    rec.error(TimeoutError("slow"))
    rec.finish()
    s = rec.stats()
    assert s.requests == len(lats) and s.error_count == 1
    assert s.fastest == min(lats) and s.slowest == max(lats)
    assert math.isclose(s.average, statistics.fmean(lats))
    assert math.isclose(s.stddev, statistics.pstdev(lats))
    for p in PERCENTILES:  # nearest rank: at least p% of the samples are <= the value
        v = s.p(p)
        assert v in lats
        assert sum(1 for x in lats if x <= v) >= min(len(lats), p * len(lats) / 100)
        assert sum(1 for x in lats if x < v) < p * (len(lats) + 1) / 100
    assert sum(c for _, c in s.histogram) == len(lats)
    assert s.histogram[-1][0] == max(lats)
    assert "Error distribution:" in s.render()


def test_percentile_of_nothing_is_zero() -> None:
    assert percentile([], 50) == 0.0
    assert Recorder().stats().histogram == ()


def test_check_perf_loads_match_etcdctl() -> None:
    assert {n: (ld.rate, ld.clients, ld.duration) for n, ld in LOADS.items()} == {
        "s": (150, 50, 60),
        "m": (1000, 200, 60),
        "l": (8000, 500, 60),
        "xl": (15000, 1000, 60),
    }
    assert resolve_load("large") is LOADS["l"]
    with pytest.raises(InvalidArgument):
        resolve_load("huge")
    import random

    k = perf_key(b"/p/", random.Random(1))
    assert len(k) == len(b"/p/") + KEY_SIZE and k.startswith(b"/p/")


# --- against a cluster -------------------------------------------------------------------


def test_benchmark_put_acknowledges_and_stores_every_key(tc: ThreadCluster) -> None:
    total = 300
    res = CliRunner().invoke(
        cli,
        [
            "benchmark", "put", "--endpoints", tc.endpoints, "--clients", "8", "--conns", "2",
            "--total", str(total), "--key-size", "12", "--val-size", "256",
            "--sequential-keys", "--prefix", "/bput/",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert_report_shape(res.stdout, total)
    keys = tc.keys(b"/bput/")
    assert keys == [b"/bput/" + str(i).zfill(6).encode() for i in range(total)]


def test_benchmark_put_single_client_random_keys(tc: ThreadCluster) -> None:
    res = CliRunner().invoke(
        cli,
        [
            "benchmark", "put", "--endpoints", tc.endpoints, "--total", "50",
            "--key-size", "8", "--key-space-size", "5", "--prefix", "/r/",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert_report_shape(res.stdout, 50)
    assert set(tc.keys(b"/r/")) <= {b"/r/" + str(i).zfill(5).encode() for i in range(5)}


def test_benchmark_range_both_consistencies(tc: ThreadCluster) -> None:
    for consistency in ("l", "s"):
        res = CliRunner().invoke(
            cli,
            [
                "benchmark", "range", "/bput/", "--endpoints", tc.endpoints, "--total", "40",
                "--clients", "4", "--consistency", consistency,
            ],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        assert_report_shape(res.stdout, 40)


def test_benchmark_txn_writes_every_key(tc: ThreadCluster) -> None:
    res = CliRunner().invoke(
        cli,
        [
            "benchmark", "txn", "--endpoints", tc.endpoints, "--total", "30", "--clients", "3",
            "--txn-ops", "2", "--key-size", "10", "--prefix", "/t/",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert_report_shape(res.stdout, 30)
    assert tc.count(b"/t/") == 60


def test_check_perf_small_reports_like_etcdctl_and_cleans_up(tc: ThreadCluster) -> None:
    duration = 3
    res = CliRunner().invoke(
        cli,
        [
            "check", "perf", "--endpoints", tc.endpoints, "--load", "s",
            "--duration", str(duration), "--prefix", "/perf/",
        ],
    )  # fmt: skip
    lines = res.stdout.strip().splitlines()
    verdicts = [ln for ln in lines if ln.startswith(("PASS", "FAIL"))]
    assert verdicts[-1] in ("PASS", "FAIL")
    assert res.exit_code == (0 if verdicts[-1] == "PASS" else 1), res.output
    assert any("Throughput" in v for v in verdicts)
    assert any("Slowest request" in v for v in verdicts)
    assert any("Stddev" in v for v in verdicts)
    assert "too many errors" not in res.stdout
    m = re.match(r"(\d+) writes in [0-9.]+ s, .* (\d+) keys deleted", lines[0])
    assert m, lines[0]
    writes, deleted = int(m.group(1)), int(m.group(2))
    assert writes > 0
    assert deleted == writes  # random 63-bit keys: no two writes share a key
    assert writes <= LOADS["s"].rate * duration + 2  # the limiter never runs ahead
    assert tc.count(b"/perf/") == 0


def test_check_perf_refuses_a_prefix_that_holds_keys(tc: ThreadCluster) -> None:
    async def put() -> None:
        async with Client(tc.cluster.endpoints) as c:
            await c.put(b"/full/k", b"v")

    tc.call(put())
    res = CliRunner().invoke(
        cli,
        ["check", "perf", "--endpoints", tc.endpoints, "--duration", "1", "--prefix", "/full/"],
    )
    assert res.exit_code == 1
    assert "has keys" in res.output
    assert tc.keys(b"/full/") == [b"/full/k"]  # and did not touch them


def test_check_perf_rejects_unknown_load(tc: ThreadCluster) -> None:
    res = CliRunner().invoke(cli, ["check", "perf", "--endpoints", tc.endpoints, "--load", "q"])
    assert res.exit_code == 2
    assert "unknown load option q" in res.output


def test_global_endpoints_option_reaches_the_benchmarks(tc: ThreadCluster) -> None:
    res = CliRunner().invoke(
        cli,
        [
            "--endpoints", tc.endpoints, "benchmark", "put", "--total", "5",
            "--sequential-keys", "--prefix", "/g/",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert_report_shape(res.stdout, 5)
    assert tc.count(b"/g/") == 5


def test_benchmark_put_refuses_keys_too_small_for_the_key_space(tc: ThreadCluster) -> None:
    res = CliRunner().invoke(
        cli,
        [
            "benchmark", "put", "--endpoints", tc.endpoints, "--total", "1000",
            "--key-size", "4", "--prefix", "/k/",
        ],
    )  # fmt: skip
    assert res.exit_code == 1
    assert "key size 4 is too small" in res.output
    assert tc.count(b"/k/") == 0


def test_check_perf_reports_even_when_the_clean_up_fails(
    tc: ThreadCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raftkv.errors import Timeout

    async def failing_delete(self: Client, *args: Any, **kwargs: Any) -> Any:
        raise Timeout("delete_range did not complete")

    monkeypatch.setattr(Client, "delete", failing_delete)
    res = CliRunner().invoke(
        cli,
        ["check", "perf", "--endpoints", tc.endpoints, "--duration", "1", "--prefix", "/cf/"],
    )
    assert res.exit_code == 1
    first = res.stdout.splitlines()[0]
    assert "clean-up failed (Timeout: delete_range did not complete)" in first
    assert "raftkv del --prefix /cf/" in first
    assert any(
        ln.startswith("PASS: Throughput") or ln.startswith("FAIL: Throughput")
        for ln in res.stdout.splitlines()
    )
    monkeypatch.undo()
    assert tc.count(b"/cf/") > 0  # nothing was deleted, as reported
