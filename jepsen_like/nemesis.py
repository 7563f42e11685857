"""Nemeses: named faults, combinable, scheduled from the run's seed.

Each nemesis has ``start`` (inject one fault, chosen with the seeded RNG: which member,
which shape) and ``stop`` (undo it), both returning a small dict that goes into the history
as a nemesis event, and ``heal`` (undo everything, at the end of the run).  The
:func:`schedule` loop alternates quiet periods and faults, choosing among the requested
nemeses, one fault at a time; every choice comes from ``random.Random(seed)`` so a run's fault
plan is reproducible (the moments shift with the cluster's own timing).

The anchors: Jepsen's etcd analysis (kill, pause, partition shapes including
majorities-ring and bridge, clock, member), etcd's robustness tests (failpoints, blackhole,
delay/drop on peer links, compaction during traffic) and our storage contract (a corrupt
file is refused with CorruptionError, never silently loaded).
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol, TypeVar

import raftkv
from jepsen_like.control import CLUSTER_TOKEN, WIPED, Control
from jepsen_like.workloads.base import NEMESIS, Recorder
from raftkv.errors import MemberExists, MemberNotFound, RaftError, RaftKVError, TransientError
from raftkv.protocol.methods import member_id
from raftkv.server.storage.failpoints import POINTS

Info = dict[str, Any]


class Nemesis(Protocol):
    name: str

    async def start(self, c: Control, rng: random.Random) -> Info: ...

    async def stop(self, c: Control) -> Info: ...

    async def heal(self, c: Control) -> None: ...


TARGETS: Final = ("leader", "random", "majority", "followers")
CLIENT: Final = "client"
"""Pause target mode: the client process holding the lock (else a random client process)."""
CLIENT_SHARE: Final = 0.5
"""With client processes registered and no explicit variant, how often ``pause`` picks
``client`` (a 1-in-5 draw would leave a third of 30-s runs without a single client pause)."""
HOLDER_WAIT: Final = 2.0
"""How long a ``client`` pause waits for some client to hold the lock before it pauses a
random client instead (right after a member fault, every client may be between sessions)."""


async def _targets(c: Control, rng: random.Random, mode: str) -> list[str]:
    """Members to hit: the leader, one at random, a majority, or a majority of followers (the
    leader stays up without a quorum: its pending writes commit only after the others come
    back, while clients retry them)."""
    live = [n for n in c.names if c.alive(n) and n not in c.paused]
    if not live:
        return []
    if mode == "leader":
        lead = await c.leader()
        return [lead] if lead is not None else [rng.choice(live)]
    k = len(c.names) // 2 + 1
    if mode == "majority":
        return rng.sample(live, min(k, len(live)))
    if mode == "followers":
        lead = await c.leader()
        rest = [n for n in live if n != lead]
        return rng.sample(rest, min(k, len(rest)))
    return [rng.choice(live)]


class Kill:
    """SIGKILL the leader, a random member or a majority; ``stop`` restarts them."""

    name = "kill"

    def __init__(self, modes: tuple[str, ...] = TARGETS) -> None:
        self.modes = modes
        self.killed: list[str] = []

    async def start(self, c: Control, rng: random.Random) -> Info:
        mode = rng.choice(self.modes)
        self.killed = await _targets(c, rng, mode)
        for n in self.killed:
            await c.kill(n)
        return {"mode": mode, "nodes": self.killed}

    async def stop(self, c: Control) -> Info:
        for n in self.killed:
            c.restart(n)
        done, self.killed = self.killed, []
        return {"restarted": done}

    async def heal(self, c: Control) -> None:
        await self.stop(c)


class Pause:
    """SIGSTOP the leader, a random member or a majority; ``stop`` sends SIGCONT.

    Mode ``client`` stops a *client process* (:class:`~jepsen_like.control.ClientProcs`, e.g.
    the lock workers): the lock holder if there is one, else a random client, for the
    clients' lease TTL + 1..3 s (``min_duration_s``: the schedule keeps the fault at least
    that long), so that a holder outlives its lease; when nobody holds the lock it waits up
    to :data:`HOLDER_WAIT` for a holder.  Without an explicit variant it is drawn
    (half of the time) only when client processes are registered: other workloads see the
    member modes exactly as before."""

    name = "pause"

    def __init__(self, modes: tuple[str, ...] | None = None) -> None:
        self.explicit = modes is not None
        self.modes: tuple[str, ...] = modes if modes is not None else TARGETS
        self.paused: list[str] = []
        self.paused_clients: list[str] = []

    async def start(self, c: Control, rng: random.Random) -> Info:
        if not self.explicit and c.clients.pids and rng.random() < CLIENT_SHARE:
            mode = CLIENT
        else:
            mode = rng.choice(self.modes)
        if mode == CLIENT:
            return await self._pause_client(c, rng)
        self.paused = await _targets(c, rng, mode)
        for n in self.paused:
            c.pause(n)
        return {"mode": mode, "nodes": self.paused}

    async def _pause_client(self, c: Control, rng: random.Random) -> Info:
        deadline = asyncio.get_running_loop().time() + HOLDER_WAIT
        while c.clients.holder is None and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        cands = sorted(n for n in c.clients.pids if n not in c.clients.paused)
        if not cands:
            return {"mode": CLIENT, "skipped": "no client process"}
        holder = c.clients.holder if c.clients.holder in cands else None
        target = holder if holder is not None else rng.choice(cands)
        if not c.clients.pause(target):
            return {"mode": CLIENT, "skipped": f"{target} is gone"}
        self.paused_clients = [target]
        secs = round(c.clients.lease_ttl + rng.uniform(1.0, 3.0), 2)
        return {"mode": CLIENT, "clients": [target], "holder": holder, "min_duration_s": secs}

    async def stop(self, c: Control) -> Info:
        for n in self.paused:
            c.resume(n)
        done, self.paused = self.paused, []
        if self.paused_clients:
            for n in self.paused_clients:
                c.clients.resume(n)
            clients, self.paused_clients = self.paused_clients, []
            return {"resumed": done, "clients": clients}
        return {"resumed": done}

    async def heal(self, c: Control) -> None:
        await self.stop(c)


SYMMETRIC_PARTITIONS: Final = ("one", "leader", "halves", "ring", "bridge")
"""Shapes expressed as a grudge (see :func:`grudge`)."""
PARTITIONS: Final = (*SYMMETRIC_PARTITIONS, "oneway")


def grudge(
    shape: str, nodes: list[str], leader: str | None, rng: random.Random
) -> dict[str, set[str]]:
    """Who blocks whom for a partition shape (Jepsen's "grudge"): member -> members it cannot
    talk to.  Symmetric: if a blocks b then b blocks a.

    * ``one``: one random member alone; ``leader``: the leader alone;
    * ``halves``: a random minority | majority split;
    * ``ring``: overlapping majorities, each member sees only its ring neighbours (and with
      five members every majority shares someone with every other; below five members
      it is a bridge);
    * ``bridge``: two halves joined only through one bridge member.
    """
    if shape == "ring" and len(nodes) < 5:
        shape = "bridge"  # with 3 members every pair of neighbours is everyone
    ns = list(nodes)
    rng.shuffle(ns)
    g: dict[str, set[str]] = {n: set() for n in nodes}

    def cut(a: list[str], b: list[str]) -> None:
        for x in a:
            for y in b:
                if x != y:
                    g[x].add(y)
                    g[y].add(x)

    if shape == "one" or (shape == "leader" and leader is None):
        cut(ns[:1], ns[1:])
    elif shape == "leader":
        assert leader is not None
        cut([leader], [n for n in nodes if n != leader])
    elif shape == "halves":
        k = len(ns) // 2
        cut(ns[:k], ns[k:])
    elif shape == "ring":
        m = len(ns)
        for i, x in enumerate(ns):
            near = {ns[(i - 1) % m], ns[(i + 1) % m], x}
            g[x] |= {y for y in ns if y not in near}
            for y in ns:
                if y not in near:
                    g[y].add(x)
    elif shape == "bridge":
        mid = len(ns) // 2
        left, bridge, right = ns[:mid], ns[mid], ns[mid + 1 :]
        _ = bridge
        cut(left, right)
    else:
        raise ValueError(f"unknown partition shape {shape!r}")
    return g


class Partition:
    """Network partitions through the ``debug_fault`` hooks: "block" set at both ends of each
    cut link for the symmetric shapes; ``oneway``: the leader (or a random member) can still
    hear everyone but nothing it sends arrives ("block_out" at its end)."""

    name = "partition"

    def __init__(self, shapes: tuple[str, ...] = PARTITIONS) -> None:
        self.shapes = shapes

    async def start(self, c: Control, rng: random.Random) -> Info:
        shape = rng.choice(self.shapes)
        if shape == "ring" and len(c.names) < 5:
            shape = "bridge"
        if shape == "oneway":
            mute = await c.leader() or rng.choice(c.names)
            others = [n for n in c.names if n != mute]
            ok = await c.block_outgoing(mute, others)
            return {"shape": shape, "mute": mute, "unreached": [] if ok else [mute]}
        leader = await c.leader() if shape == "leader" else None
        g = grudge(shape, c.names, leader, rng)
        cut = [n for n, peers in g.items() if peers]
        oks = await asyncio.gather(*(c.block(n, sorted(g[n])) for n in cut))
        return {
            "shape": shape,
            "grudge": {n: sorted(p) for n, p in g.items() if p},
            "unreached": [n for n, ok in zip(cut, oks, strict=True) if not ok],
        }

    async def stop(self, c: Control) -> Info:
        await c.heal()
        return {"healed": True}

    async def heal(self, c: Control) -> None:
        await c.heal()


class Slow:
    """Delay and drop messages on every peer link (etcd robustness's delay/drop)."""

    name = "slow"

    async def start(self, c: Control, rng: random.Random) -> Info:
        delay = round(rng.uniform(0.01, 0.08), 3)
        drop = round(rng.uniform(0.05, 0.3), 2)
        ids = {str(c.member(n).id): n for n in c.names}
        for n in c.names:
            peers = [i for i, m in ids.items() if m != n]
            await c.fault(
                n, {"delay": dict.fromkeys(peers, delay), "drop": dict.fromkeys(peers, drop)}
            )
        return {"delay": delay, "drop": drop}

    async def stop(self, c: Control) -> Info:
        await c.heal()
        return {"healed": True}

    async def heal(self, c: Control) -> None:
        await c.heal()


class Clock:
    """Skew the lease clock of some members (the leader included, half the time) by a small
    jump, forwards or backwards (Jepsen's clock nemesis, bounded so that correct lease logic
    survives it: skew stays well under a third of the workload's lease TTL)."""

    name = "clock"

    def __init__(self, max_skew: float = 0.5) -> None:
        self.max_skew = max_skew

    async def start(self, c: Control, rng: random.Random) -> Info:
        k = rng.randint(1, len(c.names))
        nodes = rng.sample(c.names, k)
        if rng.random() < 0.5:
            lead = await c.leader()
            if lead is not None and lead not in nodes:
                nodes.append(lead)
        skews = {n: round(rng.uniform(-self.max_skew, self.max_skew), 3) for n in nodes}
        for n, s in skews.items():
            if await c.fault(n, {"clock_skew": s}):
                c.skewed.add(n)
        return {"skew": skews}

    async def stop(self, c: Control) -> Info:
        for n in list(c.skewed):
            await c.fault(n, {"clock_skew": 0.0})
        c.skewed.clear()
        return {"healed": True}

    async def heal(self, c: Control) -> None:
        await self.stop(c)


T = TypeVar("T")

MEMBERSHIP_PATIENCE: Final = 30.0
"""Seconds the member nemesis keeps retrying a membership call: other faults (a crashed or
damaged member, an election after the leader moved) can leave the cluster without a leader
for several election timeouts, and giving up would leave it a member short."""


async def _retry(
    call: Callable[[], Awaitable[T]],
    *,
    done: type[RaftKVError] | None = None,
    patience: float = MEMBERSHIP_PATIENCE,
) -> T | None:
    """``call()`` until it answers or ``patience`` runs out (then its last error is raised);
    an error of type ``done`` means an earlier attempt took effect: return None.  Only
    transient and consensus errors (no leader, not the leader, one change at a time) are
    retried; any other error is raised at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while True:
        try:
            return await call()
        except RaftKVError as e:
            if done is not None and isinstance(e, done):
                return None
            if not isinstance(e, TransientError | RaftError) or loop.time() + 0.5 >= deadline:
                raise
        await asyncio.sleep(0.5)


class ReplaceMember:
    """Membership changes during traffic: remove a follower (stop it, wipe it), later add a
    brand-new member in its place through the client's member API."""

    name = "member"

    def __init__(self) -> None:
        self.removed: str | None = None

    async def start(self, c: Control, rng: random.Random) -> Info:
        lead = await c.leader()
        cands = [n for n in c.names if n != lead and c.alive(n) and n not in c.paused]
        if lead is None or not cands or len(c.names) < 3:
            return {"skipped": "no leader or no follower to remove"}
        victim = rng.choice(cands)
        vid = c.member(victim).id
        async with raftkv.Client(c.endpoints(), command_timeout=5.0) as cl:
            try:
                # a retry after a lost answer finds it gone: that is success
                await _retry(lambda: cl.member_remove(vid), done=MemberNotFound)
            except RaftKVError as e:
                return {"remove": victim, "error": f"{type(e).__name__}: {e}"}
        await c.kill(victim)
        c.forget(victim)
        c.wipe(victim)
        self.removed = victim
        return {"removed": victim}

    async def stop(self, c: Control) -> Info:
        if self.removed is None:
            return {"added": None}
        self.removed = None
        return await self.add(c)

    async def add(self, c: Control) -> Info:
        m = c.new_member()
        async with raftkv.Client(c.endpoints(), command_timeout=5.0) as cl:
            try:
                # a retry after a lost answer finds it added: that is success
                await _retry(
                    lambda: cl.member_add(m.name, m.peer_addr, m.client_addr, learner=False),
                    done=MemberExists,
                )
                members = await _retry(cl.member_list)
                status = await _retry(cl.status)
                assert members is not None and status is not None
                peers = {x.name: x.peer_addr for x in members}
                cid = status.cluster_id
            except RaftKVError as e:
                return {"add": m.name, "error": f"{type(e).__name__}: {e}"}
        listed = sorted(peers)
        # the harness knows the membership too; a member missing from the answer (seen: a
        # recently added one) would make the new member refuse its leader
        peers.update({n: c.member(n).peer_addr for n in c.names})
        peers[m.name] = m.peer_addr
        c.join(m.name, peers, cid)
        return {"added": m.name, "listed": listed, "peers": sorted(peers)}

    async def heal(self, c: Control) -> None:
        await self.stop(c)


class CrashPoint:
    """Restart a member with a storage crash point armed (``RAFTKV_FAILPOINTS=point=crash@N``):
    it dies there (exit 77); ``stop`` restarts it without."""

    name = "crash-point"

    def __init__(self) -> None:
        self.victim: str | None = None

    async def start(self, c: Control, rng: random.Random) -> Info:
        live = [n for n in c.names if c.alive(n) and n not in c.paused]
        if not live:
            return {"skipped": "no live member"}
        victim = rng.choice(live)
        point = rng.choice(sorted(POINTS))
        n = rng.randint(1, 40)
        spec = f"{point}=crash@{n}"
        await c.kill(victim)
        c.restart(victim, {"RAFTKV_FAILPOINTS": spec})
        self.victim = victim
        return {"node": victim, "failpoint": spec}

    async def stop(self, c: Control) -> Info:
        if self.victim is None:
            return {}
        victim, self.victim = self.victim, None
        rc = c.exit_code(victim)
        await c.kill(victim)
        c.restart(victim)
        return {"node": victim, "crashed": rc is not None, "exit_code": rc}

    async def heal(self, c: Control) -> None:
        await self.stop(c)


DISK_MODES: Final = (
    "log-truncate",
    "log-bitflip",
    "snap-truncate",
    "snap-bitflip",
    "wal-truncate",
    "rollback",
)
LOSS_MODES: Final = ("wal-truncate", "rollback")
"""Modes that make a member lose writes it acknowledged (a disk that drops them): it must
take itself out of service, and is then replaced as an operator would."""
LOSS_PATIENCE: Final = 10.0
"""Seconds ``stop`` waits for a member that lost writes to be detected (or to recover)."""


def _applied(c: Control, name: str) -> int:
    """A live member's applied index (its metrics; 0 if it does not answer)."""
    return int(c.pc.metrics(name, timeout=0.5).get("raftkv_raft_applied_index", 0.0))


class Disk:
    """Damage a stopped minority member's files, restart it.

    * ``log-*``, ``snap-*``: corrupt log tail rows or the latest snapshot.  The member must
      refuse to start (CorruptionError in its log, non-zero exit) or recover by catching up;
      ``stop`` restores its files from a copy taken before the damage.
    * ``wal-truncate``: SIGKILL it and cut its ``raft.db-wal`` to half (SQLite then opens an
      older, consistent database); ``rollback``: replace its data dir with an older copy of
      itself taken a moment earlier, after it has acknowledged more.  It lost acknowledged
      writes: it must report itself unhealthy (``log lost``) with exactly one log line, or
      refuse to start, or (if the loss turned out empty, or a new leader repaired it) be
      healthy and caught up.  A detected member is then replaced the way an operator does
      it: removed through the member API, its data dir wiped, a member with an empty data
      dir added in its place.

    Any other outcome is recorded as ``unexpected`` (a checker failure)."""

    name = "disk"

    def __init__(self, modes: tuple[str, ...] = DISK_MODES) -> None:
        self.modes = modes
        self.victim: str | None = None
        self.mode = ""
        self.log_offset = 0
        self.acked = 0

    async def start(self, c: Control, rng: random.Random) -> Info:
        lead = await c.leader()
        cands = [n for n in c.names if n != lead and c.alive(n) and n not in c.paused]
        if not cands:
            return {"skipped": "no follower"}
        victim = rng.choice(cands)
        mode = rng.choice(self.modes)
        if mode in LOSS_MODES:
            return await self._start_loss(c, victim, mode)
        await c.kill(victim)
        backup = c.root / f"{victim}.backup"
        shutil.rmtree(backup, ignore_errors=True)
        await asyncio.to_thread(shutil.copytree, c.data_dir(victim), backup)
        touched: Any
        if mode.startswith("log"):
            touched = c.corrupt_log_tail(victim, rng.randint(1, 5), mode.split("-")[1])
        else:
            snap = c.latest_snapshot(victim)
            touched = None
            if snap is not None:
                raw = snap.read_bytes()
                if mode == "snap-truncate":
                    snap.write_bytes(raw[: len(raw) // 2])
                else:
                    b = bytearray(raw)
                    b[rng.randrange(len(b))] ^= 0x10
                    snap.write_bytes(bytes(b))
                touched = snap.name
        self.log_offset = len(c.log_text(victim))
        c.restart(victim)
        self.victim, self.mode = victim, mode
        return {"node": victim, "mode": mode, "touched": touched}

    async def _start_loss(self, c: Control, victim: str, mode: str) -> Info:
        data = c.data_dir(victim)
        touched: Any = None
        if mode == "wal-truncate":
            self.acked = await asyncio.to_thread(_applied, c, victim)
            await c.kill(victim)
            wal = data / "raft.db-wal"
            size = wal.stat().st_size if wal.exists() else 0
            if size:
                with wal.open("r+b") as f:
                    f.truncate(size // 2)
            touched = {"wal_bytes": size, "kept": size // 2}
        else:
            older = c.root / f"{victim}.older"
            shutil.rmtree(older, ignore_errors=True)
            copied = await asyncio.to_thread(_applied, c, victim)
            await c.kill(victim)  # a crash image is a consistent older state
            await asyncio.to_thread(
                shutil.copytree, data, older, ignore=shutil.ignore_patterns("*-shm")
            )
            c.restart(victim)
            # let it acknowledge more than the copy holds (the workload keeps writing)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5.0
            base = 0
            while loop.time() < deadline:
                now = await asyncio.to_thread(_applied, c, victim)
                base = base or now
                if base and now >= base + 20:
                    break
                await asyncio.sleep(0.2)
            self.acked = await asyncio.to_thread(_applied, c, victim)
            await c.kill(victim)
            shutil.rmtree(data, ignore_errors=True)
            await asyncio.to_thread(shutil.copytree, older, data)
            shutil.rmtree(older, ignore_errors=True)
            touched = {"copy_applied": copied, "acked_applied": self.acked}
        # The harness destroyed durable state on purpose: the promises the member logged
        # before (votes) are void for the vote_durability check, as after a wipe.
        with c.pc.procs[victim].log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"logger": "jepsen_like", "msg": WIPED}) + "\n")
        self.log_offset = len(c.log_text(victim))
        c.restart(victim)
        self.victim, self.mode = victim, mode
        return {"node": victim, "mode": mode, "touched": touched}

    async def stop(self, c: Control) -> Info:
        if self.victim is None:
            return {}
        victim, self.victim = self.victim, None
        if self.mode in LOSS_MODES:
            return await self._stop_loss(c, victim)
        rc = c.exit_code(victim)
        text = c.log_text(victim)[self.log_offset :]
        backup = c.root / f"{victim}.backup"
        if rc is None:
            # It started (the damage was to nothing it loads) and has been acknowledging
            # since: putting the older copy back now would roll those writes back.
            shutil.rmtree(backup, ignore_errors=True)
            return {"node": victim, "mode": self.mode, "outcome": "running", "exit_code": rc}
        outcome = "refused" if rc != 0 and "Corruption" in text else "unexpected"
        await c.kill(victim)
        c.wipe(victim)
        await asyncio.to_thread(shutil.copytree, backup, c.data_dir(victim))
        shutil.rmtree(backup, ignore_errors=True)
        c.restart(victim)
        return {"node": victim, "mode": self.mode, "outcome": outcome, "exit_code": rc}

    async def _judge(self, c: Control, victim: str) -> tuple[str, Info]:
        """detected / refused / recovered, or unexpected (with what was seen)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOSS_PATIENCE
        seen: Info = {}
        while True:
            rc = c.exit_code(victim)
            text = c.log_text(victim)[self.log_offset :]
            lines = text.count("acknowledged state lost")
            if rc is not None:
                ok = rc != 0 and "Corruption" in text
                return ("refused" if ok else "unexpected"), {"exit_code": rc}
            h = await asyncio.to_thread(c.pc.health, victim) or {}
            reason = str(h.get("reason", ""))
            seen = {"health": h, "lost_lines": lines}
            if reason.startswith("log lost") and lines >= 1:
                # one line, not one per heartbeat
                return ("detected" if lines == 1 else "unexpected"), seen
            if h.get("health") is True:
                applied = await asyncio.to_thread(_applied, c, victim)
                seen["applied"] = applied
                if applied >= self.acked:
                    return "recovered", seen
            if loop.time() >= deadline:
                return "unexpected", seen
            await asyncio.sleep(0.2)

    async def _stop_loss(self, c: Control, victim: str) -> Info:
        outcome, seen = await self._judge(c, victim)
        info: Info = {"node": victim, "mode": self.mode, "outcome": outcome, **seen}
        if outcome == "recovered":
            return info
        # What an operator does: remove the member, wipe it, add an empty one in its place.
        vid = c.member(victim).id
        others = [c.member(n).client_addr for n in c.names if n != victim]
        async with raftkv.Client(others, command_timeout=5.0) as cl:
            try:
                await _retry(lambda: cl.member_remove(vid), done=MemberNotFound)
            except RaftKVError as e:
                info["error"] = f"remove {victim}: {type(e).__name__}: {e}"
                await c.kill(victim)
                c.restart(victim)
                return info
        await c.kill(victim)
        c.forget(victim)
        c.wipe(victim)
        info["replaced_by"] = await ReplaceMember().add(c)
        return info

    async def heal(self, c: Control) -> None:
        await self.stop(c)


class Snapshot:
    """With tiny ``--snapshot-count`` (set by the runner when this nemesis is on), kill a
    follower for a while so that it comes back behind a compacted log and needs a snapshot
    install; snapshots are taken constantly in the meantime."""

    name = "snapshot"
    snapshot_count: Final = 25

    def __init__(self) -> None:
        self.down: str | None = None

    async def start(self, c: Control, rng: random.Random) -> Info:
        lead = await c.leader()
        cands = [n for n in c.names if n != lead and c.alive(n) and n not in c.paused]
        if not cands:
            return {"skipped": "no follower"}
        self.down = rng.choice(cands)
        await c.kill(self.down)
        return {"node": self.down}

    async def stop(self, c: Control) -> Info:
        if self.down is None:
            return {}
        n, self.down = self.down, None
        c.restart(n)
        return {"restarted": n}

    async def heal(self, c: Control) -> None:
        await self.stop(c)


class Compact:
    """Compaction requests during traffic: compact to a recent revision."""

    name = "compact"

    async def start(self, c: Control, rng: random.Random) -> Info:
        async with raftkv.Client(c.endpoints(), command_timeout=3.0) as cl:
            try:
                rev = (await cl.get(b"\0")).header.revision
                target = max(1, rev - rng.randint(0, 50))
                await cl.compact(target)
            except RaftKVError as e:
                return {"error": f"{type(e).__name__}: {e}"}
        return {"revision": target}

    async def stop(self, c: Control) -> Info:
        return {}

    async def heal(self, c: Control) -> None:
        return None


def _garbage() -> Nemesis:
    # Imported on use: it draws its frames with hypothesis (a dev extra).
    from jepsen_like.garbage import Garbage

    return Garbage()


NEMESES: Final[dict[str, Callable[[], Nemesis]]] = {
    "kill": Kill,
    "pause": Pause,
    "partition": Partition,
    "slow": Slow,
    "clock": Clock,
    "member": ReplaceMember,
    "crash-point": CrashPoint,
    "disk": Disk,
    "snapshot": Snapshot,
    "compact": Compact,
    "garbage": _garbage,
}
"""Nemeses by name (``--nemesis kill,partition``)."""


VARIANTS: Final[dict[str, tuple[str, ...]]] = {
    "kill": TARGETS,
    "pause": (*TARGETS, CLIENT),
    "partition": PARTITIONS,
    "disk": DISK_MODES,
}
"""Nemeses that take ``name:variant[+variant]`` (e.g. ``kill:leader``, ``partition:ring``)."""


def parse(spec: str) -> list[Nemesis]:
    """``"kill,partition:leader+halves"`` -> nemesis objects; ``"none"`` or empty -> []."""
    out: list[Nemesis] = []
    for item in dict.fromkeys(x.strip() for x in spec.split(",")):
        if not item or item == "none":
            continue
        name, _, var = item.partition(":")
        if name not in NEMESES:
            raise ValueError(f"unknown nemesis {name!r} (known: {', '.join(NEMESES)})")
        if not var:
            out.append(NEMESES[name]())
            continue
        modes = tuple(var.split("+"))
        allowed = VARIANTS.get(name, ())
        bad = [m for m in modes if m not in allowed]
        if bad:
            raise ValueError(f"nemesis {name!r}: unknown variant {bad} (known: {list(allowed)})")
        if name == "disk":
            out.append(Disk(modes))
            continue
        out.append(
            Kill(modes) if name == "kill" else Pause(modes) if name == "pause" else Partition(modes)
        )
    return out


async def schedule(
    nemeses: list[Nemesis],
    c: Control,
    rec: Recorder,
    rng: random.Random,
    stop: asyncio.Event,
    *,
    quiet: tuple[float, float] = (1.0, 3.0),
    fault: tuple[float, float] = (2.0, 5.0),
) -> None:
    """Alternate quiet periods and one fault at a time until ``stop`` is set."""

    async def pause(secs: float) -> bool:
        try:
            await asyncio.wait_for(stop.wait(), secs)
        except TimeoutError:
            return False
        return True

    while nemeses and not stop.is_set():
        if await pause(rng.uniform(*quiet)):
            return
        n = rng.choice(nemeses)
        rec.add(NEMESIS, "invoke", f"start-{n.name}")
        info = await _safely(n.start(c, rng))
        rec.add(NEMESIS, "info", f"start-{n.name}", value=info)
        # a fault may need a minimum length (a client pause must outlast the clients' TTL)
        await pause(max(rng.uniform(*fault), float(info.get("min_duration_s", 0.0))))
        rec.add(NEMESIS, "invoke", f"stop-{n.name}")
        info = await _safely(n.stop(c))
        rec.add(NEMESIS, "info", f"stop-{n.name}", value=info)


async def _safely(coro: Any) -> Info:
    """A nemesis step never crashes the run: its error is recorded instead."""
    try:
        out: Info = await coro
    except (RaftKVError, OSError, ValueError) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    return out


async def heal_all(nemeses: list[Nemesis], c: Control, rec: Recorder) -> None:
    """Undo every fault: restart, resume (members and client processes), heal links and
    clocks."""
    rec.add(NEMESIS, "invoke", "heal")
    for n in nemeses:
        await _safely(n.heal(c))
    c.clients.resume_all()
    for name in c.names:
        if name in c.paused:
            c.resume(name)
        if not c.alive(name):
            c.restart(name)
    await c.heal()
    rec.add(NEMESIS, "info", "heal", value={"members": c.names})


def member_ids(c: Control) -> dict[int, str]:
    return {member_id(n, CLUSTER_TOKEN): n for n in c.names}
