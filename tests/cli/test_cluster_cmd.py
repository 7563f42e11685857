"""``raftkv cluster start|stop|status`` with real ``raftkv serve`` processes."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from raftkv_cli.cluster import pid_alive
from raftkv_cli.main import cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _free_base(nodes: int) -> int:
    """A base port whose client, peer, metrics and etcd ports (see cli/cluster.py) are all
    free."""
    for _ in range(200):
        base = random.randrange(20000, 40000)
        ports = [base + off + i for off in (0, 100, 200, 300) for i in range(nodes)]
        try:
            socks = []
            for p in ports:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError("no free port range")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["--command-timeout", "5s", *args])


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "data"
    yield d
    if (d / "cluster.json").exists():  # whatever happened, stop what we started
        run("cluster", "stop", "--data-dir", str(d), "--grace", "5")


def _pids(d: Path) -> dict[str, int | None]:
    doc = json.loads((d / "cluster.json").read_text())
    return {n["name"]: n["pid"] for n in doc["nodes"]}


def test_start_detached_use_restart_one_and_stop(data_dir: Path) -> None:
    base = _free_base(3)
    r = run(
        "cluster", "start", "--nodes", "3", "--data-dir", str(data_dir),
        "--base-port", str(base), "--detach",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    eps = [f"127.0.0.1:{base + i}" for i in range(3)]
    assert r.stdout.strip().splitlines()[-1] == "endpoints: " + ",".join(eps)
    doc = json.loads((data_dir / "cluster.json").read_text())
    n1 = doc["nodes"][0]
    assert n1["peer_addr"] == f"127.0.0.1:{base + 100}"
    assert n1["etcd_addr"] == f"127.0.0.1:{base + 300}"
    etcd_eps = ",".join(f"127.0.0.1:{base + 300 + i}" for i in range(3))
    assert r.stdout.strip().splitlines()[-2] == "etcd endpoints: " + etcd_eps
    if Path("/usr/bin/etcdctl").exists():  # etcd's own CLI, unchanged, on the etcd ports
        put = subprocess.run(
            [
                "/usr/bin/etcdctl",
                f"--endpoints={etcd_eps}",
                "--command-timeout=20s",
                "put",
                "e",
                "1",
            ],
            env={**os.environ, "ETCDCTL_API": "3"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert put.returncode == 0 and put.stdout == "OK\n", put.stderr
    assert n1["data_dir"] == str(data_dir.resolve() / "n1")
    assert (data_dir / "n1.log").exists()
    pids = _pids(data_dir)
    assert all(pid_alive(p) for p in pids.values())

    r = CliRunner().invoke(
        cli, ["--endpoints", ",".join(eps), "--command-timeout", "20s", "put", "k", "v"]
    )
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["--endpoints", ",".join(eps), "get", "k"])
    assert r.stdout == "k\nv\n"

    # kill one member: start restarts only that one
    os.kill(pids["n2"], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pid_alive(pids["n2"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    r = run("cluster", "start", "--data-dir", str(data_dir), "--detach")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("n1: already running")
    assert lines[1].startswith("n2: started")
    new = _pids(data_dir)
    assert new["n1"] == pids["n1"] and new["n3"] == pids["n3"] and new["n2"] != pids["n2"]

    r = CliRunner().invoke(
        cli,
        [
            "-w",
            "json",
            "--command-timeout",
            "10s",
            "cluster",
            "status",
            "--data-dir",
            str(data_dir),
        ],
    )
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [row["alive"] for row in rows] == [True, True, True]
    assert [row["endpoint"] for row in rows] == eps

    r = run("cluster", "stop", "--data-dir", str(data_dir))
    assert r.exit_code == 0, r.output
    assert all(not pid_alive(p) for p in new.values())
    assert all(p is None for p in _pids(data_dir).values())
    r = run("cluster", "status", "--data-dir", str(data_dir))
    assert r.stdout.count(", false, ") == 3


def test_foreground_cluster_stops_its_members_on_sigterm(tmp_path: Path) -> None:
    base = _free_base(1)
    d = tmp_path / "fg"
    proc = subprocess.Popen(
        [sys.executable, "-m", "raftkv_cli.main", "cluster", "start", "--nodes", "1",
         "--data-dir", str(d), "--base-port", str(base)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("endpoints:"):
                break
        assert lines[-1].strip() == f"endpoints: 127.0.0.1:{base}", lines
        pid = _pids(d)["n1"]
        assert pid_alive(pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert not pid_alive(pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if (d / "cluster.json").exists():
            run("cluster", "stop", "--data-dir", str(d), "--grace", "5")
