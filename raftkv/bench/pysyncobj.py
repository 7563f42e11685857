"""``raftkv benchmark pysyncobj``: PySyncObj 0.3.14 measured the way raftkv is measured.

Three PySyncObj members run as separate OS processes on 127.0.0.1 (each a ``SyncObj`` holding
one ``ReplDict``; with ``journal`` on, each has a ``FileJournal`` and a full-dump file in a
temporary directory).  Members 1 and 2 start first and elect a leader between them; then
the *driver* (member 3) starts, so it is a follower and every command it issues is forwarded
to the leader: the same hop count as a raftkv client talking to its leader.  The driver runs
the workload in its own process and reports JSON lines on stdout; this module's orchestrator
reads them, SIGKILLs the leader in ``failover`` mode, and stops every process it started
before it returns, whatever happens.

Modes:

* ``seq``: ``total`` sequential ``set(key, value, sync=True)``;
* ``concurrent``: ``inflight`` sets kept in flight (callbacks) for ``seconds``;
* ``failover``: sequential sync sets; after ``warmup`` seconds the orchestrator SIGKILLs the
  leader; the report has the same definitions as :mod:`raftkv.bench.failover` (time from the
  kill to the first acknowledged set, and the gap from the last ack before it).

PySyncObj has no type hints, so it is imported lazily with :func:`importlib.import_module`
and its objects stay ``Any`` at that boundary.  The timestamps of the kill (orchestrator) and
of the acknowledgements (driver) are both ``CLOCK_MONOTONIC``, one clock for every process on
Linux.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from raftkv.bench.report import Recorder, Stats
from raftkv.errors import InvalidArgument, RaftKVError, Timeout
from raftkv.testing import free_port

PYSYNCOBJ_VERSION = "0.3.14"
MEMBER = "import sys; from raftkv.bench.pysyncobj import member_main; member_main(sys.argv[1])"
STOP_GRACE = 5.0
POLL = 0.01


class Mode(StrEnum):
    SEQ = "seq"
    CONCURRENT = "concurrent"
    FAILOVER = "failover"


def now() -> float:
    """``CLOCK_MONOTONIC`` in seconds: comparable between the processes of one machine."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def load_pysyncobj() -> Any:
    """The ``pysyncobj`` module (``Any``: it has no type hints).  Raises ``ImportError`` with
    the install hint when it is missing."""
    try:
        return importlib.import_module("pysyncobj")
    except ImportError as e:
        raise ImportError(
            "pysyncobj is not installed: pip install 'pysyncobj==0.3.14' "
            "(or pip install 'raftkv[compare]')"
        ) from e


def pysyncobj_version() -> str:
    """The installed PySyncObj version ('' when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pysyncobj")
    except PackageNotFoundError:
        return ""


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadResult:
    """A ``seq`` or ``concurrent`` run, seen from the driver member."""

    mode: Mode
    journal: bool
    inflight: int
    val_size: int
    leader: str
    driver: str
    stats: Stats

    def title(self) -> str:
        shape = "1 at a time" if self.mode is Mode.SEQ else f"{self.inflight} in flight"
        return (
            f"pysyncobj {PYSYNCOBJ_VERSION} {self.mode.value}: 3 members, driver {self.driver} "
            f"(follower) -> leader {self.leader}, {shape}, {self.val_size}-byte values, "
            f"journal {'on (mmap, no fsync)' if self.journal else 'off (memory)'}"
        )


@dataclass(frozen=True, slots=True)
class PySyncObjFailoverResult:
    """One leader kill, measured as :class:`raftkv.bench.failover.RaftKVFailoverResult` is."""

    killed: str
    new_leader: str
    last_ok_before: float
    """Seconds from the last set acknowledged before the kill to the kill."""
    first_ok_after: float
    """Seconds from the kill to the first set acknowledged after it."""
    writes_before: int
    writes_after: int
    errors: dict[str, int]
    """Failed attempts by PySyncObj's fail reason (or 'Timeout')."""
    readable: int
    """Acknowledged keys found in the driver's ReplDict after the run (must be all)."""

    @property
    def gap(self) -> float:
        return self.last_ok_before + self.first_ok_after

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def lines(self) -> list[str]:
        errs = ", ".join(f"{n} {k}" for k, n in sorted(self.errors.items())) or "none"
        return [
            f"cluster: 3 pysyncobj processes, killed leader {self.killed} (SIGKILL), "
            f"new leader {self.new_leader}",
            f"sets acknowledged: {self.writes_before} before, {self.writes_after} after the "
            f"kill; failed attempts: {errs}; {self.readable} of "
            f"{self.writes_before + self.writes_after} found in the driver's ReplDict",
            f"kill -> first acknowledged set: {self.first_ok_after * 1000:.1f} ms",
            f"set gap (last ack before kill -> first ack after): {self.gap * 1000:.1f} ms",
        ]


