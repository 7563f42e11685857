"""``raftkv cluster start|stop|status``: a local cluster of real ``raftkv serve`` processes.

Ports (all on ``--host``, default 127.0.0.1), for member ``n<i>`` (i from 1):

* client: ``BASE + i - 1``        (2379, 2380, 2381 for the default base)
* peer:   ``BASE + 100 + i - 1``  (2479, 2480, 2481)
* metrics and /health: ``BASE + 200 + i - 1`` (2579, ...)
* etcd's v3 gRPC API: ``BASE + 300 + i - 1`` (2679, ...)

``DATA_DIR/cluster.json`` records every member (name, addresses, pid, data dir, log file);
``DATA_DIR/NAME`` is the member's data dir and ``DATA_DIR/NAME.log`` its log.  Starting on an
existing data dir restarts only the members whose recorded pid is not running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from raftkv.errors import RaftKVError

from .context import settings
from .output import echo_json, table

STATE_FILE = "cluster.json"


@dataclass
class NodeInfo:
    name: str
    client_addr: str
    peer_addr: str
    metrics_addr: str
    data_dir: str
    log: str
    pid: int | None = None
    etcd_addr: str = ""

    @staticmethod
    def from_dict(d: dict[str, Any]) -> NodeInfo:
        return NodeInfo(
            name=str(d["name"]),
            client_addr=str(d["client_addr"]),
            peer_addr=str(d["peer_addr"]),
            metrics_addr=str(d.get("metrics_addr", "")),
            data_dir=str(d["data_dir"]),
            log=str(d["log"]),
            pid=int(d["pid"]) if d.get("pid") else None,
            etcd_addr=str(d.get("etcd_addr", "")),
        )


def plan(nodes: int, data_dir: Path, base_port: int, host: str) -> list[NodeInfo]:
    """The members of a new cluster (see the module docstring for the port layout)."""
    return [
        NodeInfo(
            name=f"n{i}",
            client_addr=f"{host}:{base_port + i - 1}",
            peer_addr=f"{host}:{base_port + 100 + i - 1}",
            metrics_addr=f"{host}:{base_port + 200 + i - 1}",
            etcd_addr=f"{host}:{base_port + 300 + i - 1}",
            data_dir=str(data_dir / f"n{i}"),
            log=str(data_dir / f"n{i}.log"),
        )
        for i in range(1, nodes + 1)
    ]


def load(data_dir: Path) -> list[NodeInfo]:
    path = data_dir / STATE_FILE
    try:
        doc = json.loads(path.read_text())
        return [NodeInfo.from_dict(d) for d in doc["nodes"]]
    except FileNotFoundError:
        raise click.ClickException(f"no cluster in {data_dir} ({STATE_FILE} not found)") from None
    except (ValueError, KeyError, TypeError) as e:
        raise click.ClickException(f"{path} is damaged: {e}") from None


def save(data_dir: Path, nodes: list[NodeInfo]) -> None:
    path = data_dir / STATE_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"nodes": [asdict(n) for n in nodes]}, indent=2) + "\n")
    os.replace(tmp, path)


def pid_alive(pid: int | None) -> bool:
    """True if ``pid`` runs and is a raftkv server (guards against a recycled pid)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            return True
        if any(args) and b"serve" not in args:  # empty while the process is still exec'ing
            return False
        with contextlib.suppress(OSError):  # a zombie child of ours is not running
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat.rsplit(")", 1)[-1].split()[0] == "Z":
                return False
    return True


def serve_command(n: NodeInfo, nodes: list[NodeInfo]) -> list[str]:
    initial = ",".join(f"{m.name}={m.peer_addr}" for m in nodes)
    return [
        sys.executable,
        "-m",
        "raftkv_cli.main",
        "serve",
        "--name",
        n.name,
        "--data-dir",
        n.data_dir,
        "--listen-client",
        n.client_addr,
        "--listen-peer",
        n.peer_addr,
        "--initial-cluster",
        initial,
        "--metrics-addr",
        n.metrics_addr,
        *(["--etcd-listen", n.etcd_addr] if n.etcd_addr else []),
    ]


