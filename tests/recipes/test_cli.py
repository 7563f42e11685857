"""``raftkv lock``, ``elect`` and ``service`` against an in-process cluster on its own thread
(the CLI runs its own event loop).  Commands that hold something run as subprocesses so they
can be signalled."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from raftkv.testing import LocalCluster
from raftkv_cli.main import cli

ROOT = Path(__file__).resolve().parents[2]


class ThreadedCluster:
    def __init__(self, root: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.cluster = LocalCluster(1, root)
        self.run(self.cluster.__aenter__())
        self.endpoints = ",".join(self.cluster.endpoints)

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self.run(self.cluster.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def tc(tmp_path: Path) -> Iterator[ThreadedCluster]:
    t = ThreadedCluster(tmp_path / "c")
    try:
        yield t
    finally:
        t.close()


def _cli(tc: ThreadedCluster, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--endpoints", tc.endpoints, *args], catch_exceptions=False)


def _spawn(tc: ThreadedCluster, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "raftkv_cli.main", "--endpoints", tc.endpoints, *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _wait(pred: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_lock_runs_command_with_fence_and_releases(tc: ThreadedCluster, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    script = (
        "import os,sys; open(sys.argv[1],'w').write(os.environ['RAFTKV_LOCK_FENCE'] + ' ' "
        "+ os.environ['RAFTKV_LOCK_KEY']); sys.exit(3)"
    )
    r = _cli(tc, "lock", "jobs", "--", sys.executable, "-c", script, str(out))
    assert r.exit_code == 3  # the command's status is passed through
    fence, key = out.read_text().split()
    assert int(fence) > 0 and key.startswith("jobs/")
    assert _cli(tc, "get", "jobs/", "--prefix", "--keys-only").output.strip() == ""
    # a second run gets a larger fencing token
    _cli(tc, "lock", "jobs", "--", sys.executable, "-c", script, str(out))
    assert int(out.read_text().split()[0]) > int(fence)


def test_lock_without_command_holds_until_sigterm(tc: ThreadedCluster) -> None:
    p = _spawn(tc, "lock", "held")
    try:
        assert p.stdout is not None
        key = p.stdout.readline().strip()
        assert key.startswith("held/")
        assert _cli(tc, "get", "held/", "--prefix", "--keys-only").output.split() == [key]
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 128 + signal.SIGTERM
        assert _cli(tc, "get", "held/", "--prefix", "--keys-only").output.strip() == ""
    finally:
        p.kill()
        p.wait()


def test_elect_and_listen(tc: ThreadedCluster) -> None:
    p = _spawn(tc, "elect", "boss", "alpha")
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "alpha"  # printed once leader
        r = _cli(tc, "elect", "boss", "--listen", "--max-events", "1")
        assert r.output.strip() == "alpha"
        r = _cli(tc, "-w", "json", "elect", "boss", "--listen", "--max-events", "1")
        assert json.loads(r.output)["value"] == "alpha"
        p.send_signal(signal.SIGINT)
        assert p.wait(10) == 128 + signal.SIGINT
        assert _cli(tc, "get", "boss/", "--prefix", "--keys-only").output.strip() == ""
    finally:
        p.kill()
        p.wait()


def test_service_register_list_watch(tc: ThreadedCluster) -> None:
    p = _spawn(tc, "service", "register", "web", "10.1.1.1:80", "--id", "w1", "--meta", "z=a")
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "w1 10.1.1.1:80 z=a"
        assert _cli(tc, "service", "list", "web").output == "w1 10.1.1.1:80 z=a\n"
        doc = json.loads(_cli(tc, "-w", "json", "service", "list", "web").output)
        assert doc == {"id": "w1", "address": "10.1.1.1:80", "metadata": {"z": "a"}}
        w = _spawn(tc, "service", "watch", "web", "--max-events", "1")
        assert w.stdout is not None
        assert w.stdout.readline().strip() == "+ w1 10.1.1.1:80 z=a"
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 128 + signal.SIGTERM
        assert w.stdout.readline().strip() == "- w1"
        assert w.wait(10) == 0
        assert _cli(tc, "service", "list", "web").output == ""
    finally:
        p.kill()
        p.wait()


def test_killed_service_instance_vanishes_within_ttl_plus_one(tc: ThreadedCluster) -> None:
    """SIGKILL: no deregistration, only the lease expiry removes the instance."""
    import time

    p = _spawn(tc, "service", "register", "api", "10.0.0.9:81", "--id", "k1", "--ttl", "2")
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip().startswith("k1 ")
        assert _cli(tc, "service", "list", "api").output.startswith("k1 ")
        p.kill()
        p.wait()
        t0 = time.monotonic()
        while _cli(tc, "service", "list", "api").output != "":
            assert time.monotonic() - t0 < 3.0, "still registered after TTL + 1 s"
            time.sleep(0.05)
        assert time.monotonic() - t0 >= 0.5  # it was the lease that removed it, not a signal
    finally:
        p.kill()
        p.wait()