def _stats(latencies: list[float], errors: dict[str, int], seconds: float) -> Stats:
    rec = Recorder(started=0.0, latencies=list(latencies), errors=Counter(errors))
    rec.finished = seconds
    return rec.stats()


# --- the orchestrator -----------------------------------------------------------------------


@dataclass
class PsoMember:
    """One member process and the JSON lines it has printed (read by a thread)."""

    name: str
    addr: str
    proc: subprocess.Popen[bytes]
    log: Path
    events: queue.Queue[dict[str, Any] | None] = field(default_factory=queue.Queue)
    leader: str | None = None

    def start_reader(self) -> None:
        out = self.proc.stdout
        assert out is not None

        def read() -> None:
            for raw in out:
                with contextlib.suppress(ValueError):
                    self.events.put(json.loads(raw))
            self.events.put(None)  # end of output: the process is gone

        threading.Thread(target=read, name=f"pso-{self.name}", daemon=True).start()

    def next_event(self, deadline: float) -> dict[str, Any]:
        """The next event, skipping leader reports (recorded in ``leader``)."""
        while True:
            try:
                ev = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise Timeout(f"{self.name} reported nothing in time") from None
            if ev is None:
                raise RaftKVError(
                    f"{self.name} exited (status {self.proc.wait()}) before reporting: "
                    f"{self.log_tail()}"
                )
            if ev.get("event") == "leader":
                self.leader = ev.get("leader")
                continue
            return ev

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the member's stderr (PySyncObj logs there)."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"

    def drain_leader(self) -> None:
        """Take the leader reports queued so far."""
        with contextlib.suppress(queue.Empty):
            while True:
                ev = self.events.get_nowait()
                if ev is None:
                    return
                if ev.get("event") == "leader":
                    self.leader = ev.get("leader")


@dataclass
class PsoCluster:
    """Three PySyncObj member processes; ``driver`` is the one started last."""

    root: Path
    journal: bool
    addrs: list[str] = field(default_factory=list)
    members: list[PsoMember] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]

    def _spawn(self, i: int, spec: dict[str, Any]) -> PsoMember:
        name = f"p{i + 1}"
        spec = {
            **spec,
            "self": self.addrs[i],
            "others": [a for j, a in enumerate(self.addrs) if j != i],
            "journal": str(self.root / f"{name}.journal") if self.journal else None,
            "dump": str(self.root / f"{name}.dump") if self.journal else None,
        }
        log_path = self.root / f"{name}.log"
        log = open(log_path, "ab")  # noqa: SIM115 - owned by the child
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", MEMBER, json.dumps(spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,  # its own process group: stop() reaches dump forks
            )
        finally:
            log.close()
        m = PsoMember(name, self.addrs[i], proc, log_path)
        self.members.append(m)
        m.start_reader()
        return m

    def start_pair(self, timeout: float = 30.0) -> str:
        """Start members 1 and 2 and wait until both name the same leader; return it."""
        pair = [self._spawn(i, {"role": "member"}) for i in range(2)]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in pair:
                m.drain_leader()
                if m.proc.poll() is not None:
                    raise RaftKVError(
                        f"{m.name} exited with status {m.proc.returncode}: {m.log_tail()}"
                    )
            if pair[0].leader is not None and pair[0].leader == pair[1].leader:
                return pair[0].leader
            time.sleep(POLL)
        raise Timeout(f"members 1 and 2 elected no leader within {timeout:g}s")

    def start_driver(self, work: dict[str, Any]) -> PsoMember:
        return self._spawn(2, {"role": "driver", **work})

    def by_addr(self, addr: str) -> PsoMember:
        return next(m for m in self.members if m.addr == addr)

    def name_of(self, addr: str | None) -> str:
        if addr is None:
            return "none"
        return next((f"{m.name} ({addr})" for m in self.members if m.addr == addr), addr)

    def kill(self, m: PsoMember) -> None:
        m.proc.send_signal(signal.SIGKILL)
        m.proc.wait()

    def stop(self) -> None:
        """Stop every member (and anything a member forked): SIGTERM to each process group,
        SIGKILL after ``STOP_GRACE``."""
        for m in self.members:
            if m.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    m.proc.stdin.close()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(m.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for m in self.members:
            try:
                m.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(m.proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def pso_cluster(journal: bool = True, data_dir: Path | None = None) -> Iterator[PsoCluster]:
    """A :class:`PsoCluster` whose processes are all stopped (and temporary directory
    removed) on exit."""
    load_pysyncobj()  # fail here, with the install hint, not in a child
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="raftkv-pso-")))
        data_dir.mkdir(parents=True, exist_ok=True)
        cluster = PsoCluster(data_dir, journal)
        stack.callback(cluster.stop)
        yield cluster


