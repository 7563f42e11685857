"""The same etcdctl commands against etcd 3.4 itself and against raftkv: the same answers.

Outputs are compared after masking what legitimately differs (lease ids, member ids).
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from raftkv.testing import free_port
from tests.etcd.conftest import EtcdCluster
from tests.etcd.test_etcdctl import ETCDCTL, etcdctl

ETCD = Path("/usr/bin/etcd")

pytestmark = [
    pytest.mark.skipif(
        not (ETCD.exists() and ETCDCTL.exists()), reason="/usr/bin/etcd and /usr/bin/etcdctl needed"
    ),
    pytest.mark.e2e,
    pytest.mark.timeout(180),
]

TXN_OK = 'value("t") = "1"\n\nput t 2\nget t\n\nput t never\n\n'
TXN_DUP = "\nput d 1\nput d 2\n\n\n"
TXN_MANY = "\n" + "".join(f"put k{i} v\n" for i in range(129)) + "\n\n"

# (args, stdin): one etcdctl call each, in this order, against a fresh store
SCRIPT: list[tuple[tuple[str, ...], str | None]] = [
    (("put", "foo", "bar"), None),
    (("put", "foo2", "baz"), None),
    (("get", "foo"), None),
    (("get", "foo", "--prefix", "--keys-only"), None),
    (("get", "foo", "--prefix", "--sort-by=VALUE", "--order=DESCEND"), None),
    (("get", "foo", "--prefix", "--limit=1", "--rev=2"), None),
    (("put", "foo", "bar2", "--prev-kv"), None),
    (("get", "foo", "--rev=100"), None),
    (("put", "t", "1"), None),
    (("txn",), TXN_OK),
    (("txn",), TXN_OK),
    (("txn",), TXN_DUP),
    (("txn",), TXN_MANY),
    (("put", "", "x"), None),
    (("put", "nokey", "--ignore-value"), None),
    (("put", "leased", "x", "--lease=1234"), None),
    (("lease", "revoke", "1234"), None),
    (("lease", "timetolive", "1234"), None),
    (("lease", "keep-alive", "--once", "1234"), None),
    (("compaction", "3"), None),
    (("get", "foo", "--rev=2"), None),
    (("compaction", "2"), None),
    (("get", "foo2", "-w", "json"), None),
    (("put", "foo2", "q", "-w", "json"), None),
    (("lease", "grant", "60"), None),
    (("lease", "list"), None),
    (("del", "foo", "--prefix"), None),
    (("get", "foo", "--prefix"), None),
]


def _mask(text: str) -> str:
    text = re.sub(r"\{.*\"level\".*\}\n", "", text)  # client-side retry logs
    text = re.sub(r'"(cluster_id|member_id|raft_term)":\d+', r'"\1":<n>', text)
    return re.sub(r"\b[0-9a-f]{16}\b", "<id>", text)


async def _run_script(endpoint: str) -> list[tuple[int, str, str]]:
    out = []
    for args, stdin in SCRIPT:
        rc, o, e = await etcdctl(endpoint, *args, stdin=stdin)
        out.append((rc, _mask(o), _mask(e)))
    return out


async def _etcd(tmp_path: Path) -> tuple[asyncio.subprocess.Process, str]:
    client, peer = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    proc = await asyncio.create_subprocess_exec(
        str(ETCD),
        "--name=e1",
        f"--data-dir={tmp_path / 'etcd'}",
        f"--listen-client-urls=http://{client}",
        f"--advertise-client-urls=http://{client}",
        f"--listen-peer-urls=http://{peer}",
        f"--initial-advertise-peer-urls=http://{peer}",
        f"--initial-cluster=e1=http://{peer}",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "ETCD_UNSUPPORTED_ARCH": ""},
    )
    for _ in range(100):  # until it answers
        rc, _, _ = await etcdctl(client, "endpoint", "health", timeout=10.0)
        if rc == 0:
            return proc, client
        await asyncio.sleep(0.1)
    os.kill(proc.pid, 9)
    await proc.wait()
    raise AssertionError("etcd did not become healthy")


async def test_etcdctl_answers_as_against_etcd(etcd: EtcdCluster, tmp_path: Path) -> None:
    proc, endpoint = await _etcd(tmp_path)
    try:
        want = await _run_script(endpoint)
    finally:
        os.kill(proc.pid, 15)
        try:
            await asyncio.wait_for(proc.wait(), 10.0)
        except TimeoutError:
            os.kill(proc.pid, 9)
            await proc.wait()
    got = await _run_script(etcd.addr(etcd.follower_name()))
    for (args, _), w, g in zip(SCRIPT, want, got, strict=True):
        assert g == w, f"etcdctl {' '.join(args)}: etcd answered {w}, raftkv {g}"
