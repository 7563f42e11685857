"""Control of a real raftkv cluster for the jepsen_like runner: processes, link faults, files.

:class:`Control` wraps :class:`raftkv.testing.ProcessCluster` (real ``raftkv serve``
processes) with what nemeses need and the test harness must not reach into ``raftkv``
internals for:

* process faults: SIGKILL, SIGSTOP/SIGCONT, restart with extra environment (crash points);
* link faults through the test-only ``debug_fault`` method on a member's client port
  (``RAFTKV_TEST_HOOKS=1``): ``block`` / ``drop`` / ``delay`` / ``heal`` / ``clock_skew``;
* membership: start a member that joins the running cluster (``--initial-cluster-state
  existing``), wipe a member's data directory;
* data files: the member's ``raft.db`` (its ``entries`` table) and ``snap/*.snap`` files, for
  the disk nemesis.
* client processes a workload runs outside the runner (the lock workers,
  :class:`ClientProcs`): registered pids the ``pause`` nemesis can SIGSTOP, and which
  :meth:`Control.stop` kills, so no worker outlives a run.

Every blocking call (waiting for health, SIGKILL + wait) is cheap or runs in a thread, so the
runner's event loop keeps recording client operations while faults happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from raftkv.errors import ConnectionLost, RaftKVError, Timeout
from raftkv.protocol import codec, wire
from raftkv.protocol.methods import member_id, split_addr
from raftkv.testing import Process, ProcessCluster, free_port

CLUSTER_TOKEN: Final = "raftkv"
"""``raftkv serve``'s default ``--initial-cluster-token``: member ids derive from it."""
DEBUG_FAULT: Final = "debug_fault"
WIPED: Final = "data wiped by the harness"
"""The marker :meth:`Control.wipe` appends to a member's log."""


async def admin_call(addr: str, method: str, payload: Any, timeout: float = 2.0) -> Any:
    """One request on a fresh client connection to exactly ``addr`` (no redirect, no retry).

    Used for the test hook ``debug_fault``, which must reach one particular member: the
    regular client would fail over to another one.  Raises ConnectionLost / Timeout or the
    server's own typed error."""
    host, port = split_addr(addr)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            hello = wire.Handshake(wire.PROTOCOL_VERSION, 0, 0, wire.ROLE_CLIENT)
            writer.write(wire.encode_frame(hello.to_wire()))
            decoder = wire.FrameDecoder(wire.MAX_CLIENT_FRAME)
            frames: list[Any] = []
            sent = False
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    raise ConnectionLost(f"{addr} closed the connection")
                frames.extend(decoder.feed(data))
                if frames and not sent:
                    wire.check_handshake_reply(frames.pop(0))
                    writer.write(wire.encode_frame([1, method, payload]))
                    sent = True
                for f in frames:
                    if isinstance(f, list) and len(f) == 3 and f[0] == 1:
                        if f[1] == 0:
                            return f[2]
                        raise codec.decode_error(f[2])
                frames.clear()
    except TimeoutError:
        raise Timeout(f"{addr} did not answer {method} within {timeout:g}s") from None
    except OSError as e:
        raise ConnectionLost(f"cannot reach {addr}: {e}") from None
    finally:
        if writer is not None:
            writer.close()


class _Processes(ProcessCluster):
    """ProcessCluster plus per-member extra flags (joining an existing cluster)."""

    extra_args: dict[str, list[str]]

    def command(self, p: Process) -> list[str]:
        cmd = super().command(p)
        extra = getattr(self, "extra_args", {}).get(p.name, [])
        if extra:
            # the joining member's own view of the cluster replaces --initial-cluster
            i = cmd.index("--initial-cluster")
            cmd = cmd[:i] + cmd[i + 2 :] + extra
        return cmd