def _validate(val_size: int, **positive: float) -> None:
    for name, v in positive.items():
        if v <= 0:
            raise InvalidArgument(f"{name} must be positive, got {v:g}")
    if val_size < 0:
        raise InvalidArgument(f"val_size must not be negative, got {val_size}")


def run_load(
    mode: Mode,
    *,
    total: int = 2000,
    inflight: int = 100,
    seconds: float = 30.0,
    val_size: int = 256,
    journal: bool = True,
    op_timeout: float = 5.0,
    data_dir: Path | None = None,
) -> LoadResult:
    """A ``seq`` (``total`` sets, one at a time) or ``concurrent`` (``inflight`` sets in
    flight for ``seconds``) run on a fresh 3-member cluster."""
    if mode is Mode.FAILOVER:
        raise InvalidArgument("use run_failover for failover")
    _validate(val_size, total=total, inflight=inflight, seconds=seconds)
    work = {
        "mode": mode.value,
        "total": total,
        "inflight": inflight,
        "seconds": seconds,
        "val_size": val_size,
        "op_timeout": op_timeout,
    }
    budget = (total * op_timeout if mode is Mode.SEQ else seconds + op_timeout) + 60.0
    with pso_cluster(journal, data_dir) as cluster:
        cluster.start_pair()
        driver = cluster.start_driver(work)
        ready = driver.next_event(time.monotonic() + 60.0)
        res = driver.next_event(time.monotonic() + budget)
    return LoadResult(
        mode=mode,
        journal=journal,
        inflight=1 if mode is Mode.SEQ else inflight,
        val_size=val_size,
        leader=cluster.name_of(ready["leader"]),
        driver=cluster.name_of(cluster.addrs[2]),
        stats=_stats(res["latencies"], res["errors"], res["seconds"]),
    )


