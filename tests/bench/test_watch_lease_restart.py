"""``benchmark watch``, ``benchmark lease-keepalive`` and ``benchmark restart``: the reports
have their shape and the work really happened (every watcher saw every put once, every lease
survived and was revoked, every key survived both restarts, every process stopped) — never a
timing threshold."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from raftkv.bench.procs import cpu_seconds, disk_usage, rss_bytes
from raftkv.bench.watch import Dist
from raftkv.client import Client
from raftkv_cli.main import cli
from tests.bench.test_bench import ThreadCluster, assert_report_shape

NO_ENV = {"RAFTKV_ENDPOINTS": None}


@pytest.fixture(scope="module")
def tc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadCluster]:
    c = ThreadCluster(tmp_path_factory.mktemp("bench2"))
    try:
        yield c
    finally:
        c.close()


def ms_figures(line: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"(p50|p90|p99|max) (-?[0-9.]+) ms", line)}


def line_with(out: str, start: str) -> str:
    found = [ln for ln in out.splitlines() if ln.startswith(start)]
    assert found, f"no line starting {start!r} in:\n{out}"
    return found[0]


# --- helpers -----------------------------------------------------------------------------


def test_dist_percentiles_follow_nearest_rank() -> None:
    d = Dist.of([0.004, 0.001, 0.005, 0.003, 0.002])
    assert (d.count, d.p50, d.p99, d.max) == (5, 0.003, 0.005, 0.005)
    assert Dist.of([]).count == 0 and Dist.of([]).max == 0.0


def test_rss_of_this_process_and_of_no_process() -> None:
    mine = rss_bytes(os.getpid())
    assert mine is not None and mine > 1_000_000  # a Python interpreter holds megabytes
    assert rss_bytes(2**22 + 12345) is None  # beyond the kernel's default pid_max


def test_cpu_seconds_grow_with_work() -> None:
    before = cpu_seconds(os.getpid())
    assert before is not None
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    after = cpu_seconds(os.getpid())
    assert after is not None and after > before
    assert cpu_seconds(2**22 + 12345) is None


def test_disk_usage_counts_files_and_takes_the_newest_snapshot(tmp_path: Path) -> None:
    (tmp_path / "snap").mkdir()
    (tmp_path / "snap" / "0000000000000001-0000000000000001.snap").write_bytes(b"a" * 10)
    (tmp_path / "snap" / "0000000000000002-0000000000000001.snap").write_bytes(b"b" * 30)
    (tmp_path / "raft.db").write_bytes(b"c" * 100)
    d = disk_usage(tmp_path)
    assert d.total == 140
    assert d.snapshot == 30 and d.snapshot_name.startswith("0000000000000002")
    assert disk_usage(tmp_path / "missing").total == 0


# --- watch -------------------------------------------------------------------------------


def test_benchmark_watch_delivers_every_put_to_every_watcher(tc: ThreadCluster) -> None:
    watchers, total = 60, 8
    res = CliRunner().invoke(
        cli,
        [
            "benchmark", "watch", "--endpoints", tc.endpoints, "--watchers", str(watchers),
            "--conns", "3", "--total", str(total), "--rate", "0", "--prefix", "/wb/",
            "--pid", str(os.getpid()),
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out = res.stdout
    expected = watchers * total
    assert f"deliveries: {expected} of {expected}, 0 duplicates, 0 out of order" in out
    assert f"puts: {total} acknowledged" in out and "0 failed" in out
    sent = ms_figures(line_with(out, "latency from put sent"))
    acked = ms_figures(line_with(out, "latency from put acked"))
    for d in (sent, acked):
        assert set(d) == {"p50", "p90", "p99", "max"}
        assert d["p50"] <= d["p90"] <= d["p99"] <= d["max"]
    assert sent["p50"] > 0 and acked["max"] <= sent["max"]  # sent before acked
    assert re.search(rf"RSS before watches: pid {os.getpid()} [0-9.]+ MB", out)
    assert re.search(rf"RSS after the run:  pid {os.getpid()} [0-9.]+ MB", out)
    assert re.search(
        rf"CPU used while writing and draining \([0-9.]+ s\): this client [0-9.]+ s, "
        rf"pid {os.getpid()} [0-9.]+ s$",
        out,
        re.M,
    ), out
    assert tc.count(b"/wb/") == 0  # cleaned up


def test_benchmark_watch_refuses_more_watches_than_connections_allow(tc: ThreadCluster) -> None:
    res = CliRunner().invoke(
        cli,
        [
            "benchmark", "watch", "--endpoints", tc.endpoints, "--watchers", "2001",
            "--conns", "2", "--total", "1", "--prefix", "/wr/",
        ],
    )  # fmt: skip
    assert res.exit_code == 1
    assert "exceeds the server's 1000 watches per connection" in res.output
    assert tc.count(b"/wr/") == 0


# --- lease keep-alive --------------------------------------------------------------------


def test_benchmark_lease_keepalive_renews_and_revokes_every_lease(tc: ThreadCluster) -> None:
    async def leases() -> int:
        async with Client(tc.cluster.endpoints) as c:
            return len((await c.lease_leases()).leases)

    before = tc.call(leases())
    res = CliRunner().invoke(
        cli,
        [
            "benchmark", "lease-keepalive", "--endpoints", tc.endpoints, "--leases", "5",
            "--clients", "3", "--conns", "2", "--total", "60",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert_report_shape(res.stdout, 60)
    assert "leases alive after the run: 5 of 5; revoked 5" in res.stdout
    assert tc.call(leases()) == before


# --- against real processes --------------------------------------------------------------


def live_processes_under(root: Path) -> list[int]:
    """Pids of running processes whose command line mentions ``root``."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if str(root).encode() in cmd:
                found.append(int(d.name))
    return found


