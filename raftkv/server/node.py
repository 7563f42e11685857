"""The asyncio node driver: ticks, the Ready loop, proposals, linearizable reads, membership.

A :class:`Node` owns one Raft core (:class:`~raftkv.raft.RawNode`), its durable storage
(:class:`~raftkv.server.storage.sqlite.SQLiteStorage`), a peer transport and the replicated state
machine (:class:`~raftkv.state.fsm.KVStateMachine`).  One task runs the Ready loop:

1. persist the Ready's hard state, entries and snapshot (one SQLite transaction, fsynced);
2. only then hand its messages to the transport;
3. apply the snapshot and the committed entries to the state machine, in order, exactly once,
   and resolve the proposals and reads waiting on them;
4. ``advance``.

Log entries carry a one-byte envelope: ``K`` + a state-machine command
(:func:`raftkv.protocol.codec.encode_command`), or ``M`` + member attributes (a member publishing
its client address).  Node-level snapshots hold the state machine and the member table.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgpack

from raftkv.api import CLIENT_WRITES, DEFAULT_LIMITS, Command, Limits, Request
from raftkv.errors import (
    ConfChangeRefused,
    CorruptionError,
    InvalidArgument,
    MemberExists,
    MemberNotFound,
    NoLeader,
    NotLeader,
    ProposalDropped,
    RaftError,
    RaftKVError,
    StorageError,
    Timeout,
)
from raftkv.protocol import codec
from raftkv.protocol.methods import MAX_REPLY_BYTES
from raftkv.raft import (
    NONE,
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    LogLost,
    Message,
    MessageType,
    RawNode,
    Ready,
    StateRole,
)
from raftkv.server.apply import (
    ENTRY_MEMBER,
    Applier,
    EntryKind,
    Proposals,
    kv_entry,
    member_entry,
)
from raftkv.server.storage import failpoints
from raftkv.server.storage.hwm import StorageLoss
from raftkv.server.storage.sqlite import SQLiteStorage
from raftkv.state.fsm import ApplyResult, KVStateMachine

log = logging.getLogger("raftkv.server.node")

UNSAFE_SWITCHES: dict[str, str] = {
    "stale_reads": "serve linearizable reads from local state, without ReadIndex",
    "ack_before_fsync": "send, apply and acknowledge a Ready before it is persisted",
    "apply_twice": "forget exactly-once: a retried write is applied again",
    "no_persist_vote": "leave the vote out of the persisted hard state (core mutation)",
}
"""Deliberately broken behaviours, for proving the jepsen_like harness can fail.  Enabled only
through ``RAFTKV_UNSAFE`` (comma-separated names) together with ``RAFTKV_TEST_HOOKS=1``."""

HEALTH_MAX_APPLY_LAG = 5_000
"""Committed entries not yet applied beyond which /health reports the member unhealthy."""

_P = TypeVar("_P")
NODE_SNAPSHOT_VERSION = 1


@dataclass(slots=True)
class Member:
    id: int
    name: str
    peer_addr: str
    client_addr: str = ""
    is_learner: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "peer_addr": self.peer_addr,
            "client_addr": self.client_addr,
            "is_learner": self.is_learner,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Member:
        return cls(
            id=int(d["id"]),
            name=str(d["name"]),
            peer_addr=str(d["peer_addr"]),
            client_addr=str(d.get("client_addr", "")),
            is_learner=bool(d.get("is_learner", False)),
        )


class Transport(Protocol):
    """What the node needs from a peer transport (TCP in production, in-memory in tests)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def send(self, messages: list[Message]) -> None: ...

    def add_peer(self, node_id: int, addr: str) -> None: ...

    def remove_peer(self, node_id: int) -> None: ...


TransportFactory = Callable[
    [int, int, str, dict[int, str], Callable[[Message], None], Callable[[int], None]], Transport
]
"""(node_id, cluster_id, listen_addr, peers, on_message, on_unreachable) -> Transport."""


def tcp_transport_factory(
    node_id: int,
    cluster_id: int,
    listen_addr: str,
    peers: dict[int, str],
    on_message: Callable[[Message], None],
    on_unreachable: Callable[[int], None],
) -> Transport:
    """The production transport: asyncio TCP with msgpack frames (raftkv.server.transport)."""
    return _TcpTransport(node_id, cluster_id, listen_addr, peers, on_message, on_unreachable)


class _TcpTransport:
    def __init__(
        self,
        node_id: int,
        cluster_id: int,
        listen_addr: str,
        peers: dict[int, str],
        on_message: Callable[[Message], None],
        on_unreachable: Callable[[int], None],
    ) -> None:
        from raftkv.protocol.methods import split_addr
        from raftkv.server.transport.peer import PeerTransport

        self._split = split_addr
        self.inner = PeerTransport(
            node_id,
            cluster_id,
            split_addr(listen_addr),
            {i: split_addr(a) for i, a in peers.items()},
            on_message,
            report_unreachable=on_unreachable,
        )

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    def send(self, messages: list[Message]) -> None:
        self.inner.send(messages)

    def add_peer(self, node_id: int, addr: str) -> None:
        self.inner.add_peer(node_id, self._split(addr))

    def remove_peer(self, node_id: int) -> None:
        self.inner.remove_peer(node_id)

    def peer_ids(self) -> list[int]:
        return list(self.inner.peers)


