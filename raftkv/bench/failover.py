"""``raftkv benchmark failover``: how long writes stop when the leader process is SIGKILLed.

Starts a cluster of real ``raftkv serve`` processes (fsync on, data in a temporary directory
unless one is given), writes continuously from one client, SIGKILLs the leader after a warm-up
and reports the gap between the last write acknowledged before the kill and the first one
acknowledged after it (and the time from the kill to that first write).  Every process it
starts is stopped before it returns, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from raftkv.client import Client
from raftkv.errors import RaftKVError, Timeout

SERVE = "import sys; from raftkv_cli.serve import serve; sys.argv[0] = 'raftkv serve'; serve()"
STOP_GRACE = 5.0


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServeProcess:
    name: str
    client_addr: str
    peer_addr: str
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class ProcessCluster:
    """N ``raftkv serve`` processes on 127.0.0.1 with free ports; logs in DATA_DIR/NAME.log."""

    root: Path
    size: int = 3
    tick_ms: int = 100
    election_ticks: int = 10
    snapshot_count: int = 10_000
    members: list[ServeProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.members = [
            ServeProcess(f"n{i}", f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}")
            for i in range(1, self.size + 1)
        ]

    @property
    def endpoints(self) -> list[str]:
        return [m.client_addr for m in self.members]

    def start(self) -> None:
        initial = ",".join(f"{m.name}={m.peer_addr}" for m in self.members)
        for m in self.members:
            log = open(self.root / f"{m.name}.log", "ab")  # noqa: SIM115 - owned by the child
            m.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    SERVE,
                    "--name", m.name,
                    "--data-dir", str(self.root / m.name),
                    "--listen-client", m.client_addr,
                    "--listen-peer", m.peer_addr,
                    "--initial-cluster", initial,
                    "--tick-ms", str(self.tick_ms),
                    "--election-ticks", str(self.election_ticks),
                    "--snapshot-count", str(self.snapshot_count),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            log.close()

    def kill(self, name: str) -> None:
        for m in self.members:
            if m.name == name and m.proc is not None:
                m.proc.send_signal(signal.SIGKILL)
                m.proc.wait()

    def stop(self) -> None:
        procs = [m.proc for m in self.members if m.proc is not None and m.proc.poll() is None]
        for p in procs:
            p.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    async def leader(self, timeout: float = 30.0) -> ServeProcess:
        """The member every live member names as leader (waits for an election)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            ids: dict[int, ServeProcess] = {}
            leaders: set[int] = set()
            for m in self.members:
                if m.proc is None or m.proc.poll() is not None:
                    continue
                try:
                    async with Client([m.client_addr], dial_timeout=0.5) as c:
                        st = await c.status()
                except (RaftKVError, OSError):
                    leaders.add(0)
                    continue
                ids[st.id] = m
                leaders.add(st.leader)
            if len(leaders) == 1 and (lid := leaders.pop()) in ids:
                return ids[lid]
            await asyncio.sleep(0.1)
        raise Timeout("no leader elected in time")


@contextlib.contextmanager
def process_cluster(
    size: int,
    data_dir: Path | None = None,
    tick_ms: int = 100,
    election_ticks: int = 10,
    snapshot_count: int = 10_000,
) -> Iterator[ProcessCluster]:
    """A started :class:`ProcessCluster`, stopped (and its temp dir removed) on exit."""
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="raftkv-fo-")))
        data_dir.mkdir(parents=True, exist_ok=True)
        cluster = ProcessCluster(data_dir, size, tick_ms, election_ticks, snapshot_count)
        stack.callback(cluster.stop)
        cluster.start()
        yield cluster


@dataclass(frozen=True, slots=True)
class RaftKVFailoverResult:
    nodes: int
    killed: str
    new_leader: str
    last_ok_before: float
    """Seconds from the last write acknowledged before the kill to the kill."""
    first_ok_after: float
    """Seconds from the kill to the first write acknowledged after it."""
    writes_before: int
    writes_after: int
    errors: int
    readable: int
    """Acknowledged writes found by a read after the run (must equal all of them)."""

    @property
    def gap(self) -> float:
        return self.last_ok_before + self.first_ok_after

    def lines(self) -> list[str]:
        return [
            f"cluster: {self.nodes} raftkv serve processes, killed leader {self.killed} "
            f"(SIGKILL), new leader {self.new_leader}",
            f"writes acknowledged: {self.writes_before} before, {self.writes_after} after the "
            f"kill; {self.errors} failed attempts; {self.readable} of "
            f"{self.writes_before + self.writes_after} read back",
            f"kill -> first acknowledged write: {self.first_ok_after * 1000:.1f} ms",
            f"write gap (last ack before kill -> first ack after): {self.gap * 1000:.1f} ms",
        ]


async def measure_failover(
    cluster: ProcessCluster,
    *,
    warmup: float = 2.0,
    after: int = 50,
    timeout: float = 30.0,
    command_timeout: float = 1.0,
) -> RaftKVFailoverResult:
    """Write one key at a time, SIGKILL the leader after ``warmup`` seconds, stop after
    ``after`` acknowledged writes following the kill.  The leader is looked up again just
    before the kill: leadership can move during the warm-up, and killing a follower would
    measure nothing."""
    await cluster.leader()  # a leader before the writes start
    acks: list[tuple[float, bytes]] = []
    errors = 0
    killed_at: float | None = None
    stop = asyncio.Event()

    async def writer(c: Client) -> None:
        nonlocal errors
        i = 0
        nafter = 0
        while not stop.is_set():
            key = b"/failover/%08d" % i
            i += 1
            try:
                await c.put(key, b"x")
            except RaftKVError:
                errors += 1
                await asyncio.sleep(0.005)  # no hot loop while no member can answer
                continue
            acks.append((time.perf_counter(), key))
            if killed_at is not None:
                nafter += 1
                if nafter >= after:
                    stop.set()

    async with Client(cluster.endpoints, dial_timeout=0.5, command_timeout=command_timeout) as c:
        task = asyncio.create_task(writer(c))
        try:
            await asyncio.sleep(warmup)
            old = await cluster.leader()
            killed_at = time.perf_counter()
            cluster.kill(old.name)
            await asyncio.wait_for(stop.wait(), timeout)
        finally:
            stop.set()
            await task
        new = await cluster.leader()
        keys = {k for _, k in acks}
        resp = await c.get(b"/failover/", range_end=b"/failover0", keys_only=True)
        readable = len(keys & {kv.key for kv in resp.kvs})
    before = [t for t, _ in acks if t <= killed_at]
    after_ts = [t for t, _ in acks if t > killed_at]
    return RaftKVFailoverResult(
        nodes=cluster.size,
        killed=old.name,
        new_leader=new.name,
        last_ok_before=killed_at - max(before) if before else 0.0,
        first_ok_after=min(after_ts) - killed_at,
        writes_before=len(before),
        writes_after=len(after_ts),
        errors=errors,
        readable=readable,
    )