def run_failover(
    *,
    warmup: float = 2.0,
    after: int = 50,
    val_size: int = 256,
    journal: bool = True,
    op_timeout: float = 1.0,
    timeout: float = 30.0,
    data_dir: Path | None = None,
) -> PySyncObjFailoverResult:
    """Sequential sync sets from the driver; SIGKILL the leader after ``warmup`` seconds;
    stop after ``after`` sets acknowledged following the kill (or fail after ``timeout``)."""
    _validate(val_size, after=after, warmup=warmup)
    work = {
        "mode": Mode.FAILOVER.value,
        "warmup": warmup,
        "after": after,
        "val_size": val_size,
        "op_timeout": op_timeout,
        "timeout": timeout,
    }
    with pso_cluster(journal, data_dir) as cluster:
        cluster.start_pair()
        driver = cluster.start_driver(work)
        driver.next_event(time.monotonic() + 60.0)  # ready
        warm = driver.next_event(time.monotonic() + warmup + 60.0)
        if warm["leader"] not in cluster.addrs[:2]:
            raise RaftKVError(f"the driver names {warm['leader']} as leader, not member 1 or 2")
        victim = cluster.by_addr(warm["leader"])
        killed_at = now()
        cluster.kill(victim)
        assert driver.proc.stdin is not None
        driver.proc.stdin.write(f"killed {killed_at!r}\n".encode())
        driver.proc.stdin.flush()
        res = driver.next_event(time.monotonic() + timeout + 30.0)
    if not res.get("finished"):
        raise Timeout(f"fewer than {after} sets acknowledged within {timeout:g}s of the kill")
    acks: list[float] = res["acks"]
    before = [t for t in acks if t <= killed_at]
    after_ts = [t for t in acks if t > killed_at]
    if not after_ts:
        raise Timeout("no set acknowledged after the kill")
    return PySyncObjFailoverResult(
        killed=cluster.name_of(victim.addr),
        new_leader=cluster.name_of(res["leader"]),
        last_ok_before=killed_at - max(before) if before else 0.0,
        first_ok_after=min(after_ts) - killed_at,
        writes_before=len(before),
        writes_after=len(after_ts),
        errors=res["errors"],
        readable=res["readable"],
    )


# --- inside a member process ----------------------------------------------------------------


def _emit(obj: dict[str, Any], out: IO[str], lock: threading.Lock) -> None:
    with lock:
        out.write(json.dumps(obj) + "\n")
        out.flush()


def _addr(node: Any) -> str | None:
    return None if node is None else str(node.address)


def member_main(spec_json: str) -> None:
    """Entry point of a member process: run one PySyncObj member; a driver also runs the
    workload.  Reports JSON lines on stdout; ends when killed (or, for a driver, when done
    and its stdin is closed)."""
    spec: dict[str, Any] = json.loads(spec_json)
    pso = load_pysyncobj()
    batteries = importlib.import_module("pysyncobj.batteries")
    conf = pso.SyncObjConf(journalFile=spec["journal"], fullDumpFile=spec["dump"])
    data: Any = batteries.ReplDict()
    obj: Any = pso.SyncObj(spec["self"], spec["others"], conf=conf, consumers=[data])
    lock = threading.Lock()
    out = sys.stdout

    def watch_leader() -> None:
        last: str | None = None
        while True:
            cur = _addr(obj._getLeader())
            if cur != last:
                _emit({"event": "leader", "leader": cur}, out, lock)
                last = cur
            time.sleep(POLL)

    threading.Thread(target=watch_leader, daemon=True).start()
    if spec["role"] == "driver":
        result = _drive(pso, obj, data, spec, lambda ev: _emit(ev, out, lock))
        _emit({"event": "result", **result}, out, lock)
    for _ in sys.stdin:  # wait for the orchestrator to close stdin (or kill us)
        pass
    os._exit(0)  # PySyncObj's tick thread is not a daemon


