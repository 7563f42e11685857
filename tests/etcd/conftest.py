"""A LocalCluster(3) with the etcd v3 gRPC front end on every member."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from raftkv.errors import NoLeader
from raftkv.server.etcd.server import EtcdServer, start_etcd_server
from raftkv.testing import LocalCluster, free_port


@dataclass
class EtcdCluster:
    cluster: LocalCluster
    servers: dict[str, EtcdServer] = field(default_factory=dict)
    """Member name -> its etcd front end."""

    def addr(self, name: str) -> str:
        return self.servers[name].address

    def leader_name(self) -> str:
        lead = self.cluster.leader()
        assert lead is not None
        return lead.name

    def follower_name(self) -> str:
        lead = self.leader_name()
        return next(n for n in self.servers if n != lead)

    @property
    def endpoints(self) -> str:
        return ",".join(s.address for s in self.servers.values())


async def _leader_addresses_known(c: LocalCluster, timeout: float = 10.0) -> None:
    """Until every follower knows the leader's client address (members publish it through
    the log just after the election), a follower cannot forward a write."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        nodes = [n for n in c.nodes() if not n.is_leader]
        try:
            if nodes and all(n.not_leader().leader_addr for n in nodes):
                return
        except NoLeader:  # a member that has not heard from the leader yet
            pass
        await asyncio.sleep(0.02)
    raise AssertionError("the followers never learned the leader's client address")


@pytest.fixture
async def etcd(tmp_path: Path) -> AsyncIterator[EtcdCluster]:
    async with LocalCluster(3, tmp_path / "c") as c:
        ec = EtcdCluster(c)
        urls: dict[int, list[str]] = {}
        try:
            for name, m in c.members.items():
                assert m.node is not None and m.server is not None
                ec.servers[name] = await start_etcd_server(
                    m.node,
                    m.server.service,
                    f"127.0.0.1:{free_port()}",
                    client_urls=lambda mem: urls.get(mem.id, []),
                    progress_interval=0.5,
                )
                urls[m.node.id] = [f"http://{ec.servers[name].address}"]
            await _leader_addresses_known(c)
            yield ec
        finally:
            for s in ec.servers.values():
                await s.stop()