@pytest.mark.e2e
@pytest.mark.slow
def test_benchmark_restart_keeps_every_key_and_stops_its_processes(tmp_path: Path) -> None:
    res = CliRunner(env=NO_ENV).invoke(
        cli,
        [
            "benchmark", "restart", "--keys", "2000", "--txn-ops", "20", "--clients", "4",
            "--conns", "2", "--snapshot-count", "40", "--data-dir", str(tmp_path),
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "loaded 2,000 keys of 100 bytes" in out and "100 txns of 20 puts" in out
    assert "keys found: 2,000 after the member restart, 2,000 after the cluster restart" in out
    assert "endpoint status after loading: revision 101, 101, 101;" in out  # 100 txns
    for start in ("member RSS loaded", "member RSS after member", "member RSS after cluster"):
        assert re.fullmatch(
            r"[^:]+: n1 [0-9.]+ MB, n2 [0-9.]+ MB, n3 [0-9.]+ MB", line_with(out, start)
        ), out
    # 100 entries with a snapshot every 40: every member has a snapshot file on disk
    disk = line_with(out, "disk:")
    assert len(re.findall(r"snapshot [0-9.]+ MB [0-9a-f]{16}-[0-9a-f]{16}\.snap", disk)) == 3
    for start in ("restart follower", "restart whole cluster"):
        line = line_with(out, start)
        a, h, c = (
            float(x) for x in re.findall(r"(?:answering|healthy|caught up) ([0-9.]+) s", line)
        )
        assert 0 < a <= h <= c
    assert live_processes_under(tmp_path) == []


@pytest.mark.e2e
@pytest.mark.slow
def test_benchmark_watch_starts_its_own_cluster_and_reports_member_memory(
    tmp_path: Path,
) -> None:
    res = CliRunner(env=NO_ENV).invoke(
        cli, ["benchmark", "watch", "--watchers", "30", "--conns", "3", "--total", "4"]
    )
    assert res.exit_code == 0, res.output
    assert "deliveries: 120 of 120, 0 duplicates, 0 out of order" in res.stdout
    for start in ("member RSS before watches", "member RSS after the run"):
        assert re.fullmatch(
            r"[^:]+: +n1 [0-9.]+ MB, n2 [0-9.]+ MB, n3 [0-9.]+ MB", line_with(res.stdout, start)
        ), res.stdout
