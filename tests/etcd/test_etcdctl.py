"""Debian's etcdctl 3.4, unchanged, against raftkv's etcd v3 gRPC front end.

Each etcdctl is a subprocess this test starts, waits on, and kills by its pid if it overruns.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from raftkv.testing import free_port
from tests.etcd.conftest import EtcdCluster

ETCDCTL = Path("/usr/bin/etcdctl")

pytestmark = [
    pytest.mark.skipif(
        not ETCDCTL.exists(), reason="/usr/bin/etcdctl (etcd-client) is not installed"
    ),
    pytest.mark.timeout(180),
]


async def etcdctl(
    endpoint: str, *args: str, stdin: str | None = None, timeout: float = 30.0
) -> tuple[int, str, str]:
    """Run etcdctl against ``endpoint``: (exit code, stdout, stderr)."""
    env = {**os.environ, "ETCDCTL_API": "3"}
    proc = await asyncio.create_subprocess_exec(
        str(ETCDCTL),
        f"--endpoints={endpoint}",
        "--dial-timeout=5s",
        "--command-timeout=15s",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), timeout
        )
    except TimeoutError:
        os.kill(proc.pid, 9)
        await proc.wait()
        raise AssertionError(f"etcdctl {' '.join(args)} did not finish in {timeout}s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def ok(endpoint: str, *args: str, stdin: str | None = None) -> str:
    rc, out, err = await etcdctl(endpoint, *args, stdin=stdin)
    assert rc == 0, f"etcdctl {' '.join(args)} failed ({rc}): {err}"
    return out


async def test_put_get_del_through_a_follower(etcd: EtcdCluster) -> None:
    ep = etcd.addr(etcd.follower_name())
    assert await ok(ep, "put", "foo", "bar") == "OK\n"
    assert await ok(ep, "put", "foo2", "baz") == "OK\n"
    assert await ok(ep, "get", "foo") == "foo\nbar\n"
    assert await ok(ep, "get", "foo", "--prefix", "--keys-only") == "foo\n\nfoo2\n\n"
    assert await ok(ep, "get", "foo", "--prefix", "--limit=1") == "foo\nbar\n"
    assert await ok(ep, "get", "foo", "--prefix", "--sort-by=VALUE", "--order=DESCEND") == (
        "foo2\nbaz\nfoo\nbar\n"
    )
    assert await ok(ep, "get", "foo", "--consistency=s") == "foo\nbar\n"
    got = json.loads(await ok(ep, "get", "foo", "-w", "json"))
    h = got["header"]
    follower = etcd.cluster.members[etcd.follower_name()].node
    assert follower is not None
    assert h["member_id"] == follower.id and h["cluster_id"] == follower.cluster_id
    assert h["raft_term"] == follower.term and h["revision"] >= 3
    assert got["count"] == 1 and got["kvs"][0]["version"] == 1
    assert await ok(ep, "put", "foo", "bar2", "--prev-kv") == "OK\nfoo\nbar\n"
    assert await ok(ep, "del", "foo", "--prefix") == "2\n"
    assert await ok(ep, "get", "foo") == ""


async def test_txn_from_stdin(etcd: EtcdCluster) -> None:
    ep = etcd.addr(etcd.follower_name())
    await ok(ep, "put", "t", "1")
    script = 'value("t") = "1"\n\nput t 2\nget t\n\nput t never\n\n'
    assert await ok(ep, "txn", stdin=script) == "SUCCESS\n\nOK\n\nt\n2\n"
    assert await ok(ep, "txn", stdin=script) == "FAILURE\n\nOK\n"
    assert await ok(ep, "get", "t", "--print-value-only") == "never\n"


async def test_lease_lifecycle_and_unknown_lease(etcd: EtcdCluster) -> None:
    ep = etcd.addr(etcd.follower_name())
    out = await ok(ep, "lease", "grant", "60")
    m = re.fullmatch(r"lease ([0-9a-f]+) granted with TTL\(60s\)\n", out)
    assert m, out
    lid = m.group(1)
    await ok(ep, "put", "lk", "v", f"--lease={lid}")
    assert await ok(ep, "lease", "keep-alive", "--once", lid) == (
        f"lease {lid} keepalived with TTL(60)\n"
    )
    ttl = await ok(ep, "lease", "timetolive", lid, "--keys")
    assert re.fullmatch(
        rf"lease {lid} granted with TTL\(60s\), remaining\((59|60)s\), attached keys\(\[lk\]\)\n",
        ttl,
    ), ttl
    assert await ok(ep, "lease", "list") == f"found 1 leases\n{lid}\n"
    assert await ok(ep, "lease", "revoke", lid) == f"lease {lid} revoked\n"
    assert await ok(ep, "get", "lk") == ""
    assert await ok(ep, "lease", "timetolive", lid) == f"lease {lid} already expired\n"

    rc, _, err = await etcdctl(ep, "lease", "revoke", lid)
    assert rc != 0 and "etcdserver: requested lease not found" in err
    rc, _, err = await etcdctl(ep, "lease", "keep-alive", "--once", lid)
    assert rc != 0 and "etcdserver: requested lease not found" in err  # as against etcd


async def test_compacted_revision_error(etcd: EtcdCluster) -> None:
    ep = etcd.addr(etcd.leader_name())
    await ok(ep, "put", "c", "1")
    first = json.loads(await ok(ep, "get", "c", "-w", "json"))["header"]["revision"]
    await ok(ep, "put", "c", "2")
    last = json.loads(await ok(ep, "get", "c", "-w", "json"))["header"]["revision"]
    assert await ok(ep, "compaction", str(last)) == f"compacted revision {last}\n"
    rc, _, err = await etcdctl(ep, "get", "c", f"--rev={first}")
    assert rc != 0
    assert "Error: etcdserver: mvcc: required revision has been compacted" in err


async def test_member_list_and_endpoint_status(etcd: EtcdCluster) -> None:
    ep = etcd.addr(etcd.follower_name())
    table = await ok(ep, "member", "list", "-w", "table")
    assert "IS LEARNER" in table
    for name, m in etcd.cluster.members.items():
        assert m.node is not None
        row = next(line for line in table.splitlines() if f" {name} " in line)
        assert f"{m.node.id:x}" in row and "started" in row
        assert f"http://{m.peer_addr}" in row and f"http://{etcd.addr(name)}" in row
        assert row.rstrip(" |").endswith("false")

    status = await ok(etcd.endpoints, "endpoint", "status", "-w", "table")
    rows = [line for line in status.splitlines() if line.startswith("| 127.0.0.1:")]
    assert len(rows) == 3
    assert sum(" true " in r.split("|")[5] for r in rows) == 1  # IS LEADER, exactly one

    st = json.loads(await ok(ep, "endpoint", "status", "-w", "json"))
    lead = etcd.cluster.members[etcd.leader_name()].node
    assert lead is not None and st[0]["Status"]["leader"] == lead.id

    rc, out, err = await etcdctl(ep, "endpoint", "health")  # etcdctl 3.4 reports on stderr
    assert rc == 0 and f"{ep} is healthy: successfully committed proposal" in out + err


async def test_watch_from_a_revision(etcd: EtcdCluster) -> None:
    ep = etcd.addr(etcd.follower_name())
    await ok(ep, "put", "w/1", "a")
    rev = json.loads(await ok(ep, "get", "w/1", "-w", "json"))["header"]["revision"]
    await ok(ep, "put", "w/2", "b")
    await ok(ep, "del", "w/1")
    env = {**os.environ, "ETCDCTL_API": "3"}
    proc = await asyncio.create_subprocess_exec(
        str(ETCDCTL),
        f"--endpoints={ep}",
        "watch",
        "w/",
        "--prefix",
        f"--rev={rev}",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines = [
            (await asyncio.wait_for(proc.stdout.readline(), 15.0)).decode().rstrip("\n")
            for _ in range(8)
        ]
    finally:
        os.kill(proc.pid, 9)
        await proc.wait()
    assert lines == ["PUT", "w/1", "a", "PUT", "w/2", "b", "DELETE", "w/1"]


async def test_snapshot_save(etcd: EtcdCluster, tmp_path: Path) -> None:
    ep = etcd.addr(etcd.follower_name())
    await ok(ep, "put", "s", "v")
    target = tmp_path / "backup.db"
    rc, out, err = await etcdctl(ep, "snapshot", "save", str(target))
    assert rc == 0, err
    assert f"Snapshot saved at {target}" in out + err
    data = target.read_bytes()
    assert len(data) % 512 == 32 and hashlib.sha256(data[:-32]).digest() == data[-32:]


async def test_maintenance_and_membership_commands(etcd: EtcdCluster) -> None:
    ep = etcd.addr(etcd.follower_name())
    assert await ok(ep, "alarm", "list") == ""
    hashkv = await ok(ep, "endpoint", "hashkv")
    assert re.fullmatch(rf"{re.escape(ep)}, \d+\n", hashkv), hashkv

    peer = f"127.0.0.1:{free_port()}"
    out = await ok(ep, "member", "add", "n4", f"--peer-urls=http://{peer}", "--learner")
    m = re.match(r"Member +([0-9a-f]+) added to cluster +([0-9a-f]+)\n", out)
    assert m, out
    lead = etcd.cluster.members[etcd.leader_name()].node
    assert lead is not None and lead.cluster_id == int(m.group(2), 16)
    mid, cid = int(m.group(1), 16), int(m.group(2), 16)
    assert await ok(ep, "member", "remove", m.group(1)) == (
        f"Member {mid:16x} removed from cluster {cid:16x}\n"
    )

    target = etcd.cluster.members[etcd.follower_name()].node
    assert target is not None
    out = await ok(etcd.endpoints, "move-leader", f"{target.id:x}")
    assert f"Leadership transferred from {lead.id:x} to {target.id:x}" in out
    assert target.is_leader

    out = await ok(ep, "defrag")
    assert out == f"Finished defragmenting etcd member[{ep}]\n"


async def test_lock_runs_a_command_under_the_lock(etcd: EtcdCluster) -> None:
    """etcdctl's lock is built on the client from leases, txns and watches."""
    ep = etcd.addr(etcd.follower_name())
    assert await ok(ep, "lock", "mylock", "echo", "locked") == "locked\n"