@dataclass(slots=True)
class NodeConfig:
    name: str
    data_dir: Path
    client_addr: str
    peer_addr: str
    initial_cluster: dict[str, str]
    """name -> peer address of the initial members (for ``existing``: the current ones)."""
    initial_cluster_state: str = "new"
    cluster_token: str = "raftkv"
    cluster_id: int | None = None
    """Required when joining an existing cluster (``member add`` prints it); a new cluster
    derives it from ``initial_cluster`` and the token."""
    tick_interval: float = 0.1
    election_tick: int = 10
    heartbeat_tick: int = 1
    snapshot_count: int = 50_000
    """Applied entries between two snapshots (then the log is compacted)."""
    fork_snapshot_keys: int = 2_000
    """States with at least this many keys are snapshotted by a forked child."""
    snapshot_catchup_entries: int = 5_000
    """Entries kept in the log after a snapshot so slow followers avoid a snapshot."""
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    max_pending_proposals: int = 10_000
    request_timeout: float = 5.0
    lease_interval: float = 0.25
    """How often the leader checks lease expiry and checkpoints."""
    auto_compaction_mode: str = "off"
    """``periodic``: keep about ``auto_compaction_retention`` seconds of history;
    ``revision``: keep the last ``auto_compaction_retention`` revisions; ``off``."""
    auto_compaction_retention: float = 0.0
    auto_compaction_interval: float = 5.0
    """How often ``revision`` mode checks (``periodic`` samples every retention / 10)."""
    fsm_factory: Callable[[], KVStateMachine] = field(default_factory=lambda: _default_fsm)
    mutations: frozenset[str] = frozenset()
    """Test-only Raft core mutations (raftkv.raft.config.MUTATIONS)."""
    unsafe: frozenset[str] = frozenset()
    """Test-only unsafe switches (UNSAFE_SWITCHES) that jepsen_like must catch."""
    rng_seed: int | None = None
    max_reply_bytes: int = MAX_REPLY_BYTES
    """The largest range or txn reply this member builds; beyond it ReplyTooLarge."""
    max_client_connections: int = 1024
    """Most client connections open at once; more are closed at once (docs/security.md)."""
    client_idle_timeout: float = 600.0
    """Seconds after which a client connection with no request, watch or stream open is
    closed (0: never)."""
    client_handshake_timeout: float = 10.0
    """Seconds, in total, for a client connection to complete its handshake."""
    max_peer_connections: int = 256
    """Most inbound peer connections open at once (handshaking or handshaken)."""
    peer_handshake_timeout: float = 2.0
    """Seconds, in total, for a peer connection's handshake (either side)."""
    extra: dict[str, Any] = field(default_factory=dict)