def spawn(n: NodeInfo, nodes: list[NodeInfo]) -> int:
    """Start one member in its own session (Ctrl-C in the terminal does not reach it)."""
    Path(n.data_dir).parent.mkdir(parents=True, exist_ok=True)
    with open(n.log, "ab") as log:
        proc = subprocess.Popen(
            serve_command(n, nodes),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    return proc.pid


_children: dict[int, subprocess.Popen[bytes]] = {}
"""Members started by this process, so they can be reaped (no zombies)."""


def _reap() -> None:
    for pid, proc in list(_children.items()):
        if proc.poll() is not None:
            del _children[pid]


def _port_open(addr: str) -> bool:
    host, _, port = addr.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.2):
            return True
    except OSError:
        return False


def wait_ready(nodes: list[NodeInfo], timeout: float) -> list[str]:
    """Wait until every member's client port accepts connections; returns the names of
    members that exited or did not come up in time."""
    deadline = time.monotonic() + timeout
    pending = {n.name: n for n in nodes}
    dead: list[str] = []
    while pending and time.monotonic() < deadline:
        for name, n in list(pending.items()):
            if not _running(n):
                dead.append(name)
                del pending[name]
            elif _port_open(n.client_addr):
                del pending[name]
        if pending:
            time.sleep(0.1)
    return dead + list(pending)


def _running(n: NodeInfo) -> bool:
    """Our own child that has not exited, or a recorded pid that is a raftkv server."""
    proc = _children.get(n.pid or 0)
    if proc is not None:
        return proc.poll() is None
    return pid_alive(n.pid)


def stop_nodes(nodes: list[NodeInfo], grace: float) -> list[str]:
    """SIGTERM every live member, SIGKILL those still running after ``grace`` seconds.
    Returns the names of the members that had to be killed."""
    live = [n for n in nodes if _running(n)]
    for n in live:
        with contextlib.suppress(ProcessLookupError):
            assert n.pid is not None
            os.kill(n.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_running(n) for n in live):
        time.sleep(0.05)
    killed = []
    for n in live:
        if _running(n):
            killed.append(n.name)
            with contextlib.suppress(ProcessLookupError):
                assert n.pid is not None
                os.kill(n.pid, signal.SIGKILL)
    for proc in list(_children.values()):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(2.0)
    _reap()
    for n in nodes:
        if not _running(n):
            n.pid = None
    return killed


@click.group("cluster")
def cluster() -> None:
    """Run a local cluster of real 'raftkv serve' processes (ports: see docs/cli.md)."""


_DATA_DIR = click.option(
    "--data-dir",
    default="./raftkv-data",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where cluster.json, the members' data dirs and logs live.",
)


