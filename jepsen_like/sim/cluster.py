"""A deterministic cluster: N Raft cores, a simulated network, an app per node, a fault schedule.

One *step* is one tick of simulated time: the faults scheduled for the step fire, messages
due are delivered, every live node whose clock runs ticks, and every node's ``Ready`` is
carried out by the contract (persist, then send, then apply, then advance).  The
:class:`~jepsen_like.sim.invariants.Checker` sees every persisted append, every outgoing
message, every commit and every applied entry, and after each step the set of leaders.

A crash drops the ``RawNode`` and the app state and keeps only the node's ``MemoryStorage``
(what was fsynced).  A restart builds a new ``RawNode`` on that storage with
``applied = snapshot index`` and restores the app from the snapshot; the core then hands the
committed tail back in ``committed_entries`` and the app replays it.

Every random choice comes from generators derived from the run's one seed, so
:func:`run` is a pure function of ``(seed, steps, nodes, mutation, schedule)``.
"""

from __future__ import annotations

import hashlib
import random
import struct
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from jepsen_like.sim import network as net
from jepsen_like.sim.faults import Fault, FaultKind, Schedule, Shape, Target, make_schedule
from jepsen_like.sim.invariants import Checker, LogView, Violation
from raftkv.api import Command, PutRequest, PutResponse
from raftkv.errors import RaftError
from raftkv.protocol import codec
from raftkv.raft.config import Config
from raftkv.raft.rawnode import RawNode
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    Ready,
    Snapshot,
    StateRole,
)
from raftkv.server.apply import Applier, EntryKind
from raftkv.server.apply import kv_entry as envelope
from raftkv.state.fsm import ApplyResult, KVStateMachine

ELECTION_TICK = 10
BASE_NET = net.NetConfig(drop=0.01, duplicate=0.01, min_delay=1, max_delay=3)
LOCKSTEP_NET = net.NetConfig(drop=0.0, duplicate=0.0, min_delay=1, max_delay=1)
HEALED_NET = net.NetConfig(drop=0.0, duplicate=0.0, min_delay=1, max_delay=2)
_APP_STATE = struct.Struct(">Q16s")


def _chain(prev: bytes, e: Entry) -> bytes:
    h = hashlib.blake2b(prev, digest_size=16)
    h.update(struct.pack(">QQB", e.index, e.term, int(e.type)))
    h.update(e.data)
    return h.digest()


def initial_storage(voters: tuple[int, ...], bootstrap_snapshot: bool) -> MemoryStorage:
    """The storage of an initial member.

    With ``bootstrap_snapshot`` (the bootstrap contract of docs/raft.md) it is
    ``MemoryStorage.bootstrap``: every initial member starts from the same snapshot at
    (index 1, term 1) holding the configuration and the app's initial state.  Without it, it
    is the bare ``MemoryStorage(ConfState(voters))``, which keeps the configuration only
    locally: a node added later and caught up by appends never learns the initial voters
    (``--bootstrap conf`` reproduces it; tests/raft/test_sim_found_new_node_config.py).
    """
    conf = ConfState(voters=voters)
    if bootstrap_snapshot:
        return MemoryStorage.bootstrap(conf, App(1, bytes(16), conf).encode())
    return MemoryStorage(conf)


POISON_PREFIX = b"poison/"
"""Keys whose put raises inside the state machine of the simulated members (the ``poison``
scenario): a stand-in for any bug an entry could reach while it is applied."""


class PoisonableFSM(KVStateMachine):
    """The real state machine, with an injected failure: a put of a ``poison/`` key raises
    a non-raftkv exception halfway through applying it."""

    def _apply_put_request(self, req: PutRequest) -> PutResponse:
        if req.key.startswith(POISON_PREFIX):
            raise ValueError(f"injected apply failure on {req.key!r}")
        return super()._apply_put_request(req)


ConfChanger = Callable[[ConfChange], ConfState]


def _no_conf_change(cc: ConfChange) -> ConfState:
    raise AssertionError(f"no core to apply {cc} to")


