"""Run a real raftkv cluster inside your own process, for your application's tests.

Every member is a real :class:`~raftkv.node.Node` with SQLite storage (fsynced), the TCP peer
transport and the client server, bound to 127.0.0.1 on free ports::

    from raftkv.testing import LocalCluster

    async def test_my_app(tmp_path):
        async with LocalCluster(3, tmp_path) as cluster:
            async with raftkv.Client(cluster.endpoints) as c:
                await c.put(b"k", b"v")

With pytest, the ``raftkv_cluster`` fixture (enable it with
``pytest_plugins = ["raftkv.testing"]`` in your ``conftest.py``) gives a started 3-node
cluster and stops it after the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raftkv.errors import Timeout
from raftkv.node import Node, NodeConfig, tcp_transport_factory
from raftkv.raft import NONE
from raftkv.server import Server


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Member:
    name: str
    data_dir: Path
    client_addr: str
    peer_addr: str
    node: Node | None = None
    server: Server | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.node is not None


class LocalCluster:
    """N members in this process.  ``stop_member``/``start_member`` simulate crash/restart
    (everything fsynced survives; anything in flight is lost)."""

    def __init__(
        self,
        size: int,
        data_dir: Path | str,
        *,
        tick_interval: float = 0.05,
        election_tick: int = 10,
        snapshot_count: int = 10_000,
        **node_options: Any,
    ) -> None:
        self.root = Path(data_dir)
        self.tick_interval = tick_interval
        self.election_tick = election_tick
        self.snapshot_count = snapshot_count
        self.node_options = node_options
        self.members: dict[str, Member] = {}
        for i in range(1, size + 1):
            name = f"n{i}"
            self.members[name] = Member(
                name,
                self.root / name,
                f"127.0.0.1:{free_port()}",
                f"127.0.0.1:{free_port()}",
            )
        self.initial_cluster = {m.name: m.peer_addr for m in self.members.values()}

    @property
    def endpoints(self) -> list[str]:
        return [m.client_addr for m in self.members.values() if m.running]

    def _config(self, m: Member, state: str, initial: dict[str, str]) -> NodeConfig:
        return NodeConfig(
            name=m.name,
            data_dir=m.data_dir,
            client_addr=m.client_addr,
            peer_addr=m.peer_addr,
            initial_cluster=initial,
            initial_cluster_state=state,
            tick_interval=self.tick_interval,
            election_tick=self.election_tick,
            snapshot_count=self.snapshot_count,
            **{**self.node_options, **{k: v for k, v in m.options.items() if k != "cluster_id"}},
        )

    async def start_member(
        self,
        name: str,
        state: str = "new",
        initial: dict[str, str] | None = None,
        cluster_id: int | None = None,
    ) -> Member:
        m = self.members[name]
        if m.running:
            return m
        cfg = self._config(m, state, initial or self.initial_cluster)
        cfg.cluster_id = cluster_id or m.options.get("cluster_id")
        m.node = await Node.start(cfg, tcp_transport_factory)
        m.server = Server(m.node, m.client_addr)
        await m.server.start()
        return m

    async def stop_member(self, name: str) -> None:
        m = self.members[name]
        if m.server is not None:
            await m.server.stop()
            m.server = None
        if m.node is not None:
            await m.node.stop()
            m.node = None

    async def add_member(self, name: str, learner: bool = True) -> Member:
        """Add a new member through the leader, then start it (joins an existing cluster)."""
        m = Member(name, self.root / name, f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}")
        leader = await self.wait_leader()
        assert leader.node is not None
        await leader.node.add_member(name, m.peer_addr, m.client_addr, learner)
        self.members[name] = m
        initial = {x.name: x.peer_addr for x in self.members.values()}
        m.options["cluster_id"] = leader.node.cluster_id
        await self.start_member(name, state="existing", initial=initial)
        return m

    async def start(self) -> None:
        await asyncio.gather(*(self.start_member(n) for n in self.members))
        await self.wait_leader()

    async def stop(self) -> None:
        for name in list(self.members):
            with contextlib.suppress(Exception):
                await self.stop_member(name)

    async def __aenter__(self) -> LocalCluster:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def nodes(self) -> list[Node]:
        return [m.node for m in self.members.values() if m.node is not None]

    def leader(self) -> Member | None:
        best: Member | None = None
        for m in self.members.values():
            if (
                m.node is not None
                and m.node.is_leader
                and (
                    best is None
                    or best.node is None
                    or m.node.rn.raft.term > best.node.rn.raft.term
                )
            ):
                best = m
        return best

    async def wait_leader(self, timeout: float = 15.0) -> Member:
        """Wait until some member leads and every running member agrees on it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            lead = self.leader()
            if lead is not None and lead.node is not None:
                lid = lead.node.id
                if (
                    all(n.leader_id in (lid, NONE) for n in self.nodes())
                    and lead.node.applied_index > 0
                ):
                    return lead
            await asyncio.sleep(self.tick_interval)
        raise Timeout("no leader elected in time")

    async def wait_converged(self, timeout: float = 30.0) -> None:
        """Wait until every running member has applied the same index with the same hash."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            nodes = self.nodes()
            applied = {n.applied_index for n in nodes}
            commits = {n.rn.raft.raft_log.committed for n in nodes}
            if len(applied) == 1 and applied == commits and len({n.fsm.hash() for n in nodes}) == 1:
                return
            await asyncio.sleep(self.tick_interval)
        raise Timeout("cluster did not converge in time")


try:  # the pytest fixture, when pytest is around
    import pytest
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def raftkv_cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
        """A started 3-member in-process cluster, stopped after the test."""
        async with LocalCluster(3, tmp_path / "raftkv") as cluster:
            yield cluster

    _ = pytest
except ImportError:  # pragma: no cover - pytest is a dev dependency
    pass