def _wait_leader(obj: Any, self_addr: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader = _addr(obj._getLeader())
        if leader is not None and leader != self_addr and obj.isReady():
            return leader
        time.sleep(POLL)
    raise Timeout("the driver saw no leader")


def _drive(
    pso: Any, obj: Any, data: Any, spec: dict[str, Any], emit: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    value = os.urandom(int(spec["val_size"]))
    op_timeout = float(spec["op_timeout"])
    reasons = _fail_reasons(pso)
    leader = _wait_leader(obj, spec["self"])
    data.set("warm", b"", sync=True, timeout=30.0)  # the driver is connected and caught up
    emit({"event": "ready", "leader": _addr(obj._getLeader()) or leader})
    mode = Mode(spec["mode"])
    if mode is Mode.SEQ:
        return _drive_seq(pso, data, int(spec["total"]), value, op_timeout)
    if mode is Mode.CONCURRENT:
        return _drive_concurrent(
            data, int(spec["inflight"]), float(spec["seconds"]), value, op_timeout, reasons
        )
    return _drive_failover(pso, obj, data, spec, value, emit)


def _fail_reasons(pso: Any) -> dict[int, str]:
    """PySyncObj's ``FAIL_REASON`` codes by name (``SUCCESS`` is 0)."""
    fr = pso.FAIL_REASON
    return {int(getattr(fr, n)): n for n in dir(fr) if n.isupper()}


def _fail_text(pso: Any, exc: Any) -> str:
    """The fail reason's name for a failed sync call (``Timeout`` when no answer came)."""
    code = getattr(exc, "errorCode", None)
    if isinstance(code, int):
        return _fail_reasons(pso).get(code, str(code))
    return str(code) if code is not None else type(exc).__name__


def _drive_seq(pso: Any, data: Any, total: int, value: bytes, op_timeout: float) -> dict[str, Any]:
    lats: list[float] = []
    errors: Counter[str] = Counter()
    start = time.perf_counter()
    for i in range(total):
        st = time.perf_counter()
        try:
            data.set(f"/seq/{i:08d}", value, sync=True, timeout=op_timeout)
        except pso.SyncObjException as e:
            errors[_fail_text(pso, e)] += 1
            continue
        lats.append(time.perf_counter() - st)
    return {"latencies": lats, "errors": dict(errors), "seconds": time.perf_counter() - start}


def _drive_concurrent(
    data: Any,
    inflight: int,
    seconds: float,
    value: bytes,
    op_timeout: float,
    reasons: dict[int, str],
) -> dict[str, Any]:
    lock = threading.Lock()
    lats: list[float] = []
    errors: Counter[str] = Counter()
    pending: dict[int, float] = {}
    counter = 0
    start = time.perf_counter()
    end = start + seconds
    last_answer = start

    def issue() -> None:
        nonlocal counter
        with lock:
            i = counter
            counter += 1
            st = time.perf_counter()
            pending[i] = st

        def done(res: Any, err: Any) -> None:
            nonlocal last_answer
            t = time.perf_counter()
            with lock:
                if pending.pop(i, None) is None:
                    return
                last_answer = t
                if err == 0:
                    lats.append(t - st)
                else:
                    errors[reasons.get(err, str(err))] += 1
            if t < end:
                issue()

        data.set(f"/conc/{i:08d}", value, callback=done)

    for _ in range(inflight):
        issue()
    while time.perf_counter() < end:
        time.sleep(0.05)
    drain_deadline = time.perf_counter() + op_timeout
    while time.perf_counter() < drain_deadline:
        with lock:
            if not pending:
                break
        time.sleep(POLL)
    with lock:
        if pending:  # no answer within op_timeout of the end: count as failures
            errors["no answer"] += len(pending)
            pending.clear()
        return {
            "latencies": lats,
            "errors": dict(errors),
            "seconds": last_answer - start,
        }


def _drive_failover(
    pso: Any,
    obj: Any,
    data: Any,
    spec: dict[str, Any],
    value: bytes,
    emit: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    killed: list[float] = []

    def read_stdin() -> None:
        for line in sys.stdin:
            parts = line.split()
            if len(parts) == 2 and parts[0] == "killed":
                killed.append(float(parts[1]))
                return

    threading.Thread(target=read_stdin, daemon=True).start()
    warmup, after = float(spec["warmup"]), int(spec["after"])
    op_timeout, timeout = float(spec["op_timeout"]), float(spec["timeout"])
    acks: list[tuple[float, str]] = []
    errors: Counter[str] = Counter()
    warm_at = now() + warmup
    warned = False
    finished = False
    give_up: float | None = None
    i = 0
    while True:
        t = now()
        if not warned and t >= warm_at:
            emit({"event": "warm", "leader": _addr(obj._getLeader())})
            warned = True
        if killed:
            give_up = give_up or killed[0] + timeout
            if sum(1 for a, _ in acks if a > killed[0]) >= after:
                finished = True
                break
            if t > give_up:
                break
        key = f"/failover/{i:08d}"
        i += 1
        try:
            data.set(key, value, sync=True, timeout=op_timeout)
        except pso.SyncObjException as e:
            errors[_fail_text(pso, e)] += 1
            time.sleep(0.005)  # no hot loop while no member can answer
            continue
        acks.append((now(), key))
    return {
        "finished": finished,
        "acks": [a for a, _ in acks],
        "errors": dict(errors),
        "readable": sum(1 for _, k in acks if data.get(k) == value),
        "leader": _addr(obj._getLeader()),
    }
