"""/metrics and /health of a real member."""

from __future__ import annotations

import asyncio
from pathlib import Path

from raftkv.api import PutRequest
from raftkv.server.metrics import MetricsServer
from raftkv.testing import LocalCluster, free_port


async def _get(addr: str, path: str) -> tuple[int, str]:
    host, port = addr.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5.0)
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


async def test_metrics_and_health_report_the_member(tmp_path: Path) -> None:
    async with LocalCluster(3, tmp_path) as cluster:
        leader = await cluster.wait_leader()
        assert leader.node is not None
        addr = f"127.0.0.1:{free_port()}"
        ms = MetricsServer(leader.node, addr)
        await ms.start()
        try:
            for i in range(10):
                await leader.node.propose(PutRequest(b"m%d" % i, b"v"))
            await asyncio.sleep(0.3)  # a few heartbeat rounds for the RTT gauge
            status, body = await _get(addr, "/metrics")
            assert status == 200
            values = {
                line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in body.splitlines()
                if line and not line.startswith("#")
            }
            assert values["raftkv_raft_is_leader"] == 1.0
            assert values["raftkv_mvcc_revision"] == 11.0
            assert values["raftkv_raft_applied_index"] >= 10
            assert values["raftkv_disk_fsync_duration_seconds_count"] >= 10
            assert any(k.startswith("raftkv_peer_round_trip_seconds{") for k in values)
            status, body = await _get(addr, "/health")
            assert status == 200 and '"health": true' in body
            assert (await _get(addr, "/nope"))[0] == 404
        finally:
            await ms.stop()
