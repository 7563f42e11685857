"""Run a real raftkv cluster inside your own process, for your application's tests.

Every member is a real :class:`~raftkv.server.node.Node` with SQLite storage (fsynced), the TCP peer
transport (or, with ``network=MemoryNetwork()``, an in-process one whose links a test can
cut) and the client server, bound to 127.0.0.1 on free ports::

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
import errno
import random
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raftkv.errors import ConfChangeRefused, Timeout
from raftkv.raft import NONE
from raftkv.server.config import ClusterState
from raftkv.server.native import Server
from raftkv.server.node import Node, NodeConfig, tcp_transport_factory
from raftkv.server.peers import MemoryNetwork

_PORT_RNG = random.Random()


_HANDED_OUT: set[int] = set()
"""Ports this process has handed out: a port chosen for one member but not bound yet is
still free, and must not be handed to a second member (a CI run once gave one port to n2's
peer listener and n3's client listener; n2 could not start)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now and never handed out before by this process, chosen below
    Linux's ephemeral range (32768-60999), so that outgoing connections of other processes
    cannot take it between now and our bind."""
    for _ in range(200):
        port = _PORT_RNG.randrange(20_000, 32_000)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # fall back to the OS
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class LocalMember:
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
        network: MemoryNetwork | None = None,
        **node_options: Any,
    ) -> None:
        self.root = Path(data_dir)
        self.network = network
        """When given, members talk to each other through it instead of TCP (clients still
        connect over TCP)."""
        self.tick_interval = tick_interval
        self.election_tick = election_tick
        self.snapshot_count = snapshot_count
        self.node_options = node_options
        self.members: dict[str, LocalMember] = {}
        for i in range(1, size + 1):
            name = f"n{i}"
            self.members[name] = LocalMember(
                name,
                self.root / name,
                f"127.0.0.1:{free_port()}",
                f"127.0.0.1:{free_port()}",
            )
        self.initial_cluster = {m.name: m.peer_addr for m in self.members.values()}

    @property
    def endpoints(self) -> list[str]:
        return [m.client_addr for m in self.members.values() if m.running]

    def _config(self, m: LocalMember, state: str, initial: dict[str, str]) -> NodeConfig:
        return NodeConfig(
            name=m.name,
            data_dir=m.data_dir,
            client_addr=m.client_addr,
            peer_addr=m.peer_addr,
            initial_cluster=initial,
            initial_cluster_state=ClusterState(state),
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
    ) -> LocalMember:
        m = self.members[name]
        if m.running:
            return m
        cfg = self._config(m, state, initial or self.initial_cluster)
        cfg.cluster_id = cluster_id or m.options.get("cluster_id")
        factory = self.network.factory if self.network is not None else tcp_transport_factory
        m.node = await Node.start(cfg, factory)
        m.server = Server(m.node, m.client_addr)
        await m.server.start()
        return m

    def isolate(self, name: str) -> None:
        """Cut ``name`` off from every other member (only with a ``network``)."""
        assert self.network is not None, "isolate needs LocalCluster(..., network=MemoryNetwork())"
        m = self.members[name]
        assert m.node is not None
        others = [x.node.id for x in self.members.values() if x.node is not None]
        self.network.isolate(m.node.id, others)

    async def stop_member(self, name: str) -> None:
        m = self.members[name]
        if m.server is not None:
            await m.server.stop()
            m.server = None
        if m.node is not None:
            await m.node.stop()
            m.node = None

    async def add_member(self, name: str, learner: bool = True) -> LocalMember:
        """Add a new member through the leader, then start it (joins an existing cluster)."""
        m = LocalMember(
            name, self.root / name, f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while True:
            leader = await self.wait_leader()
            assert leader.node is not None
            try:
                await leader.node.add_member(name, m.peer_addr, m.client_addr, learner)
                break
            except ConfChangeRefused:
                # A leader just elected refuses until it has applied an entry of its own
                # term (or while another change is pending): ask again shortly.
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(self.tick_interval)
        self.members[name] = m
        initial = {x.name: x.peer_addr for x in self.members.values()}
        m.options["cluster_id"] = leader.node.cluster_id
        await self.start_member(name, state="existing", initial=initial)
        return m

    async def start(self) -> None:
        for attempt in range(3):
            try:
                await asyncio.gather(*(self.start_member(n) for n in self.members))
                break
            except OSError as e:
                # Another process took one of our ports between free_port() and bind():
                # start over, as a new cluster, on fresh ports.
                if e.errno != errno.EADDRINUSE or attempt == 2:
                    raise
                await self.stop()
                for m in self.members.values():
                    shutil.rmtree(m.data_dir, ignore_errors=True)
                    m.client_addr = f"127.0.0.1:{free_port()}"
                    m.peer_addr = f"127.0.0.1:{free_port()}"
                self.initial_cluster = {m.name: m.peer_addr for m in self.members.values()}
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

    def leader(self) -> LocalMember | None:
        best: LocalMember | None = None
        for m in self.members.values():
            if (
                m.node is not None
                and m.node.is_leader
                and (best is None or best.node is None or m.node.term > best.node.term)
            ):
                best = m
        return best

    async def wait_leader(self, timeout: float = 15.0) -> LocalMember:
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
            commits = {n.commit_index for n in nodes}
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


# --- real processes ----------------------------------------------------------------------


@dataclass
class Process:
    name: str
    data_dir: Path
    client_addr: str
    peer_addr: str
    metrics_addr: str
    log_path: Path
    popen: Any = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


class ProcessCluster:
    """N members as real ``raftkv serve`` processes on 127.0.0.1 (for end-to-end tests and
    fault injection).  ``kill`` is SIGKILL (nothing unsynced survives), ``pause`` SIGSTOP."""

    def __init__(
        self,
        size: int,
        data_dir: Path | str,
        *,
        tick_ms: int = 50,
        election_ticks: int = 10,
        snapshot_count: int = 10_000,
        snapshot_catchup_entries: int = 5_000,
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = Path(data_dir)
        self.snapshot_catchup_entries = snapshot_catchup_entries
        self.tick_ms = tick_ms
        self.election_ticks = election_ticks
        self.snapshot_count = snapshot_count
        self.env = env or {}
        self.procs: dict[str, Process] = {}
        for i in range(1, size + 1):
            name = f"n{i}"
            self.procs[name] = Process(
                name,
                self.root / name,
                f"127.0.0.1:{free_port()}",
                f"127.0.0.1:{free_port()}",
                f"127.0.0.1:{free_port()}",
                self.root / f"{name}.log",
            )
        self.initial_cluster = ",".join(f"{p.name}={p.peer_addr}" for p in self.procs.values())

    @property
    def endpoints(self) -> list[str]:
        return [p.client_addr for p in self.procs.values()]

    def command(self, p: Process) -> list[str]:
        import sys

        return [
            sys.executable,
            "-c",
            "from raftkv_cli.serve import serve; serve()",
            "--name",
            p.name,
            "--data-dir",
            str(p.data_dir),
            "--listen-client",
            p.client_addr,
            "--listen-peer",
            p.peer_addr,
            "--initial-cluster",
            self.initial_cluster,
            "--metrics-addr",
            p.metrics_addr,
            "--tick-ms",
            str(self.tick_ms),
            "--election-ticks",
            str(self.election_ticks),
            "--snapshot-count",
            str(self.snapshot_count),
            "--snapshot-catchup-entries",
            str(self.snapshot_catchup_entries),
            "--log-format",
            "json",
        ]

    def start_member(self, name: str) -> Process:
        import os
        import subprocess

        p = self.procs[name]
        if p.alive:
            return p
        self.root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, **p.extra_env}
        log = open(p.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            p.popen = subprocess.Popen(
                self.command(p),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=Path(__file__).resolve().parents[1],
            )
        finally:
            log.close()
        return p

    def start(self) -> None:
        for name in self.procs:
            self.start_member(name)

    def kill(self, name: str) -> None:
        import signal

        p = self.procs[name]
        if p.alive:
            p.popen.send_signal(signal.SIGKILL)
            p.popen.wait()

    def pause(self, name: str) -> None:
        import signal

        p = self.procs[name]
        if p.alive:
            p.popen.send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        import signal

        p = self.procs[name]
        if p.alive:
            p.popen.send_signal(signal.SIGCONT)

    def stop_member(self, name: str, timeout: float = 10.0) -> None:
        import signal
        import subprocess

        p = self.procs[name]
        if not p.alive:
            return
        p.popen.send_signal(signal.SIGCONT)
        p.popen.send_signal(signal.SIGTERM)
        try:
            p.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            p.popen.kill()
            p.popen.wait()

    def stop(self) -> None:
        for name in self.procs:
            with contextlib.suppress(Exception):
                self.stop_member(name)

    def __enter__(self) -> ProcessCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def health(self, name: str, timeout: float = 1.0) -> dict[str, Any] | None:
        """GET /health of one member (None if it does not answer)."""
        import json
        import urllib.request

        p = self.procs[name]
        try:
            with urllib.request.urlopen(f"http://{p.metrics_addr}/health", timeout=timeout) as r:
                data: dict[str, Any] = json.loads(r.read())
                return data
        except Exception as e:  # 503 raises HTTPError with a body
            body = getattr(e, "read", None)
            if body is not None:
                with contextlib.suppress(Exception):
                    data = json.loads(body())
                    return data
            return None

    def metrics(self, name: str, timeout: float = 1.0) -> dict[str, float]:
        """The member's Prometheus gauges as a dict (empty if it does not answer)."""
        import urllib.request

        p = self.procs[name]
        out: dict[str, float] = {}
        try:
            with urllib.request.urlopen(f"http://{p.metrics_addr}/metrics", timeout=timeout) as r:
                for line in r.read().decode().splitlines():
                    if line and not line.startswith("#"):
                        k, _, v = line.rpartition(" ")
                        with contextlib.suppress(ValueError):
                            out[k] = float(v)
        except Exception:
            return {}
        return out

    def leader(self) -> str | None:
        for name, p in self.procs.items():
            if p.alive and self.metrics(name).get("raftkv_raft_is_leader") == 1.0:
                return name
        return None

    def wait_healthy(self, timeout: float = 30.0) -> str:
        """Wait until every live member reports healthy; returns the leader's name."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [n for n, p in self.procs.items() if p.alive]
            if live and all((self.health(n) or {}).get("health") for n in live):
                lead = self.leader()
                if lead is not None:
                    return lead
            time.sleep(0.1)
        raise Timeout("cluster did not become healthy in time")