class ClientProcs:
    """Client processes of the run (not raftkv members): name -> pid, registered by the
    workload that spawned them, with the one currently holding the workload's lock.

    The ``pause`` nemesis SIGSTOPs them (``client`` mode); :meth:`kill_all` is the backstop
    that makes sure none outlives the run, whatever went wrong in the workload."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.holder: str | None = None
        """The client that last said it holds the lock and has not said it released it."""
        self.paused: set[str] = set()
        self.lease_ttl: float = 0.0
        """The clients' session TTL: a pause must outlast it for a holder to lose its lock."""

    def register(self, name: str, pid: int) -> None:
        self.pids[name] = pid

    def unregister(self, name: str) -> None:
        """Forget ``name`` (its process is ending: never signal a pid that may be reused)."""
        self.pids.pop(name, None)
        self.paused.discard(name)
        if self.holder == name:
            self.holder = None

    def holding(self, name: str, held: bool) -> None:
        """Record that ``name`` now holds (``held``) or has released the lock."""
        if held:
            self.holder = name
        elif self.holder == name:
            self.holder = None

    def _signal(self, name: str, sig: signal.Signals) -> bool:
        pid = self.pids.get(name)
        if pid is None:
            return False
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

    def pause(self, name: str) -> bool:
        """SIGSTOP ``name``; False if it is not running any more."""
        ok = self._signal(name, signal.SIGSTOP)
        if ok:
            self.paused.add(name)
        return ok

    def resume(self, name: str) -> None:
        self._signal(name, signal.SIGCONT)
        self.paused.discard(name)

    def resume_all(self) -> list[str]:
        """SIGCONT every paused client; their names."""
        done = sorted(self.paused)
        for n in done:
            self.resume(n)
        return done

    def kill_all(self) -> None:
        """SIGCONT then SIGKILL every registered client (the end of a run, or its failure)."""
        for n in list(self.pids):
            self._signal(n, signal.SIGCONT)
            self._signal(n, signal.SIGKILL)
            self.unregister(n)


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A member as the harness knows it."""

    name: str
    id: int
    client_addr: str
    peer_addr: str


class Control:
    """The cluster under test and every fault the nemeses inject into it."""

    def __init__(
        self,
        size: int,
        root: Path,
        *,
        env: dict[str, str] | None = None,
        snapshot_count: int = 10_000,
        tick_ms: int = 50,
        election_ticks: int = 10,
    ) -> None:
        self.root = root
        base_env = {"RAFTKV_TEST_HOOKS": "1", **(env or {})}
        self.pc = _Processes(
            size,
            root,
            tick_ms=tick_ms,
            election_ticks=election_ticks,
            snapshot_count=snapshot_count,
            env=base_env,
        )
        self.pc.extra_args = {}
        self.paused: set[str] = set()
        self.removed: set[str] = set()
        self.skewed: set[str] = set()
        self.clients = ClientProcs()
        self._next_name = size + 1

    # --- views -------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """Current members (removed ones excluded), in creation order."""
        return [n for n in self.pc.procs if n not in self.removed]

    def member(self, name: str) -> MemberInfo:
        p = self.pc.procs[name]
        return MemberInfo(name, member_id(name, CLUSTER_TOKEN), p.client_addr, p.peer_addr)

    def endpoints(self) -> list[str]:
        return [self.pc.procs[n].client_addr for n in self.names]

    def alive(self, name: str) -> bool:
        return self.pc.procs[name].alive

    def data_dir(self, name: str) -> Path:
        return self.pc.procs[name].data_dir

    def exit_code(self, name: str) -> int | None:
        p = self.pc.procs[name]
        return None if p.popen is None else p.popen.poll()

    async def leader(self) -> str | None:
        """The member whose metrics say it leads (None during an election)."""
        return await asyncio.to_thread(self._leader_sync)

    def _leader_sync(self) -> str | None:
        for n in self.names:
            if (
                n not in self.paused
                and self.alive(n)
                and self.pc.metrics(n, timeout=0.5).get("raftkv_raft_is_leader") == 1.0
            ):
                return n
        return None

    # --- process faults ----------------------------------------------------------------------

    def start(self) -> None:
        self.pc.start()

    async def wait_healthy(self, timeout: float = 30.0) -> str:
        """Wait until every live member is healthy and one leads; the leader's name."""
        return await asyncio.to_thread(self._wait_healthy_sync, timeout)

    def _wait_healthy_sync(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [n for n in self.names if self.alive(n) and n not in self.paused]
            if live and all((self.pc.health(n) or {}).get("health") for n in live):
                lead = self._leader_sync()
                if lead is not None:
                    return lead
            time.sleep(0.1)
        raise Timeout("cluster did not become healthy in time")

    async def kill(self, name: str) -> None:
        self.paused.discard(name)
        await asyncio.to_thread(self.pc.kill, name)

    def pause(self, name: str) -> None:
        self.pc.pause(name)
        self.paused.add(name)

    def resume(self, name: str) -> None:
        self.pc.resume(name)
        self.paused.discard(name)

    def restart(self, name: str, extra_env: dict[str, str] | None = None) -> None:
        """Start a stopped member again (with ``extra_env``, e.g. RAFTKV_FAILPOINTS)."""
        p = self.pc.procs[name]
        p.extra_env = dict(extra_env or {})
        self.pc.start_member(name)

    async def wait_exit(self, name: str, timeout: float) -> int | None:
        """Wait until the member's process ends; its exit code (None if still running)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.exit_code(name)
            if rc is not None:
                return rc
            await asyncio.sleep(0.05)
        return None

    def stop(self) -> None:
        self.clients.kill_all()
        for n in list(self.pc.procs):
            with contextlib.suppress(Exception):
                self.pc.resume(n)
        self.pc.stop()

    # --- link faults -------------------------------------------------------------------------

    async def fault(self, name: str, payload: dict[str, Any]) -> bool:
        """Send ``debug_fault`` to one member; False if it cannot be reached (dead, paused)."""
        if not self.alive(name) or name in self.paused:
            return False
        try:
            await admin_call(self.pc.procs[name].client_addr, DEBUG_FAULT, payload, 1.0)
        except RaftKVError:
            return False
        return True

    async def block(self, name: str, peers: list[str]) -> bool:
        """Cut ``name``'s links to ``peers`` (both directions, at ``name``'s end)."""
        ids = [self.member(p).id for p in peers if p != name]
        return await self.fault(name, {"block": ids})

    async def block_outgoing(self, name: str, peers: list[str]) -> bool:
        """Drop what ``name`` sends to ``peers``; what they send to it still arrives."""
        ids = [self.member(p).id for p in peers if p != name]
        return await self.fault(name, {"block_out": ids})

    async def heal(self) -> None:
        """Undo every link fault and clock skew on every reachable member."""
        await asyncio.gather(
            *(self.fault(n, {"heal": True, "clock_skew": 0.0}) for n in self.names)
        )
        self.skewed.clear()

    # --- membership --------------------------------------------------------------------------

    def new_member(self) -> MemberInfo:
        """Reserve a fresh member (name, ports, data dir) that has never been in the cluster."""
        name = f"n{self._next_name}"
        self._next_name += 1
        p = Process(
            name,
            self.root / name,
            f"127.0.0.1:{free_port()}",
            f"127.0.0.1:{free_port()}",
            f"127.0.0.1:{free_port()}",
            self.root / f"{name}.log",
        )
        self.pc.procs[name] = p
        self.removed.add(name)  # not a member until join() is called
        return self.member(name)

    def join(self, name: str, peers: dict[str, str], cluster_id: int) -> None:
        """Start ``name`` as a member joining the running cluster ``cluster_id``."""
        self.removed.discard(name)
        spec = ",".join(f"{n}={a}" for n, a in peers.items())
        self.pc.extra_args[name] = [
            "--initial-cluster",
            spec,
            "--initial-cluster-state",
            "existing",
            "--cluster-id",
            f"{cluster_id:x}",
        ]
        self.pc.start_member(name)

    def forget(self, name: str) -> None:
        """Mark ``name`` removed from the cluster (its process must be stopped already)."""
        self.removed.add(name)

    def wipe(self, name: str) -> None:
        """Delete a stopped member's data; a marker line in its log tells the log checks
        (``vote_durability``) that what it promised before is gone on purpose."""
        shutil.rmtree(self.data_dir(name), ignore_errors=True)
        p = self.pc.procs[name].log_path
        with contextlib.suppress(OSError), p.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"logger": "jepsen_like", "msg": WIPED}) + "\n")

    # --- files (disk nemesis) ----------------------------------------------------------------

    def db_path(self, name: str) -> Path:
        return self.data_dir(name) / "raft.db"

    def latest_snapshot(self, name: str) -> Path | None:
        snaps = sorted((self.data_dir(name) / "snap").glob("*.snap"))
        return snaps[-1] if snaps else None

    def corrupt_log_tail(self, name: str, rows: int, mode: str) -> int:
        """Truncate (delete) or bit-flip the last ``rows`` rows of the ``entries`` table of a
        stopped member; the number of rows touched."""
        db = self.db_path(name)
        if not db.exists():
            return 0
        con = sqlite3.connect(db)
        try:
            idx = [
                r[0]
                for r in con.execute("SELECT idx FROM entries ORDER BY idx DESC LIMIT ?", (rows,))
            ]
            for i in idx:
                if mode == "truncate":
                    con.execute("DELETE FROM entries WHERE idx = ?", (i,))
                else:
                    (data,) = con.execute("SELECT data FROM entries WHERE idx = ?", (i,)).fetchone()
                    flipped = bytearray(data or b"\0")
                    flipped[len(flipped) // 2] ^= 0x40
                    con.execute("UPDATE entries SET data = ? WHERE idx = ?", (bytes(flipped), i))
            con.commit()
        finally:
            con.close()
        return len(idx)

    def copy_logs(self, out: Path) -> list[Path]:
        """Copy every member's log file to ``out`` (the run directory)."""
        out.mkdir(parents=True, exist_ok=True)
        copied = []
        for p in self.pc.procs.values():
            if p.log_path.exists():
                dst = out / p.log_path.name
                shutil.copyfile(p.log_path, dst)
                copied.append(dst)
        return copied

    def log_text(self, name: str) -> str:
        p = self.pc.procs[name].log_path
        return p.read_text(errors="replace") if p.exists() else ""
