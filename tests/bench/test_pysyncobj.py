"""``benchmark pysyncobj`` against real PySyncObj processes: every mode does its work from a
follower, acknowledges every set on a healthy cluster, kills the leader in failover mode and
leaves no process behind.  Figures are checked for shape and sanity, never for speed: timing
belongs in docs/performance.md."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from raftkv.bench import pysyncobj as pso_bench
from raftkv.bench.pysyncobj import Mode, PsoCluster, run_failover, run_load
from raftkv.bench.report import PERCENTILES
from raftkv.errors import InvalidArgument
from raftkv_cli.main import cli

pytest.importorskip("pysyncobj")
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def clusters(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[PsoCluster]]:
    """Every PsoCluster the benchmark creates, to check afterwards that nothing runs."""
    made: list[PsoCluster] = []
    real_init = PsoCluster.__post_init__

    def record(self: PsoCluster) -> None:
        real_init(self)
        made.append(self)

    monkeypatch.setattr(PsoCluster, "__post_init__", record)
    yield made


def assert_all_stopped(clusters: list[PsoCluster]) -> None:
    procs = [m.proc for c in clusters for m in c.members]
    assert len(procs) == 3 * len(clusters)
    for p in procs:
        assert p.returncode is not None
        assert not os.path.exists(f"/proc/{p.pid}") or _not_ours(p.pid)


def _not_ours(pid: int) -> bool:
    """A reused pid belongs to another program: not one of ours."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"member_main" not in cmdline


def test_seq_acknowledges_every_set_from_a_follower(
    tmp_path: Path, clusters: list[PsoCluster]
) -> None:
    r = run_load(Mode.SEQ, total=50, val_size=256, data_dir=tmp_path)
    assert r.stats.requests == 50 and r.stats.error_count == 0
    assert r.leader != r.driver and r.driver.startswith("p3")  # forwarded to the leader
    ps = [r.stats.p(p) for p in PERCENTILES]
    assert 0 < r.stats.fastest <= ps[0] and ps == sorted(ps) and ps[-1] <= r.stats.slowest
    assert r.stats.rps == pytest.approx(50 / r.stats.seconds)
    assert all((tmp_path / f"p{i}.journal").stat().st_size > 0 for i in (1, 2, 3))
    assert_all_stopped(clusters)


def test_concurrent_keeps_sets_in_flight_without_failures(clusters: list[PsoCluster]) -> None:
    r = run_load(Mode.CONCURRENT, inflight=20, seconds=1.0, journal=False)
    assert r.stats.error_count == 0 and r.inflight == 20
    # more than one set per round trip: the 20 in flight overlapped
    assert r.stats.requests > 20 and r.stats.requests * r.stats.average > r.stats.seconds * 2
    ps = [r.stats.p(p) for p in PERCENTILES]
    assert ps == sorted(ps) and r.stats.slowest <= 5.0
    assert_all_stopped(clusters)


def test_failover_kills_the_leader_and_loses_no_acknowledged_set(
    clusters: list[PsoCluster],
) -> None:
    r = run_failover(warmup=1.0, after=3, timeout=20.0)
    assert r.killed != r.new_leader and r.new_leader != "none"
    assert r.writes_before > 0 and r.writes_after >= 3
    assert r.readable == r.writes_before + r.writes_after
    assert 0 < r.first_ok_after <= r.gap < 20.0
    (cluster,) = clusters
    victim = next(m for m in cluster.members if r.killed.startswith(m.name))
    assert victim.proc.returncode == -9  # SIGKILL
    assert_all_stopped(clusters)


def test_cli_reports_and_a_missing_pysyncobj_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing() -> object:  # as load_pysyncobj does without the package
        raise ImportError("pysyncobj is not installed: pip install 'pysyncobj==0.3.14'")

    monkeypatch.setattr(pso_bench, "load_pysyncobj", missing)
    res = CliRunner().invoke(cli, ["benchmark", "pysyncobj", "--mode", "seq", "--total", "5"])
    assert res.exit_code == 1
    assert "pip install" in res.output and "pysyncobj" in res.output


def test_cli_seq_prints_the_etcd_style_report(clusters: list[PsoCluster]) -> None:
    res = CliRunner().invoke(
        cli, ["benchmark", "pysyncobj", "--mode", "seq", "--total", "5", "--no-journal"]
    )
    assert res.exit_code == 0, res.output
    assert "pysyncobj 0.3.14 seq" in res.output and "journal off" in res.output
    assert "Requests:\t5." in res.output and "99% in" in res.output
    assert_all_stopped(clusters)


def test_bad_arguments_are_refused_before_any_process_starts(clusters: list[PsoCluster]) -> None:
    with pytest.raises(InvalidArgument, match="total"):
        run_load(Mode.SEQ, total=0)
    with pytest.raises(InvalidArgument, match="val_size"):
        run_failover(val_size=-1)
    with pytest.raises(InvalidArgument):
        run_load(Mode.FAILOVER)
    assert clusters == []