@cluster.command("start")
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 99))
@_DATA_DIR
@click.option("--base-port", default=2379, show_default=True, type=click.IntRange(1, 65000))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--detach", is_flag=True, help="Start in the background and return.")
@click.option(
    "--wait", "wait_s", default=15.0, show_default=True, help="Seconds to wait for the ports."
)
def cluster_start(
    nodes: int, data_dir: Path, base_port: int, host: str, detach: bool, wait_s: float
) -> None:
    """Start NODES members (or restart the stopped members of an existing DATA_DIR).

    Without --detach it stays in the foreground and stops the members on Ctrl-C or SIGTERM.
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if (data_dir / STATE_FILE).exists():
        members = load(data_dir)
        if len(members) != nodes:
            click.echo(f"using the {len(members)} members recorded in {data_dir / STATE_FILE}")
    else:
        members = plan(nodes, data_dir, base_port, host)
    if detach:
        _start_members(data_dir, members, wait_s, stop_on_failure=False)
        return
    # Foreground: signals are caught before the first member starts, so a Ctrl-C or SIGTERM at
    # any moment stops every member this command started.
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _start_members(data_dir, members, wait_s, stop_on_failure=True)
        click.echo("running in the foreground; Ctrl-C stops the cluster")
        while not stop.wait(0.5):
            _reap()
        click.echo("stopping the cluster")
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        stop_nodes(members, 10.0)
        save(data_dir, members)


def _start_members(
    data_dir: Path, members: list[NodeInfo], wait_s: float, *, stop_on_failure: bool
) -> None:
    """Start the members that are not running, wait for their ports, print the endpoints."""
    started = []
    for n in members:
        if pid_alive(n.pid):
            continue
        n.pid = spawn(n, members)
        started.append(n)
    save(data_dir, members)
    if started:
        bad = wait_ready(started, wait_s)
        if bad:
            logs = ", ".join(str(Path(m.log)) for m in members if m.name in bad)
            if stop_on_failure:
                stop_nodes(members, 5.0)
                save(data_dir, members)
            raise click.ClickException(f"member(s) {', '.join(bad)} did not start; see {logs}")
    fresh = {n.name for n in started}
    for n in members:
        state = "started" if n.name in fresh else "already running"
        etcd = f", etcd {n.etcd_addr}" if n.etcd_addr else ""
        click.echo(
            f"{n.name}: {state}, pid {n.pid}, client {n.client_addr}, peer {n.peer_addr}{etcd}"
        )
    if any(n.etcd_addr for n in members):
        click.echo("etcd endpoints: " + ",".join(n.etcd_addr for n in members if n.etcd_addr))
    click.echo("endpoints: " + ",".join(n.client_addr for n in members))


@cluster.command("stop")
@_DATA_DIR
@click.option("--grace", default=10.0, show_default=True, help="Seconds before SIGKILL.")
def cluster_stop(data_dir: Path, grace: float) -> None:
    """Stop every member (SIGTERM, then SIGKILL after the grace period)."""
    members = load(data_dir)
    live = [n.name for n in members if pid_alive(n.pid)]
    killed = stop_nodes(members, grace)
    save(data_dir, members)
    for name in live:
        click.echo(f"{name}: {'killed' if name in killed else 'stopped'}")
    if not live:
        click.echo("no member was running")


@cluster.command("status")
@_DATA_DIR
@click.pass_context
def cluster_status(ctx: click.Context, data_dir: Path) -> None:
    """Each member's pid, whether it runs, and its endpoint status."""
    s = settings(ctx)
    members = load(data_dir)
    rows: list[dict[str, Any]] = []
    from raftkv.client.sync import SyncClient

    with SyncClient(
        [n.client_addr for n in members],
        dial_timeout=s.dial_timeout,
        command_timeout=s.command_timeout,
    ) as c:
        for n in members:
            row: dict[str, Any] = {
                "name": n.name,
                "pid": n.pid,
                "alive": pid_alive(n.pid),
                "endpoint": n.client_addr,
            }
            if row["alive"]:
                try:
                    st = c.status(n.client_addr, timeout=min(s.command_timeout, 2.0))
                    row.update(is_leader=st.is_leader, term=st.term, revision=st.revision, error="")
                except RaftKVError as e:
                    row.update(error=str(e))
            rows.append(row)
    if s.write_out == "json":
        echo_json(rows)
        return
    headers = ["name", "pid", "alive", "endpoint", "is leader", "raft term", "revision", "error"]
    cells = [
        [
            r["name"],
            r["pid"] or "",
            str(r["alive"]).lower(),
            r["endpoint"],
            str(r.get("is_leader", "")).lower(),
            r.get("term", ""),
            r.get("revision", ""),
            r.get("error", ""),
        ]
        for r in rows
    ]
    if s.write_out == "table":
        click.echo(table(headers, cells))
    else:
        for cell in cells:
            click.echo(", ".join(str(x) for x in cell))
