"""``benchmark failover`` against real processes: it kills the leader, keeps writing through
the new one, loses no acknowledged write and leaves no process behind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from raftkv.bench.failover import measure_failover, process_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_failover_kills_the_leader_and_loses_no_acknowledged_write(tmp_path: Path) -> None:
    with process_cluster(3, tmp_path) as cluster:
        r = asyncio.run(measure_failover(cluster, warmup=1.0, after=5, timeout=30.0))
        procs = [m.proc for m in cluster.members]
        killed = next(m for m in cluster.members if m.name == r.killed)
        assert killed.proc is not None and killed.proc.returncode == -9  # SIGKILL
    assert r.new_leader != r.killed
    assert r.writes_before > 0 and r.writes_after >= 5
    assert r.readable == r.writes_before + r.writes_after
    assert r.first_ok_after > 0 and r.gap >= r.first_ok_after
    assert all(p is not None and p.poll() is not None for p in procs)  # all stopped
    assert any("write gap" in line for line in r.lines())