class App:
    """The state machine of a node: the real KV state machine behind the node's own apply
    step (:class:`raftkv.server.apply.Applier`: the ``K``/``M`` envelope, conf changes into
    the core), and a hash chain over every applied entry and its result."""

    __slots__ = ("applied", "applier", "chain", "conf_state", "fsm", "markers")

    def __init__(
        self,
        applied: int,
        chain: bytes,
        conf_state: ConfState,
        apply_conf_change: ConfChanger = _no_conf_change,
    ) -> None:
        self.applied = applied
        self.chain = chain
        self.conf_state = conf_state
        self.markers: set[bytes] = set()
        self.fsm = PoisonableFSM()
        self.fsm.applied_index = applied
        self.applier = Applier(self.fsm, apply_conf_change, applied)

    @classmethod
    def from_snapshot(cls, snap: Snapshot, apply_conf_change: ConfChanger = _no_conf_change) -> App:
        if snap.meta.index == 0 or not snap.data:
            return cls(0, bytes(16), snap.meta.conf_state, apply_conf_change)
        applied, chain = _APP_STATE.unpack(snap.data[: _APP_STATE.size])
        app = cls(applied, chain, snap.meta.conf_state, apply_conf_change)
        if len(snap.data) > _APP_STATE.size:
            app.fsm.restore(snap.data[_APP_STATE.size :])
        return app

    def encode(self) -> bytes:
        return _APP_STATE.pack(self.applied, self.chain) + self.fsm.snapshot()


def kv_entry(req: PutRequest) -> bytes:
    """A proposal in the node's envelope: ``K`` + an encoded command."""
    return envelope(codec.encode_command(Command(req)))


def _result_digest(r: ApplyResult) -> bytes:
    err = r.error
    return b"%d|%s|%s" % (r.revision, (err.code if err else "").encode(), str(err or "").encode())


@dataclass(slots=True)
class SimNode:
    id: int
    storage: MemoryStorage
    rn: RawNode | None = None
    app: App | None = None
    clock: int = 1  # tick once every ``clock`` steps; 0: frozen
    commit: int = 0  # the highest commit index the checker has seen persisted
    synced_commit: int = 0  # the commit index of the last hard state written with an fsync
    role: StateRole = StateRole.FOLLOWER
    reports: list[tuple[int, bool]] = field(default_factory=list)  # (peer, snapshot ok?)
    unreachable: set[int] = field(default_factory=set)  # peers a send to was refused


@dataclass(frozen=True, slots=True)
class RunResult:
    seed: int
    nodes: int
    steps: int
    violation: Violation | None
    events: tuple[str, ...]
    digest: str
    stats: dict[str, int]

    def trace(self, last: int = 30) -> list[str]:
        return list(self.events[-last:])


_ON_READY = "its next ready"
_ON_ELECT = "on election"
_ON_COMMIT = "on commit"


@dataclass(frozen=True, slots=True)
class _Trigger:
    """An armed crash: the next matching Ready (until step ``until``) crashes its node."""

    kind: str
    until: int
    tag: int = 0
    node: int = 0


class CoreCrashed(Exception):
    """The core raised something other than a typed RaftError: a bug, reported as such."""


