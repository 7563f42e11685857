"""`raftkv serve --etcd-listen` starts etcd's gRPC API beside the native one, in a real
member process that etcdctl talks to."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from raftkv.client import Client
from raftkv.testing import free_port
from tests.etcd.test_etcdctl import ETCDCTL, ok

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not ETCDCTL.exists(), reason="/usr/bin/etcdctl (etcd-client) is not installed"
    ),
]


async def test_serve_with_etcd_listen_answers_etcdctl_and_the_native_client(
    tmp_path: Path,
) -> None:
    client = f"127.0.0.1:{free_port()}"
    peer = f"127.0.0.1:{free_port()}"
    etcd = f"127.0.0.1:{free_port()}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from raftkv_cli.serve import serve; serve()",
        "--name",
        "n1",
        "--data-dir",
        str(tmp_path / "n1"),
        "--listen-client",
        client,
        "--listen-peer",
        peer,
        "--initial-cluster",
        f"n1={peer}",
        "--etcd-listen",
        etcd,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ},
    )
    try:
        async with Client([client], command_timeout=20.0) as c:
            await c.put("native", "1")  # waits (retrying) until the member leads
            assert await ok(etcd, "put", "foo", "bar") == "OK\n"
            assert await ok(etcd, "get", "foo") == "foo\nbar\n"
            assert (await c.get("foo")).kvs[0].value == b"bar"
            assert await ok(etcd, "get", "native", "--print-value-only") == "1\n"
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
    assert proc.returncode == 0