class Node:
    """A raftkv member.  Create with :meth:`start`, stop with :meth:`stop`."""

    def __init__(
        self,
        cfg: NodeConfig,
        storage: SQLiteStorage,
        fsm: KVStateMachine,
        members: dict[int, Member],
        cluster_id: int,
        node_id: int,
    ) -> None:
        self.cfg = cfg
        self.id = node_id
        self.cluster_id = cluster_id
        self.storage = storage
        self.fsm = fsm
        self.members = members
        self.transport: Transport | None = None
        snap = storage.snapshot()
        self.rn = RawNode(
            Config(
                id=node_id,
                storage=storage,
                election_tick=cfg.election_tick,
                heartbeat_tick=cfg.heartbeat_tick,
                applied=snap.meta.index,
                max_size_per_msg=cfg.max_size_per_msg,
                max_inflight_msgs=cfg.max_inflight_msgs,
                check_quorum=True,
                pre_vote=True,
                rng=random.Random(cfg.rng_seed if cfg.rng_seed is not None else os.urandom(8)),
                mutations=cfg.mutations
                | ({"no_persist_vote"} if "no_persist_vote" in cfg.unsafe else set()),
            )
        )
        self.applied_index = snap.meta.index
        self.snapshot_index = snap.meta.index
        self.conf_state = snap.meta.conf_state
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self.proposals: Proposals[asyncio.Future[ApplyResult]] = Proposals()
        """Proposals waiting for their entries (read-only for callers: its length, its
        ``peak``)."""
        self.applier = Applier(fsm, self.rn.apply_conf_change, snap.meta.index)
        """The apply step (raftkv.server.apply), shared with the simulator."""
        self._read_ctx = itertools.count(1)
        self._logged_campaign = 0
        self._read_waiters: dict[bytes, asyncio.Future[int]] = {}
        self._apply_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._leader_waiters: list[asyncio.Future[None]] = []
        self.fatal: BaseException | None = None
        self.started_at = time.monotonic()
        self.leader_changes = 0
        self._last_leader = NONE
        self._attrs_applied = False
        self._snapshotting = False
        self._snapshot_task: asyncio.Task[None] | None = None
        self._snapshot_child: int | None = None
        self._join_peers: dict[int, str] = {}
        """A joining member's peers as given at start (the membership as of its addition):
        kept in the transport until the applied membership includes this member, because a
        snapshot older than the addition (even the bootstrap one) can predate its leader."""
        self.peer_rtt: dict[int, float] = {}
        """Last heartbeat round-trip time to each peer, seconds (leader only)."""
        self._hb_sent: dict[int, float] = {}
        self.observe_fsync: Callable[[float], None] | None = None
        self.observe_apply: Callable[[float], None] | None = None
        self.clock_skew = 0.0
        """Test hook: seconds added to this member's lease clock (the ``clock`` nemesis)."""
        self.listeners: list[Callable[[ApplyResult], None]] = []
        """Called for every applied KV entry (the watch hub subscribes here)."""
        self.fatal_listeners: list[Callable[[BaseException], None]] = []
        """Called once when this member stops serving (the server ends its watches)."""
        self.stats: dict[str, float] = {
            "proposals": 0,
            "proposals_failed": 0,
            "applied": 0,
            "fsync_seconds": 0.0,
            "fsync_count": 0,
            "apply_seconds": 0.0,
        }

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def start(cls, cfg: NodeConfig, transport_factory: TransportFactory) -> Node:
        from raftkv.protocol.methods import cluster_id as make_cluster_id
        from raftkv.protocol.methods import member_id

        if cfg.name not in cfg.initial_cluster:
            raise ValueError(f"--initial-cluster must include this member ({cfg.name})")
        if cfg.cluster_id is not None:
            cid = cfg.cluster_id
        elif cfg.initial_cluster_state == "new":
            cid = make_cluster_id(cfg.initial_cluster, cfg.cluster_token)
        else:
            raise ValueError("joining an existing cluster needs its cluster id (--cluster-id)")
        nid = member_id(cfg.name, cfg.cluster_token)
        ids = {member_id(n, cfg.cluster_token): n for n in cfg.initial_cluster}
        bootstrap = (
            ConfState(voters=tuple(sorted(ids)))
            if cfg.initial_cluster_state == "new"
            else ConfState()
        )
        # A store behind its high-water mark opens anyway (read-only, ``storage.loss`` set):
        # the member then starts out of service, so /health and status can say why.
        storage = await SQLiteStorage.open(
            cfg.data_dir, conf_state=bootstrap, cluster_id=cid, node_id=nid, allow_loss=True
        )
        try:
            fsm = cfg.fsm_factory()
            members = {
                i: Member(i, n, cfg.initial_cluster[n], cfg.client_addr if i == nid else "")
                for i, n in ids.items()
            }
            if (
                cfg.initial_cluster_state == "new"
                and storage.loss is None
                and storage.last_index() == 0
                and (storage.snapshot().is_empty())
            ):
                await _bootstrap(storage, bootstrap, fsm, members)
            snap = storage.snapshot()
            published = False
            if not snap.is_empty():
                members = _restore_node_snapshot(fsm, snap.data) or members
                me = members.get(nid)
                published = me is not None and me.client_addr == cfg.client_addr
            node = cls(cfg, storage, fsm, members, cid, nid)
            if cfg.initial_cluster_state != "new" and (snap.is_empty() or nid not in members):
                node._join_peers = {i: cfg.initial_cluster[n] for i, n in ids.items() if i != nid}
            # Replaying the log sets this again if our attributes entry is after the snapshot.
            node._attrs_applied = published
            node.conf_state = snap.meta.conf_state if not snap.is_empty() else bootstrap
            node.transport = transport_factory(
                nid,
                cid,
                cfg.peer_addr,
                node._wanted_peers(),
                node._on_message,
                node._on_unreachable,
            )
            if isinstance(node.transport, _TcpTransport):
                node.transport.inner.max_inbound = cfg.max_peer_connections
                node.transport.inner.handshake_timeout = cfg.peer_handshake_timeout
            await node.transport.start()
            if storage.loss is not None:
                node._stop_serving(storage.loss)
        except BaseException:
            await storage.close()
            raise
        node._tasks += [
            asyncio.create_task(node._ready_loop(), name=f"raftkv-ready-{cfg.name}"),
            asyncio.create_task(node._tick_loop(), name=f"raftkv-tick-{cfg.name}"),
            asyncio.create_task(node._publish_loop(), name=f"raftkv-publish-{cfg.name}"),
            asyncio.create_task(node._lease_loop(), name=f"raftkv-lease-{cfg.name}"),
        ]
        if cfg.auto_compaction_mode != "off" and cfg.auto_compaction_retention > 0:
            node._tasks.append(
                asyncio.create_task(node._compaction_loop(), name=f"raftkv-compact-{cfg.name}")
            )
        log.info(
            "node started",
            extra={
                "node": cfg.name,
                "id": f"{nid:x}",
                "cluster": f"{cid:x}",
                "applied": node.applied_index,
                "term": storage.hard_state.term,
                "vote": f"{storage.hard_state.vote:x}",
            },
        )
        return node

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        if self._snapshot_child is not None:
            with contextlib.suppress(OSError):
                os.kill(self._snapshot_child, 9)
        tasks = [*self._tasks, *([self._snapshot_task] if self._snapshot_task else [])]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._fail_all(ProposalDropped("node is shutting down"))
        if self.transport is not None:
            await self.transport.stop()
        await self.storage.close()

    def _stop_serving(self, e: BaseException) -> None:
        """Take this member out of service for good (until an operator acts): no votes, no
        acknowledgements, no reads of any kind.  Logs one critical line saying what to do;
        the process stays up so /health and status can tell why."""
        if self.fatal is not None:
            return
        self.fatal = e
        if isinstance(e, LogLost | StorageLoss):
            log.critical(
                "acknowledged state lost, this member stops serving: %s. Recovery: from a "
                "healthy member run `raftkv member remove %x`, stop this member and empty its "
                "data dir %s, run `raftkv member add %s --peer-addr %s --client-addr %s` and "
                "start it with the printed `--initial-cluster-state existing --cluster-id %x`",
                e,
                self.id,
                self.cfg.data_dir,
                self.cfg.name,
                self.cfg.peer_addr,
                self.cfg.client_addr,
                self.cluster_id,
            )
        elif isinstance(e, StorageError):
            log.critical(
                "storage failure, this member stops serving: %s. Recovery: fix the disk, then "
                "restart the member (it recovers from what is on disk)",
                e,
            )
        else:  # a bug: make it loud
            log.critical("ready loop crashed, this member stops serving", exc_info=e)
        self._fail_all(StorageError(f"node is not serving: {e}"))
        self._wake.set()
        for cb in self.fatal_listeners:
            try:
                cb(e)
            except Exception:
                log.exception("fatal listener failed")
        if isinstance(e, LogLost):
            # Make the verdict survive a restart: the mark now covers what was acknowledged.
            self._tasks.append(asyncio.create_task(self._mark_lost(e.to_commit)))

    async def _mark_lost(self, acknowledged: int) -> None:
        try:
            await self.storage.mark_lost(acknowledged)
        except (OSError, RaftKVError) as err:  # the member is out of service either way
            log.warning("could not record the lost state in the high-water mark: %s", err)

    def check_serving(self) -> None:
        """Raise :class:`StorageError` if this member must not answer reads, serializable
        ones included: it lost acknowledged state, or its storage failed."""
        if self.fatal is not None:
            raise StorageError(f"node is not serving: {self.fatal}")
        failed = self.storage.failed
        if failed is not None:
            raise StorageError(f"node is not serving, storage failed: {failed}")

    def _fail_all(self, err: Exception) -> None:
        for fut0 in self.proposals.drain():
            if not fut0.done():
                fut0.set_exception(err)
        for fut in self._read_waiters.values():
            if not fut.done():
                fut.set_exception(err)
        self._read_waiters.clear()
        for _, fut2 in self._apply_waiters:
            if not fut2.done():
                fut2.set_exception(err)
        self._apply_waiters.clear()

    # --- inputs ----------------------------------------------------------------------------

    def _on_message(self, m: Message) -> None:
        if self._stopping or self.fatal is not None:
            return
        if m.type == MessageType.PROP:
            # A member forwarding its attributes (see _publish_loop): propose them if we lead.
            if self.is_leader:
                with contextlib.suppress(RaftError):
                    self.rn.propose_batch(
                        [e.data for e in m.entries if e.data.startswith(ENTRY_MEMBER)]
                    )
                    self._wake.set()
            return
        if m.type == MessageType.HEARTBEAT_RESP:
            sent = self._hb_sent.pop(m.frm, None)
            if sent is not None:
                self.peer_rtt[m.frm] = time.perf_counter() - sent
        try:
            self.rn.step(m)
        except (RaftError, ValueError) as e:
            log.debug("dropped message", extra={"reason": str(e)})
        except LogLost as e:
            # The leader's commit index proves we lost entries we acknowledged.
            self._stop_serving(e)
        self._wake.set()

    def _on_unreachable(self, node_id: int) -> None:
        if not self._stopping:
            self.rn.report_unreachable(node_id)
            self._wake.set()

    async def _tick_loop(self) -> None:
        interval = self.cfg.tick_interval
        next_at = time.monotonic()
        while not self._stopping:
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_at = time.monotonic()  # we fell behind (e.g. SIGSTOP): do not burst
            if self.fatal is not None:
                return  # out of service: no elections, no heartbeats
            self.rn.tick()
            self._wake.set()

    # --- the Ready loop --------------------------------------------------------------------

    async def _ready_loop(self) -> None:
        try:
            while not self._stopping and self.fatal is None:
                await self._wake.wait()
                self._wake.clear()
                while self.rn.has_ready() and not self._stopping and self.fatal is None:
                    await self._handle_ready(self.rn.ready())
        except asyncio.CancelledError:
            raise
        except Exception as e:
            # StorageError / CorruptionError: we cannot trust the disk; anything else is a
            # bug.  Either way stop participating rather than serve wrong data.
            self._stop_serving(e)

    def lease_now(self) -> float:
        """The leader-local lease clock (monotonic, plus the test-only skew)."""
        return time.monotonic() + self.clock_skew

    async def _handle_ready(self, rd: Ready) -> None:
        if "ack_before_fsync" in self.cfg.unsafe:
            await self._handle_ready_unsafe(rd)
            return
        # The core says which messages may leave while this Ready is being persisted (a
        # leader's appends and heartbeats, thesis 10.2.1); the rest wait for the fsync.  The
        # next Ready is asked for only after this one is persisted, as the core requires.
        if rd.early_messages and self.transport is not None:
            early = list(rd.early_messages)
            self._note_heartbeats(early)
            self.transport.send(early)
        msgs = list(rd.messages)
        # 1. persist (one transaction, fsynced; queued saves share one fsync).  A Ready that
        # only moves the commit index need not be persisted: a lower commit index on disk is
        # always safe (the leader tells us again) — etcd's MustSync.
        if rd.entries or rd.snapshot is not None or (rd.hard_state is not None and rd.must_sync):
            t0 = time.perf_counter()
            await self.storage.save(rd.hard_state, rd.entries, rd.snapshot)
            took = time.perf_counter() - t0
            self.stats["fsync_seconds"] += took
            self.stats["fsync_count"] += 1
            if self.observe_fsync is not None:
                self.observe_fsync(took)
        # 2. send, only now that what the messages promise is durable (and not at all once
        # this member is out of service)
        if msgs and self.transport is not None and self.fatal is None:
            self._log_votes(msgs)
            self._note_heartbeats(msgs)
            self.transport.send(msgs)
        # 3. apply, 4. advance
        self._apply_ready(rd)
        await self._maybe_snapshot()

    def _apply_ready(self, rd: Ready) -> None:
        """Steps 3 and 4 of the Ready contract: apply in order, answer waiters, advance."""
        t1 = time.perf_counter()
        if rd.snapshot is not None:
            self._apply_snapshot(rd.snapshot.data, rd.snapshot.meta.index)
            self.conf_state = rd.snapshot.meta.conf_state
            log.info("installed the leader's snapshot", extra={"index": rd.snapshot.meta.index})
        if rd.committed_entries:
            failpoints.hit("before_apply")
        for e in rd.committed_entries:
            self._apply_entry(e)
        if rd.committed_entries:
            failpoints.hit("after_apply")
        took = time.perf_counter() - t1
        self.stats["apply_seconds"] += took
        if self.observe_apply is not None and rd.committed_entries:
            self.observe_apply(took)
        for rs in rd.read_states:
            fut = self._read_waiters.pop(rs.request_ctx, None)
            if fut is not None and not fut.done():
                fut.set_result(rs.index)
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.leader_id, rd.soft_state.role)
        self.rn.advance(rd)
        self._release_apply_waiters()

    def _log_votes(self, msgs: list[Message]) -> None:
        """Log every vote this member promises (its own, when it campaigns, and the ones it
        grants), as it sends them: the promise must survive a crash, and jepsen_like's
        ``vote_durability`` check compares these lines with the term and vote a restarted
        member reports in ``node started``."""
        for m in msgs:
            if m.type == MessageType.VOTE and m.term != self._logged_campaign:
                self._logged_campaign = m.term
                log.info("campaigning", extra={"term": m.term, "vote": f"{self.id:x}"})
            elif m.type == MessageType.VOTE_RESP and not m.reject:
                log.info("vote granted", extra={"term": m.term, "vote": f"{m.to:x}"})

    def _note_heartbeats(self, msgs: list[Message]) -> None:
        now = time.perf_counter()
        for m in msgs:
            if m.type == MessageType.HEARTBEAT and m.to not in self._hb_sent:
                self._hb_sent[m.to] = now

    async def _handle_ready_unsafe(self, rd: Ready) -> None:
        """UNSAFE (test only): talk and acknowledge first, persist in the background."""
        msgs = [*rd.early_messages, *rd.messages]
        if msgs and self.transport is not None:
            self._log_votes(msgs)
            self.transport.send(msgs)
        self._apply_ready(rd)
        # Persisting last: votes, acks and client answers have already left.  A SIGKILL
        # rarely lands in this window (completed writes survive in the page cache), so this
        # switch needs crash points or power-loss simulation to be caught (docs/testing.md).
        if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
            await self.storage.save(rd.hard_state, rd.entries, rd.snapshot)

    def _on_soft_state(self, leader: int, role: StateRole) -> None:
        # Soft state also changes on role changes alone (e.g. follower -> pre-candidate);
        # count only a new leader becoming known.
        if leader != NONE and leader != self._last_leader:
            self.leader_changes += 1
            if leader == self.id and self.rn.is_leader:
                # still leader now, so the current term is the one it leads (a newer term
                # would have made it a follower): jepsen_like's election-safety check reads it
                log.info("became leader", extra={"term": self.rn.term})
        self._last_leader = leader
        if leader != NONE:
            waiters, self._leader_waiters = self._leader_waiters, []
            for w in waiters:
                if not w.done():
                    w.set_result(None)
        if role != StateRole.LEADER:
            # Reads waiting on a read index we asked for as leader will never be answered.
            for ctx, fut in list(self._read_waiters.items()):
                if not fut.done():
                    fut.set_exception(NotLeader(leader, self.client_addr_of(leader)))
                del self._read_waiters[ctx]

    def _apply_snapshot(self, data: bytes, index: int) -> None:
        members = _restore_node_snapshot(self.fsm, data)
        if members:
            self.members = members
            if self.id in members:
                self._join_peers = {}
            me = members.get(self.id)
            self._attrs_applied = me is not None and me.client_addr == self.cfg.client_addr
            self._sync_transport_peers()
        self.applied_index = index
        self.snapshot_index = index
        # Proposals at or below the snapshot can no longer be matched to their entries.
        self.applier.restored(self.fsm, index)
        for fut in self.proposals.drop_through(index):
            if not fut.done():
                fut.set_exception(ProposalDropped("superseded by a snapshot; retry"))

    def _apply_entry(self, e: Entry) -> None:
        a = self.applier.apply(e, self.lease_now())
        if a is None:
            return
        if a.kind == EntryKind.KV:
            self.stats["applied"] += 1
            for listener in self.listeners:
                try:
                    listener(a.result)
                except Exception:  # a listener's bug must not stop applying
                    log.exception("apply listener failed", extra={"index": e.index})
        elif a.kind == EntryKind.CONF_CHANGE:
            assert a.conf_change is not None and a.conf_state is not None
            self.conf_state = a.conf_state
            self._apply_conf_change(a.conf_change)
        elif a.kind == EntryKind.MEMBER:
            self._apply_member_attrs(a.member)
        self.applied_index = e.index
        settled = self.proposals.settle(a)
        if settled is not None:
            fut, result = settled
            if fut.done():
                pass
            elif result is not None:
                fut.set_result(result)
            else:
                self.stats["proposals_failed"] += 1
                fut.set_exception(ProposalDropped("the entry was replaced by a new leader; retry"))

    def _apply_conf_change(self, cc: ConfChange) -> None:
        """The member table and the transport follow a membership change the core applied."""
        info: dict[str, Any] = {}
        if cc.context:
            with contextlib.suppress(Exception):
                info = msgpack.unpackb(cc.context)
        nid = cc.node_id
        if cc.type == ConfChangeType.REMOVE_NODE:
            self.members.pop(nid, None)
        elif cc.type in (ConfChangeType.ADD_VOTER, ConfChangeType.ADD_LEARNER):
            m = self.members.get(nid)
            if m is None:
                m = Member(
                    nid,
                    str(info.get("name", f"{nid:x}")),
                    str(info.get("peer_addr", "")),
                    str(info.get("client_addr", "")),
                )
                self.members[nid] = m
            m.is_learner = cc.type == ConfChangeType.ADD_LEARNER
            if nid == self.id:
                self._join_peers = {}
        elif cc.type == ConfChangeType.PROMOTE_LEARNER and nid in self.members:
            self.members[nid].is_learner = False
        self._sync_transport_peers()
        log.info("membership changed", extra={"change": cc.type.name, "member": f"{nid:x}"})

    def _apply_member_attrs(self, attrs: tuple[int, str] | None) -> None:
        if attrs is None:
            log.warning("ignored a malformed member-attributes entry")
            return
        nid, addr = attrs
        if nid in self.members:
            self.members[nid].client_addr = addr
        if nid == self.id and addr == self.cfg.client_addr:
            self._attrs_applied = True

    def _wanted_peers(self) -> dict[int, str]:
        """The peers the transport should know: the applied membership, plus, until that
        includes this member, the peers it was told at join time (see ``_join_peers``)."""
        wanted = {mid: m.peer_addr for mid, m in self.members.items() if m.peer_addr}
        for pid, addr in self._join_peers.items():
            wanted.setdefault(pid, addr)
        wanted.pop(self.id, None)
        return wanted

    def _sync_transport_peers(self) -> None:
        if self.transport is None:
            return
        wanted = self._wanted_peers()
        for pid, addr in wanted.items():
            self.transport.add_peer(pid, addr)
        for pid in list(getattr(self.transport, "peer_ids", lambda: [])()):
            if pid not in wanted:
                self.transport.remove_peer(pid)

    async def _maybe_snapshot(self) -> None:
        """Snapshot when enough entries were applied; recording it never blocks this loop.

        The state is captured right here, between two Readys: small states are serialised
        inline, large ones (``fork_snapshot_keys`` and up) by a forked child that sees a
        copy-on-write image of this instant.  Writing the file and compacting the log then
        run in a background task while the Ready loop keeps committing and applying.
        """
        if self._snapshotting or self.applied_index - self.snapshot_index < self.cfg.snapshot_count:
            return
        index = self.applied_index
        # Commit-only Readys are not persisted (they need no fsync); make the commit index on
        # disk cover the snapshot first, or a restart would find a snapshot above its commit.
        # Done here, in the Ready loop, so it is ordered with every other hard-state write.
        if self.storage.hard_state.commit < index:
            await self.storage.save(self.rn.hard_state(), [])
        self._snapshotting = True
        self.snapshot_index = index  # do not trigger again while this one runs
        conf = self.conf_state
        data: bytes | None = None
        child: tuple[int, Path] | None = None
        if len(self.fsm.store) >= self.cfg.fork_snapshot_keys and hasattr(os, "fork"):
            child = self._fork_snapshot()
        else:
            data = _node_snapshot(self.fsm, self.members)
        self._snapshot_task = asyncio.create_task(self._record_snapshot(index, conf, data, child))

    def _fork_snapshot(self) -> tuple[int, Path]:
        tmp = self.cfg.data_dir / f"snap-child-{os.getpid()}-{self.applied_index}.tmp"
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; it never returns
            code = 0
            try:
                tmp.write_bytes(_node_snapshot(self.fsm, self.members))
            except BaseException:
                code = 1
            os._exit(code)
        self._snapshot_child = pid
        return pid, tmp

    async def _record_snapshot(
        self, index: int, conf: ConfState, data: bytes | None, child: tuple[int, Path] | None
    ) -> None:
        try:
            if child is not None:
                pid, tmp = child
                loop = asyncio.get_running_loop()
                _, status = await loop.run_in_executor(None, os.waitpid, pid, 0)
                self._snapshot_child = None
                try:
                    if os.waitstatus_to_exitcode(status) != 0:
                        raise OSError(f"snapshot child exited with status {status}")
                    data = await asyncio.to_thread(tmp.read_bytes)
                finally:
                    with contextlib.suppress(OSError):
                        tmp.unlink()
            assert data is not None
            await self.storage.create_snapshot(index, conf, data)
            compact_to = index - self.cfg.snapshot_catchup_entries
            if compact_to > self.storage.first_index():
                with contextlib.suppress(RaftError):
                    await self.storage.compact(compact_to)
            log.info("snapshot taken", extra={"index": index})
        except RaftError:
            pass
        except OSError as e:
            log.warning("snapshot failed, will retry: %s", e)
            self.snapshot_index = 0
        except StorageError as e:
            log.error("snapshot failed: %s", e)
        finally:
            self._snapshotting = False

    def _release_apply_waiters(self) -> None:
        if not self._apply_waiters:
            return
        keep: list[tuple[int, asyncio.Future[None]]] = []
        for idx, fut in self._apply_waiters:
            if idx <= self.applied_index:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((idx, fut))
        self._apply_waiters = keep

    async def _publish_loop(self) -> None:
        """Publish our client address through the log until it has been applied.

        Peers learn each other's peer addresses from ``--initial-cluster``, but client
        addresses only this way (as etcd publishes member attributes), so a follower can point
        a client at the leader's client address.
        """
        payload = member_entry(self.id, self.cfg.client_addr)
        while not self._stopping and not self._attrs_applied and self.fatal is None:
            leader = self.leader_id
            if leader == self.id:
                with contextlib.suppress(RaftError):
                    self.rn.propose(payload)
                    self._wake.set()
            elif leader != NONE and self.transport is not None:
                self.transport.send(
                    [
                        Message(
                            MessageType.PROP, leader, self.id, entries=(Entry(0, 0, data=payload),)
                        )
                    ]
                )
            await asyncio.sleep(self.cfg.tick_interval * 5)

    async def _lease_loop(self) -> None:
        """The leader's lease duties: promote on election, expire, checkpoint, demote.

        Expiry is decided here, on the leader's monotonic clock, and applied through the log
        (LeaseExpire), so every member deletes the same keys at the same revision.
        Checkpoints record a lease's remaining budget in the log once it changed materially
        (at most one batch of ``checkpoint_batch`` leases per round, only leases that came
        due in the lessor's heap: an idle round is O(1) whatever the number of leases), so a
        new leader resumes from it instead of the full TTL (etcd 9395), and promotion charges
        every budget with the election timeout it grants, so repeated elections cannot keep
        a lease alive
        (etcd 9888).  The lessor's stall detection pushes deadlines back after this loop was
        not scheduled for a while (a stalled leader does not revoke everything at once when it
        resumes, etcd 15247).
        """
        lessor = self.fsm.lessor
        # Grace a new leader gives every lease so its holder can find it and renew; charged
        # to the lease at each election (see Lessor.promote).
        extend = self.election_timeout() / 2
        while not self._stopping:
            await asyncio.sleep(self.cfg.lease_interval)
            lessor = self.fsm.lessor  # a snapshot restore replaces it
            now = self.lease_now()
            leading = self.is_leader
            if not leading:
                if lessor.is_primary:
                    lessor.demote()
                continue
            try:
                if not lessor.is_primary:
                    # Only once our own term's entry is applied is our lease state current.
                    st = self.rn.status()
                    if not st.committed_in_term or self.applied_index < st.commit:
                        continue
                    charge = lessor.promote(now, extend)
                    if charge is not None:
                        # It lists every lease: entries of at most checkpoint_batch leases,
                        # proposed together (one Raft round, no 1.5 MB entry at 100,000).
                        results = await asyncio.gather(
                            *(self.propose(part) for part in lessor.batches(charge)),
                            return_exceptions=True,
                        )
                        for r in results:
                            if isinstance(r, BaseException):
                                raise r
                    continue
                ids = lessor.expired(now)
                if ids:
                    from raftkv.api import LeaseExpireRequest

                    await self.propose(LeaseExpireRequest(tuple(ids)))
                cp = lessor.checkpoint(now)
                if cp is not None:
                    await self.propose(cp)
            except RaftKVError as e:  # not leader any more, or the entry did not commit in time
                log.debug("lease duty skipped: %s", e)
            except Exception:
                log.exception("lease loop error")

    async def _compaction_loop(self) -> None:
        """Automatic compaction, decided by the leader and applied through the log (etcd's
        ``--auto-compaction-mode``/``--auto-compaction-retention``).

        ``revision`` mode compacts to ``revision - retention`` every few seconds.  ``periodic``
        mode samples the revision every ``retention / 10`` seconds and compacts to the sample
        taken ``retention`` seconds ago, so about that much history stays readable.
        """
        from raftkv.api import CompactionRequest

        mode = self.cfg.auto_compaction_mode
        retention = self.cfg.auto_compaction_retention
        interval = (
            max(retention / 10, 0.1) if mode == "periodic" else self.cfg.auto_compaction_interval
        )
        samples: list[tuple[float, int]] = []
        while not self._stopping:
            await asyncio.sleep(interval)
            now = time.monotonic()
            rev = self.fsm.revision
            samples.append((now, rev))
            if not self.is_leader:
                continue
            if mode == "revision":
                target = rev - int(retention)
            else:
                old = [r for t, r in samples if now - t >= retention]
                samples = [(t, r) for t, r in samples if now - t < retention * 2]
                target = max(old) if old else 0
            if target > self.fsm.compact_revision:
                try:
                    await self.propose(CompactionRequest(target))
                    log.info("auto-compacted", extra={"revision": target, "mode": mode})
                except RaftError as e:
                    log.debug("auto-compaction skipped: %s", e)

    # --- the API the server uses -----------------------------------------------------------

    @property
    def leader_id(self) -> int:
        return self.rn.leader_id

    @property
    def is_leader(self) -> bool:
        return self.rn.is_leader

    @property
    def term(self) -> int:
        """This member's current Raft term."""
        return self.rn.term

    @property
    def commit_index(self) -> int:
        return self.rn.commit_index

    @property
    def last_index(self) -> int:
        """The index of the last entry in this member's log."""
        return self.rn.last_index

    @property
    def pending_proposals(self) -> int:
        """Proposals waiting for their entries to be applied."""
        return len(self.proposals)

    @property
    def is_learner(self) -> bool:
        return self.id in self.conf_state.learners

    def client_addr_of(self, node_id: int) -> str:
        m = self.members.get(node_id)
        return m.client_addr if m is not None else ""

    def election_timeout(self) -> float:
        """Seconds of the (base) election timeout."""
        return self.cfg.election_tick * self.cfg.tick_interval

    async def wait_lease_primary(self, timeout: float) -> bool:
        """Wait, while this member is leader, until its lessor has taken over the leases
        (the lease loop promotes it once the leader's own term's entry is applied); False if
        that did not happen within ``timeout`` seconds or leadership was lost."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        step = max(self.cfg.lease_interval / 2, 0.005)
        while self.is_leader and not self.fsm.lessor.is_primary:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(step)
        return self.is_leader

    def not_leader(self) -> NotLeader:
        lead = self.leader_id
        if lead == NONE:
            raise NoLeader("no leader elected (the cluster may have lost its quorum)")
        return NotLeader(lead, self.client_addr_of(lead))

    def _check_usable(self) -> None:
        self.check_serving()
        if self._stopping:
            raise ProposalDropped("node is shutting down")

    async def propose_client(
        self, request: Request, client_id: int = 0, seq: int = 0, timeout: float | None = None
    ) -> ApplyResult:
        """:meth:`propose` for a request that came from a client: only the client request
        types (internal commands such as lease checkpoints and expiry are proposed by the
        leader's own duties, never from a socket)."""
        if not isinstance(request, CLIENT_WRITES):
            raise InvalidArgument(f"{type(request).__name__} cannot be proposed by a client")
        return await self.propose(request, client_id, seq, timeout)

    async def propose(
        self, request: Request, client_id: int = 0, seq: int = 0, timeout: float | None = None
    ) -> ApplyResult:
        """Replicate a state-machine command; only on the leader (NotLeader elsewhere).
        Trusted callers only (the leader's duties); requests from a socket go through
        :meth:`propose_client`."""
        self._check_usable()
        if not self.is_leader:
            raise self.not_leader()
        if len(self.proposals) >= self.cfg.max_pending_proposals:
            from raftkv.errors import TooManyRequests

            raise TooManyRequests(retry_after=0.05)
        if "apply_twice" in self.cfg.unsafe:
            client_id = seq = 0  # UNSAFE (test only): no exactly-once tag, retries re-apply
        # ``now`` stamps the command with this leader's monotonic clock: the state machine
        # measures session time only between stamps of one term (KVStateMachine._advance_clock).
        cmd = Command(request=request, client_id=client_id, seq=seq, now=self.lease_now())
        self.stats["proposals"] += 1
        return await self._await_entry(
            self.rn.propose,
            kv_entry(codec.encode_command(cmd)),
            timeout,
            "request timed out waiting for the entry to commit",
        )

    async def _await_entry(
        self,
        propose: Callable[[_P], tuple[int, int]],
        what: _P,
        timeout: float | None,
        timeout_message: str,
    ) -> ApplyResult:
        """The one pending-proposal path: propose ``what`` (a command or a membership
        change) with ``propose``, then wait until its entry is applied.  The core tells the
        (index, term) it gave the entry; another term at that index when it is applied means
        a new leader replaced it (``ProposalDropped``)."""
        try:
            index, term = propose(what)
        except NotLeader:
            raise self.not_leader() from None
        fut: asyncio.Future[ApplyResult] = asyncio.get_running_loop().create_future()
        self.proposals.add(index, term, fut)
        self._wake.set()
        try:
            return await asyncio.wait_for(fut, timeout or self.cfg.request_timeout)
        except TimeoutError:
            self.proposals.forget(index)
            raise Timeout(timeout_message) from None

    async def read_barrier(self, timeout: float | None = None) -> int:
        """Wait until a linearizable read may be served from local state (ReadIndex)."""
        self._check_usable()
        timeout = timeout or self.cfg.request_timeout
        ctx = next(self._read_ctx).to_bytes(8, "big") + self.id.to_bytes(8, "big")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._read_waiters[ctx] = fut
        try:
            self.rn.read_index(ctx)
        except ProposalDropped:
            self._read_waiters.pop(ctx, None)
            raise NoLeader("no leader to confirm the read") from None
        self._wake.set()
        try:
            index = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self._read_waiters.pop(ctx, None)
            raise Timeout("linearizable read timed out (no quorum?)") from None
        await self.wait_applied(index, timeout)
        return index

    async def wait_applied(self, index: int, timeout: float | None = None) -> None:
        if self.applied_index >= index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._apply_waiters.append((index, fut))
        try:
            await asyncio.wait_for(fut, timeout or self.cfg.request_timeout)
        except TimeoutError:
            raise Timeout(f"timed out waiting to apply index {index}") from None

    async def wait_leader(self, timeout: float = 10.0) -> int:
        if self.leader_id != NONE:
            return self.leader_id
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._leader_waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise Timeout("no leader elected in time") from None
        return self.leader_id

    # --- membership and leadership ---------------------------------------------------------

    async def add_member(
        self, name: str, peer_addr: str, client_addr: str, learner: bool
    ) -> Member:
        from raftkv.protocol.methods import member_id

        nid = member_id(name, self.cfg.cluster_token)
        if nid in self.members or nid in self.conf_state.all_ids():
            raise MemberExists(f"member {name} ({nid:x}) already exists")
        ctx = msgpack.packb({"name": name, "peer_addr": peer_addr, "client_addr": client_addr})
        cc_type = ConfChangeType.ADD_LEARNER if learner else ConfChangeType.ADD_VOTER
        await self._conf_change(ConfChange(cc_type, nid, ctx))
        return self.members[nid]

    async def remove_member(self, nid: int) -> None:
        if nid not in self.conf_state.all_ids():
            raise MemberNotFound(f"member {nid:x} not found")
        await self._conf_change(ConfChange(ConfChangeType.REMOVE_NODE, nid))

    async def promote_member(self, nid: int) -> None:
        if nid not in self.conf_state.learners:
            if nid in self.conf_state.voters:
                raise ConfChangeRefused(f"member {nid:x} is already a voter")
            raise MemberNotFound(f"member {nid:x} not found")
        await self._conf_change(ConfChange(ConfChangeType.PROMOTE_LEARNER, nid))

    async def _conf_change(self, cc: ConfChange) -> None:
        self._check_usable()
        if not self.is_leader:
            raise self.not_leader()
        await self._await_entry(
            self.rn.propose_conf_change, cc, None, "membership change timed out"
        )

    async def transfer_leadership(self, to: int, timeout: float | None = None) -> None:
        self._check_usable()
        if to not in self.conf_state.voters:
            raise MemberNotFound(f"member {to:x} is not a voter")
        if not self.is_leader:
            raise self.not_leader()
        self.rn.transfer_leadership(to)
        self._wake.set()
        deadline = time.monotonic() + (timeout or self.cfg.request_timeout)
        while time.monotonic() < deadline:
            if self.leader_id == to:
                return
            await asyncio.sleep(self.cfg.tick_interval / 2)
        raise Timeout(f"leadership did not move to {to:x} in time")

    # --- status ----------------------------------------------------------------------------

    def db_size(self) -> int:
        total = 0
        for p in self.cfg.data_dir.rglob("*"):
            with contextlib.suppress(OSError):
                if p.is_file():
                    total += p.stat().st_size
        return total

    def status(self, with_hash: bool = False) -> dict[str, Any]:
        """Member status; the content hash (a walk of the whole store) only on request."""
        st = self.rn.status()
        return {
            "id": self.id,
            "name": self.cfg.name,
            "cluster_id": self.cluster_id,
            "leader": st.leader_id,
            "term": st.term,
            "raft_index": st.last_index,
            "raft_applied_index": self.applied_index,
            "commit_index": st.commit,
            "revision": self.fsm.revision,
            "compact_revision": self.fsm.compact_revision,
            "db_size": self.db_size(),
            "hash": self.fsm.hash() if with_hash else 0,
            "is_learner": self.is_learner,
            "role": st.role.name.lower(),
            "version": _version(),
        }

    def member_list(self) -> list[dict[str, Any]]:
        out = []
        for nid in sorted(self.conf_state.all_ids()):
            m = self.members.get(nid) or Member(nid, f"{nid:x}", "")
            d = m.to_dict()
            d["is_learner"] = nid in self.conf_state.learners
            out.append(d)
        return out

    def health(self) -> tuple[bool, str]:
        """Whether this member can serve: log intact, storage writable, a leader known,
        applied index not far behind the commit index; and why not."""
        if self.fatal is not None:
            if isinstance(self.fatal, LogLost | StorageLoss):
                return False, (
                    f"log lost: {self.fatal} (remove this member and add it back with an "
                    "empty data dir)"
                )
            return False, f"storage failure: {self.fatal}"
        failed = self.storage.failed
        if failed is not None:
            return False, f"storage failure: {failed}"
        if self.leader_id == NONE:
            return False, "no leader"
        lag = self.rn.commit_index - self.applied_index
        if lag > HEALTH_MAX_APPLY_LAG:
            return False, f"applied index {self.applied_index} is {lag} entries behind commit"
        return True, ""


async def _bootstrap(
    storage: SQLiteStorage, conf: ConfState, fsm: KVStateMachine, members: dict[int, Member]
) -> None:
    """Seed a brand-new member of a new cluster with the initial configuration.

    Every initial member writes the same snapshot at (index 1, term 1) holding the voters and
    the member table.  The configuration is then part of the replicated state, not only of
    each member's local bootstrap: a member added later is caught up with that snapshot
    first and so learns the initial voters (without it, a new member replaying the log from
    index 1 would only ever see the conf changes after it — found by the simulator, sim-2).
    """
    from raftkv.raft import HardState, Snapshot, SnapshotMeta

    # Client addresses are not part of the bootstrap (every member would write a different
    # table); each member publishes its own through the log (_publish_loop).
    blank = {i: Member(m.id, m.name, m.peer_addr) for i, m in members.items()}
    snap = Snapshot(SnapshotMeta(1, 1, conf), _node_snapshot(fsm, blank))
    await storage.save(HardState(term=1, vote=NONE, commit=1), [], snap)


def _default_fsm(limits: Limits | None = None) -> KVStateMachine:
    from raftkv.state.lease import LeaseConfig

    # Stall detection: if the leader's lease loop was not scheduled for 2 s (a stall, a
    # SIGSTOP, a slow disk), deadlines move back by the gap instead of all expiring at once.
    return KVStateMachine(
        limits=limits or DEFAULT_LIMITS, lease_config=LeaseConfig(stall_threshold=2.0)
    )


def fsm_with_limits(limits: Limits) -> Callable[[], KVStateMachine]:
    """An ``fsm_factory`` with request limits (``raftkv serve --max-request-bytes`` ...)."""
    return lambda: _default_fsm(limits)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("raftkv")
    except PackageNotFoundError:
        return "0.0.0"


def _node_snapshot(fsm: KVStateMachine, members: dict[int, Member]) -> bytes:
    body: bytes = msgpack.packb(
        {
            "v": NODE_SNAPSHOT_VERSION,
            "fsm": fsm.snapshot(),
            "members": [m.to_dict() for m in members.values()],
        }
    )
    return body


def _restore_node_snapshot(fsm: KVStateMachine, data: bytes) -> dict[int, Member]:
    try:
        d = msgpack.unpackb(data)
        if not isinstance(d, dict) or d.get("v") != NODE_SNAPSHOT_VERSION:
            raise ValueError("not a raftkv node snapshot")
        fsm_data = d["fsm"]
        members = {int(m["id"]): Member.from_dict(m) for m in d["members"]}
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as e:
        raise CorruptionError(f"snapshot payload is not a valid node snapshot: {e}") from e
    fsm.restore(fsm_data)
    return members