class Cluster:
    """The simulated cluster.  Use :func:`run` unless you drive steps by hand."""

    def __init__(
        self,
        seed: int,
        n: int = 3,
        mutations: frozenset[str] = frozenset(),
        election_tick: int = ELECTION_TICK,
        net_config: net.NetConfig = BASE_NET,
        max_extra_nodes: int = 2,
        bootstrap_snapshot: bool = True,
        max_size_per_msg: int | None = None,
        max_inflight: int | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        # Flow control drawn per run: small appends let a follower ack an old-term entry
        # without the new leader's first entry (the Figure 8 window).
        size = self.rng.choice((1, 1, 100, 1 << 20))
        inflight = self.rng.choice((1, 4, 256))
        self.max_size_per_msg = size if max_size_per_msg is None else max_size_per_msg
        self.max_inflight = inflight if max_inflight is None else max_inflight
        # Most runs use both PreVote and CheckQuorum (the production setting); some run
        # without either, to cover the plain Raft election path.
        self.pre_vote = self.check_quorum = self.rng.random() < 0.75
        self.net = net.Network(random.Random(self.rng.getrandbits(64)), net_config)
        self.base_net = net_config
        self.mutations = mutations
        self.election_tick = election_tick
        self.checker = Checker()
        self.now = 0
        self.events: list[str] = []
        self.nodes: dict[int, SimNode] = {}
        self.tags: dict[int, int] = {}
        self.voted_last_step: list[int] = []
        self._voted_now: list[int] = []
        self.removed: set[int] = set()
        self.triggers: list[_Trigger] = []
        self.max_nodes = n + max_extra_nodes
        self._next_id = n + 1
        self._prop = 0
        self._reads = 0
        self.poisoned: set[int] = set()
        """Indexes of poisoned entries whose apply failed (and still yielded a result)."""
        voters = tuple(range(1, n + 1))
        for i in voters:
            self._boot(i, initial_storage(voters, bootstrap_snapshot))
        self.log(
            f"cluster seed={seed} voters={voters} pre_vote/check_quorum={self.pre_vote} "
            f"max_size_per_msg={self.max_size_per_msg} max_inflight={self.max_inflight} "
            f"mutations={sorted(mutations)}"
        )

    # --- bookkeeping ---------------------------------------------------------------------

    def log(self, text: str) -> None:
        self.events.append(f"[{self.now:4d}] {text}")

    def _boot(self, nid: int, storage: MemoryStorage) -> SimNode:
        node = self.nodes.get(nid)
        if node is None:
            node = self.nodes[nid] = SimNode(nid, storage)
        snap = storage.snapshot()
        node.app = App.from_snapshot(snap, self._conf_changer(node))
        self.checker.on_restore(nid, node.app.applied, node.app.chain)
        cfg = Config(
            id=nid,
            storage=storage,
            election_tick=self.election_tick,
            heartbeat_tick=1,
            applied=snap.meta.index,
            max_size_per_msg=self.max_size_per_msg,
            max_inflight_msgs=self.max_inflight,
            check_quorum=self.check_quorum,
            pre_vote=self.pre_vote,
            rng=random.Random(self.rng.getrandbits(64)),
            mutations=self.mutations,
        )
        node.rn = RawNode(cfg)
        node.commit = max(node.commit, storage.hard_state.commit)
        node.synced_commit = storage.hard_state.commit
        node.role = StateRole.FOLLOWER
        node.clock = 1
        return node

    @staticmethod
    def _conf_changer(node: SimNode) -> ConfChanger:
        """The node's apply step applies conf changes to its current core."""

        def apply(cc: ConfChange) -> ConfState:
            assert node.rn is not None
            return node.rn.apply_conf_change(cc)

        return apply

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.rn is not None]

    def leader(self) -> SimNode | None:
        """The live node leading the highest term, if any."""
        best: SimNode | None = None
        best_term = -1
        for n in self.nodes.values():
            rn = n.rn
            if rn is not None and rn.is_leader and rn.term > best_term:
                best, best_term = n, rn.term
        return best

    def _leaders(self) -> list[tuple[int, int, LogView]]:
        out: list[tuple[int, int, LogView]] = []
        for n in self.nodes.values():
            rn = n.rn
            if rn is not None and rn.is_leader:
                out.append((n.id, rn.term, rn.log_reader()))
        return out

    # --- the step ------------------------------------------------------------------------

    def step(self, faults: tuple[Fault, ...] = ()) -> None:
        """Advance one tick: faults, deliveries, ticks, Ready handling, invariant checks."""
        self.now += 1
        self.checker.step = self.now
        self.voted_last_step = self._voted_now
        self._voted_now = []
        for f in faults:
            self.log(f"fault: {f}")
            self.apply_fault(f)
        nodes = self.nodes
        for m in self.net.due(self.now):
            node = nodes.get(m.to)
            if node is None or node.rn is None:
                continue
            self._call(node, node.rn.step, m)
        now = self.now
        for node in nodes.values():
            rn = node.rn
            if rn is None:
                continue
            c = node.clock
            if c == 1 or (c > 1 and now % c == 0):
                self._call(node, rn.tick)
        for node in nodes.values():
            if node.rn is not None:
                self.handle_ready(node)
        leaders = self._leaders()
        self.checker.observe_leaders(leaders)
        self.checker.check_fresh_commits(leaders)

    def _call(self, node: SimNode, fn: Callable[..., object], *args: object) -> bool:
        """Call into the core; a typed RaftError is logged (False), anything else is a bug."""
        try:
            fn(*args)
            return True
        except RaftError as e:
            self.log(f"n{node.id}: {type(e).__name__}: {e}")
            return False
        except Exception as e:
            tb = traceback.format_exc(limit=-3).strip().replace("\n", " | ")
            raise CoreCrashed(f"node {node.id}: {type(e).__name__}: {e} ({tb})") from e

    def handle_ready(self, node: SimNode) -> None:
        rn = node.rn
        app = node.app
        assert rn is not None and app is not None
        storage = node.storage
        checker = self.checker
        while rn.has_ready():
            rd: Ready = rn.ready()
            # 0. what the core lets leave before the Ready is durable (a leader's appends
            # and heartbeats): the checker holds them to the hard state already on disk.
            # They are handed to the network below, with the rest: a crash right after
            # persisting may still lose them in the process's send buffers, as in the node.
            early = rd.early_messages
            if early:
                phs, last = storage.hard_state, storage.last_index()
                for m in early:
                    checker.on_message_out(node.id, m, phs, last)
            # 1. persist
            storage.save(rd.hard_state, rd.entries, rd.snapshot)
            if rd.entries:
                checker.on_persist_entries(node.id, rd.entries, storage)
            hs = rd.hard_state
            advanced = False
            if hs is not None and hs.commit > node.commit:
                checker.on_commit(node.id, node.commit, hs.commit, hs.term, storage)
                node.commit = hs.commit
                advanced = True
            if rd.must_sync or rd.snapshot is not None:
                node.synced_commit = storage.hard_state.commit
            if self.triggers and self._trigger(node, rd, advanced):
                return  # crashed after persisting, before anything left
            # 2. send
            if early:
                self._send(node, early, checked=True)
            if rd.messages:
                self._send(node, rd.messages)
            # 3. apply
            if rd.snapshot is not None and not rd.snapshot.is_empty():
                app = node.app = App.from_snapshot(rd.snapshot, self._conf_changer(node))
                checker.on_restore(node.id, app.applied, app.chain)
                self.log(f"n{node.id} restored snapshot at {rd.snapshot.meta.index}")
            for e in rd.committed_entries:
                self._apply(node, app, e)
            for rs in rd.read_states:
                checker.on_read_state(node.id, rs)
            if rd.soft_state is not None and rd.soft_state.role != node.role:
                node.role = rd.soft_state.role
                self.log(f"n{node.id} {node.role.name} term {rn.term}")
            # 4. advance
            rn.advance(rd)
            if node.reports:
                reports, node.reports = node.reports, []
                for peer, ok in reports:
                    self._call(node, rn.report_snapshot, peer, ok)
            if node.unreachable:
                for peer in sorted(node.unreachable):
                    self._call(node, rn.report_unreachable, peer)
                node.unreachable.clear()

    def _send(self, node: SimNode, msgs: tuple[Message, ...], checked: bool = False) -> None:
        """Hand ``msgs`` to the network; the checker sees each against what is durable
        (unless it has already: ``checked``)."""
        storage = node.storage
        phs = storage.hard_state
        last = storage.last_index()
        for m in msgs:
            if not checked:
                self.checker.on_message_out(node.id, m, phs, last)
            if m.type == MessageType.VOTE_RESP and not m.reject:
                self._voted_now.append(node.id)
            ok = self.net.send(m, self.now)
            if m.type == MessageType.SNAP:
                node.reports.append((m.to, ok))
            elif not ok and not self.net.can_reach(m.frm, m.to):
                node.unreachable.add(m.to)  # like a refused connection

    def _crash(self, node: SimNode) -> None:
        """Lose the process and whatever was written without an fsync: a hard state written
        by a Ready with ``must_sync=False`` (only its commit index can differ) is lost."""
        node.rn = None
        node.app = None
        st = node.storage
        hs = st.hard_state
        commit = max(node.synced_commit, st.snapshot().meta.index)
        if hs.commit > commit:
            st.set_hard_state(HardState(hs.term, hs.vote, commit))

    def _trigger(self, node: SimNode, rd: Ready, advanced: bool) -> bool:
        """Fire the first armed crash trigger this Ready matches; True if the node crashed."""
        leading = node.rn is not None and node.rn.is_leader
        elected = leading and rd.soft_state is not None and rd.soft_state.role == StateRole.LEADER
        for i, t in enumerate(self.triggers):
            if t.until < self.now:
                continue
            if (
                (t.kind == _ON_READY and t.node == node.id)
                or (t.kind == _ON_ELECT and elected)
                or (t.kind == _ON_COMMIT and leading and advanced)
            ):
                del self.triggers[i]
                if t.tag:
                    self.tags[t.tag] = node.id
                self._crash(node)
                self.log(f"crash n{node.id} between persist and send ({t.kind})")
                return True
        return False

    def _apply(self, node: SimNode, app: App, e: Entry) -> None:
        if e.index != app.applied + 1:
            self.checker.on_apply_out_of_order(node.id, e.index, app.applied)
            if e.index <= app.applied:
                return
        # The node's own apply step: whatever the entry does, it yields a result (an
        # injected failure included), and that result is part of what every member must
        # agree on.
        a = app.applier.apply(e)
        assert a is not None
        app.chain = _chain(app.chain, e)
        app.applied = e.index
        if a.kind == EntryKind.KV:
            app.chain = hashlib.blake2b(
                app.chain + _result_digest(a.result), digest_size=16
            ).digest()
            if a.result.error is not None and e.data[1:].find(POISON_PREFIX) >= 0:
                self.poisoned.add(e.index)
        self.checker.on_apply(node.id, e.index, e.term, app.chain)
        if a.kind == EntryKind.CONF_CHANGE:
            cc = a.conf_change
            assert cc is not None and a.conf_state is not None
            app.conf_state = a.conf_state
            if node.role == StateRole.LEADER or node.id == cc.node_id:
                self.log(f"n{node.id} applied {cc.type.name} {cc.node_id} at {e.index}")
        elif e.data.startswith(b"live-"):
            app.markers.add(e.data)

    # --- faults --------------------------------------------------------------------------

    def _pick(self, target: Target, tag: int = 0) -> SimNode | None:
        rng = self.rng
        if target == Target.TAGGED:
            nid = self.tags.get(tag)
            return None if nid is None else self.nodes.get(nid)
        if target == Target.CRASHED:
            dead = [n for n in self.nodes.values() if n.rn is None]
            return rng.choice(dead) if dead else None
        live = self.live()
        if not live:
            return None
        if target == Target.LEADER:
            return self.leader()
        if target == Target.FOLLOWER:
            lead = self.leader()
            others = [n for n in live if n is not lead and n.id not in self.removed]
            return rng.choice(others) if others else None
        if target == Target.JUST_VOTED:
            voted = [self.nodes[i] for i in self.voted_last_step if self.nodes[i].rn is not None]
            return rng.choice(voted) if voted else rng.choice(live)
        if target == Target.LAGGING:
            return min(live, key=lambda n: (n.storage.last_index(), n.id))
        return rng.choice(live)

    def apply_fault(self, f: Fault) -> None:
        node = self._pick(f.target, f.tag)
        if node is not None and f.tag and f.target != Target.TAGGED:
            self.tags[f.tag] = node.id
        k = f.kind
        ids = sorted(self.nodes)
        if k == FaultKind.HEAL:
            self.net.heal()
            self.log("heal")
        elif k == FaultKind.CALM:
            self.net.config = self.base_net
            self.log("network calm")
        elif k == FaultKind.CLOCK_RESET:
            for n in self.nodes.values():
                n.clock = 1
            self.log("clocks reset")
        elif k in (FaultKind.CRASH_NEXT_LEADER, FaultKind.CRASH_ON_COMMIT):
            kind = _ON_ELECT if k == FaultKind.CRASH_NEXT_LEADER else _ON_COMMIT
            self.triggers.append(_Trigger(kind, self.now + f.arg, f.tag))
            self.log(f"armed: crash the next leader {kind} within {f.arg} steps")
        elif k == FaultKind.LOSSY and f.arg == 0:
            self.net.config = LOCKSTEP_NET
            self.log("network lockstep")
        elif k == FaultKind.LOSSY:
            self.net.config = net.NetConfig(f.arg / 1000, 0.05, 1, 6)
            self.log(f"network lossy drop={f.arg / 1000:.2f}")
        elif node is None:
            return
        elif k == FaultKind.PARTITION:
            self._partition(f.shape, node, ids)
        elif k == FaultKind.CRASH:
            if node.rn is None:
                return
            if f.arg:  # crash after persisting its next Ready, before sending it
                self.triggers.append(_Trigger(_ON_READY, self.now + f.arg, 0, node.id))
                self.log(f"armed: crash n{node.id} in its next ready")
            else:
                self._crash(node)
                self.log(f"crash n{node.id}")
        elif k == FaultKind.RESTART:
            if node.rn is None:
                self._boot(node.id, node.storage)
                self.log(f"restart n{node.id}")
        elif node.rn is None:
            return
        elif k == FaultKind.CLOCK:
            node.clock = f.arg
            self.log(f"clock n{node.id} every {f.arg or 'never'}")
        elif k == FaultKind.PROPOSE:
            for _ in range(f.arg or 1):
                self._prop += 1
                self._call(node, node.rn.propose, b"p%d" % self._prop)
            self.log(f"propose x{f.arg or 1} at n{node.id}")
        elif k == FaultKind.POISON:
            self._prop += 1
            self._call(
                node, node.rn.propose, kv_entry(PutRequest(POISON_PREFIX + b"%d" % self._prop))
            )
            self._call(node, node.rn.propose, kv_entry(PutRequest(b"k%d" % self._prop, b"v")))
            self.log(f"propose a poisoned entry at n{node.id}")
        elif k == FaultKind.READ_INDEX:
            self._reads += 1
            ctx = b"r%d" % self._reads
            self.checker.on_read_index(ctx)
            self._call(node, node.rn.read_index, ctx)
            self.log(f"read_index {ctx.decode()} at n{node.id} (floor {self.checker.max_commit})")
        elif k == FaultKind.SNAPSHOT:
            self._snapshot(node, f.arg)
        elif k == FaultKind.TRANSFER:
            lead = self.leader()
            if lead is not None and lead is not node and lead.rn is not None:
                self._call(lead, lead.rn.transfer_leadership, node.id)
                self.log(f"transfer n{lead.id} -> n{node.id}")
        else:
            self._membership(k, node)

    def _partition(self, shape: Shape, node: SimNode, ids: list[int]) -> None:
        rng = self.rng
        if shape == Shape.ISOLATE:
            blocked = net.isolate(node.id, ids)
        elif shape == Shape.MINORITY:
            blocked = net.minority_majority(ids, rng)
        elif shape == Shape.RING:
            order = list(ids)
            rng.shuffle(order)
            blocked = net.ring(order)
        elif shape == Shape.BRIDGE:
            rest = [i for i in ids if i != node.id]
            rng.shuffle(rest)
            blocked = net.bridge([node.id, *rest])
        elif shape == Shape.ONE_WAY_IN:
            blocked = net.one_way(ids, [node.id])
        else:
            blocked = net.one_way([node.id], ids)
        self.net.set_partition(blocked)
        self.log(f"partition {shape.name.lower()} around n{node.id}: {len(blocked)} links cut")

    def _snapshot(self, node: SimNode, keep: int) -> None:
        app, st = node.app, node.storage
        assert app is not None
        if app.applied <= st.snapshot().meta.index:
            return
        st.create_snapshot(app.applied, app.conf_state, app.encode())
        compact = app.applied - keep
        if compact > st.first_index() - 1:
            st.compact(compact)
        self.log(f"n{node.id} snapshot at {app.applied}, compact to {st.first_index() - 1}")

    def _membership(self, k: FaultKind, target: SimNode) -> None:
        lead = self.leader()
        if lead is None or lead.rn is None or lead.app is None:
            return
        conf = lead.app.conf_state
        members = set(conf.voters) | set(conf.learners)
        cc: ConfChange | None = None
        if k in (FaultKind.ADD_LEARNER, FaultKind.ADD_VOTER):
            if len(conf.voters) >= 7:
                return
            spare = [i for i in sorted(self.nodes) if i not in members and i not in self.removed]
            if spare:
                nid = spare[0]
            elif len(self.nodes) < self.max_nodes:
                nid = self._next_id
                self._next_id += 1
                self._boot(nid, MemoryStorage(ConfState()))
                self.log(f"new node n{nid}")
            else:
                return
            t = (
                ConfChangeType.ADD_LEARNER
                if k == FaultKind.ADD_LEARNER
                else ConfChangeType.ADD_VOTER
            )
            cc = ConfChange(t, nid)
        elif k == FaultKind.PROMOTE:
            if conf.learners:
                cc = ConfChange(ConfChangeType.PROMOTE_LEARNER, self.rng.choice(conf.learners))
        elif k == FaultKind.REMOVE:
            cands = [i for i in conf.voters if i != lead.id]
            if len(conf.voters) > 3 and cands:
                cc = ConfChange(ConfChangeType.REMOVE_NODE, self.rng.choice(cands))
            elif conf.learners:
                cc = ConfChange(ConfChangeType.REMOVE_NODE, self.rng.choice(conf.learners))
        if cc is None:
            return
        self.log(f"propose {cc.type.name} n{cc.node_id} at n{lead.id}")
        try:
            lead.rn.propose_conf_change(cc)
        except RaftError as e:
            self.log(f"n{lead.id}: {type(e).__name__}")
            return
        if cc.type == ConfChangeType.REMOVE_NODE:
            self.removed.add(cc.node_id)

    # --- the end of a run ----------------------------------------------------------------

    def heal_all(self) -> None:
        """Stop every fault: heal the network, restart crashed nodes, reset clocks."""
        self.net.heal()
        self.net.config = HEALED_NET
        self.triggers = []
        for n in list(self.nodes.values()):
            if n.rn is None:
                self._boot(n.id, n.storage)
            n.clock = 1
        self.log("heal all: network healed, crashed nodes restarted, clocks reset")

    def check_liveness(self, budget: int) -> bool:
        """After :meth:`heal_all`: a leader must emerge and a fresh proposal must be applied by
        every voter within ``budget`` ticks; otherwise record a liveness violation."""
        marker = b"live-%d" % self.seed
        proposed: set[tuple[int, int]] = set()
        for _ in range(budget):
            self.step()
            if not self.checker.ok:
                return False
            lead = self.leader()
            if lead is None or lead.rn is None or lead.app is None:
                continue
            key = (lead.id, lead.rn.term)
            if key not in proposed and self._call(lead, lead.rn.propose, marker):
                proposed.add(key)
            voters = lead.app.conf_state.voters
            if all(
                (n := self.nodes.get(v)) is not None
                and n.app is not None
                and marker in n.app.markers
                for v in voters
            ):
                self.log(f"liveness ok: leader n{lead.id}, marker applied on voters {voters}")
                return True
        lead = self.leader()
        self.checker.fail(
            "liveness",
            f"no proposal committed on all voters within {budget} ticks after healing "
            f"(leader: {lead.id if lead else 'none'})",
        )
        return False

    def digest(self) -> str:
        h = hashlib.blake2b(digest_size=8)
        for nid in sorted(self.nodes):
            n = self.nodes[nid]
            hs = n.storage.hard_state
            h.update(struct.pack(">QQQQ", nid, hs.term, hs.vote, hs.commit))
            if n.app is not None:
                h.update(n.app.chain)
        for e in self.events:
            h.update(e.encode())
        return h.hexdigest()


def nodes_for_seed(seed: int) -> int:
    return (3, 5, 7)[seed % 3]


def run(
    seed: int,
    steps: int,
    nodes: int | None = None,
    mutation: str | None = None,
    schedule: Schedule | None = None,
    liveness: bool = True,
    bootstrap_snapshot: bool = True,
) -> RunResult:
    """Run one seed: ``steps`` steps of faults, then heal and check liveness."""
    n = nodes or nodes_for_seed(seed)
    muts = frozenset({mutation}) if mutation else frozenset()
    cluster = Cluster(seed, n, muts, bootstrap_snapshot=bootstrap_snapshot)
    if schedule is None:
        schedule = make_schedule(random.Random(cluster.rng.getrandbits(64)), steps)
    by_step: dict[int, list[Fault]] = {}
    for f in schedule:
        by_step.setdefault(f.step, []).append(f)
    checker = cluster.checker
    try:
        for s in range(steps):
            faults = by_step.get(s)
            cluster.step(tuple(faults) if faults else ())
            if not checker.ok:
                break
        if checker.ok and liveness:
            cluster.heal_all()
            cluster.check_liveness(20 * cluster.election_tick)
    except CoreCrashed as e:
        checker.fail("core exception", str(e))
    violation = checker.violations[0] if checker.violations else None
    if violation is not None:
        cluster.log(f"VIOLATION {violation}")
    stats = {
        "ticks": cluster.now,
        "sent": cluster.net.sent,
        "dropped": cluster.net.dropped,
        "commit": checker.max_commit,
        "reads": checker.reads_served,
        "terms": len(checker.leader_of_term),
        "poisoned": len(cluster.poisoned),
    }
    return RunResult(seed, n, steps, violation, tuple(cluster.events), cluster.digest(), stats)
