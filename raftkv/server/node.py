"""The asyncio node driver: the hub that wires a member together and runs the Ready loop.

A :class:`Node` owns one Raft core (:class:`~raftkv.raft.RawNode`), its durable storage
(:class:`~raftkv.server.storage.sqlite.SQLiteStorage`), a peer transport and the replicated state
machine (:class:`~raftkv.state.fsm.KVStateMachine`).  One task runs the Ready loop:

0. hand the Ready's ``early_messages`` (a leader's appends, as the core decides) to the
   transport;
1. persist the Ready's hard state, entries and snapshot (one SQLite transaction, fsynced);
2. only then hand its ``messages`` to the transport;
3. apply the snapshot and the committed entries, in order, exactly once, through the apply
   step shared with the simulator (:mod:`raftkv.server.apply`), and resolve the proposals
   and reads waiting on them;
4. ``advance``.

The rest of a member lives beside it: settings (:mod:`~raftkv.server.config`), the member
table and snapshot format (:mod:`~raftkv.server.membership`), membership and leadership
changes (:mod:`~raftkv.server.changes`), peer messages and ticks
(:mod:`~raftkv.server.inputs`), snapshot policy (:mod:`~raftkv.server.snapshots`),
background duties (:mod:`~raftkv.server.duties`), waiters (:mod:`~raftkv.server.waiters`),
health and status (:mod:`~raftkv.server.serving`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from raftkv.api import CLIENT_WRITES, Command, Request
from raftkv.errors import (
    InvalidArgument,
    NoLeader,
    NotLeader,
    ProposalDropped,
    StorageError,
    Timeout,
)
from raftkv.protocol import codec
from raftkv.raft import (
    NONE,
    Entry,
    LogLost,
    Message,
    RawNode,
    Ready,
    StateRole,
)
from raftkv.server import changes, duties, inputs, serving, waiters
from raftkv.server.apply import (
    Applier,
    EntryKind,
    Proposals,
    kv_entry,
)
from raftkv.server.config import (
    HEALTH_MAX_APPLY_LAG,
    UNSAFE_SWITCHES,
    ClusterState,
    NodeConfig,
    fsm_with_limits,
    raft_config,
)
from raftkv.server.membership import (
    MemberRecord,
    Membership,
    identity,
    open_store,
    restore_node_snapshot,
)
from raftkv.server.peers import (
    Outbox,
    Transport,
    TransportFactory,
    open_transport,
    sync_peers,
    tcp_transport_factory,
)
from raftkv.server.snapshots import Snapshotter
from raftkv.server.storage import failpoints
from raftkv.server.storage.sqlite import SQLiteStorage
from raftkv.state.fsm import ApplyResult, KVStateMachine

log = logging.getLogger("raftkv.server.node")

# What callers imported from here before the node was split into its modules:
__all__ = [
    "HEALTH_MAX_APPLY_LAG",
    "UNSAFE_SWITCHES",
    "MemberRecord",
    "Node",
    "NodeConfig",
    "Transport",
    "TransportFactory",
    "fsm_with_limits",
    "tcp_transport_factory",
]


_P = TypeVar("_P")


class Node:
    """A raftkv member.  Create with :meth:`start`, stop with :meth:`stop`."""

    def __init__(
        self,
        cfg: NodeConfig,
        storage: SQLiteStorage,
        fsm: KVStateMachine,
        members: dict[int, MemberRecord],
        cluster_id: int,
        node_id: int,
    ) -> None:
        self.cfg = cfg
        self.id = node_id
        self.cluster_id = cluster_id
        self.storage = storage
        self.fsm = fsm
        self.membership = Membership(node_id, cfg.client_addr, members)
        self.transport: Transport | None = None
        snap = storage.snapshot()
        self.rn = RawNode(raft_config(cfg, node_id, storage, snap.meta.index))
        self.applied_index = snap.meta.index
        self.snapshots = Snapshotter(self, snap.meta.index)
        self.conf_state = snap.meta.conf_state
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self.proposals: Proposals[asyncio.Future[ApplyResult]] = Proposals()
        """Proposals waiting for their entries (read-only for callers: its length, its
        ``peak``)."""
        self.applier = Applier(fsm, self.rn.apply_conf_change, snap.meta.index)
        """The apply step (raftkv.server.apply), shared with the simulator."""
        self.waiters = waiters.Waiters()
        """Reads, applied indexes and leaders being waited for (raftkv.server.waiters)."""
        self.fatal: BaseException | None = None
        self.started_at = time.monotonic()
        self.leader_changes = 0
        self._last_leader = NONE
        self.outbox = Outbox(node_id)
        """Messages to peers go out through it (vote log lines, heartbeat round trips)."""
        self.peer_rtt = self.outbox.peer_rtt
        """Last heartbeat round-trip time to each peer, seconds (leader only)."""
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
        cfg.validate()
        me = identity(cfg)
        cid, nid, ids, conf0 = me.cluster_id, me.node_id, me.initial, me.bootstrap
        storage, fsm, members = await open_store(cfg, me)
        try:
            snap = storage.snapshot()
            node = cls(cfg, storage, fsm, members, cid, nid)
            # Replaying the log publishes again if our attributes entry is after the snapshot.
            if not snap.is_empty():
                node.membership.restore(members)
            if cfg.initial_cluster_state != ClusterState.NEW and (
                snap.is_empty() or nid not in members
            ):
                node.membership.join_peers = {
                    i: cfg.initial_cluster[n] for i, n in ids.items() if i != nid
                }
            node.conf_state = snap.meta.conf_state if not snap.is_empty() else conf0
            node.transport = await open_transport(
                cfg,
                transport_factory,
                (nid, cid, cfg.peer_addr, node.membership.wanted_peers()),
                functools.partial(inputs.on_message, node),
                functools.partial(inputs.on_unreachable, node),
            )
            if storage.loss is not None:
                node.stop_serving(storage.loss)
        except BaseException:
            await storage.close()
            raise
        node._tasks += [
            asyncio.create_task(node._ready_loop(), name=f"raftkv-ready-{cfg.name}"),
            asyncio.create_task(inputs.tick_loop(node), name=f"raftkv-tick-{cfg.name}"),
            *duties.start(node),
        ]
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
        self.snapshots.kill()
        snap_task = self.snapshots.task
        tasks = [*self._tasks, *([snap_task] if snap_task else [])]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._fail_all(ProposalDropped("node is shutting down"))
        if self.transport is not None:
            await self.transport.stop()
        await self.storage.close()

    def stop_serving(self, e: BaseException) -> None:
        """Take this member out of service for good (until an operator acts): no votes, no
        acknowledgements, no reads of any kind.  Logs one critical line saying what to do;
        the process stays up so /health and status can tell why."""
        if self.fatal is not None:
            return
        self.fatal = e
        serving.log_out_of_service(self, e)
        self._fail_all(StorageError(f"node is not serving: {e}"))
        self._wake.set()
        for cb in self.fatal_listeners:
            try:
                cb(e)
            except Exception:
                log.exception("fatal listener failed")
        if isinstance(e, LogLost):
            # Make the verdict survive a restart: the mark now covers what was acknowledged.
            self._tasks.append(asyncio.create_task(serving.mark_lost(self, e.to_commit)))

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
        self.waiters.fail_all(err)

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
            self.stop_serving(e)

    def lease_now(self) -> float:
        """The leader-local lease clock (monotonic, plus the test-only skew)."""
        return time.monotonic() + self.clock_skew

    async def _handle_ready(self, rd: Ready) -> None:
        """The Ready contract (docs/raft.md), in the order the core states it."""
        if "ack_before_fsync" in self.cfg.test.unsafe:
            # UNSAFE (test only): talk, apply and acknowledge first, persist last.  A SIGKILL
            # rarely lands in this window (completed writes survive in the page cache), so
            # this switch needs crash points or power-loss simulation to be caught
            # (docs/testing.md).
            self._send([*rd.early_messages, *rd.messages])
            self._apply_ready(rd)
            if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
                await self.storage.save(rd.hard_state, rd.entries, rd.snapshot)
            return
        # 0. what the core lets leave while this Ready is being persisted (a leader's appends
        # and heartbeats, thesis 10.2.1).  The next Ready is taken only after this one is
        # persisted, as the core requires.
        self._send(rd.early_messages)
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
        if self.fatal is None:
            self._send(rd.messages)
        # 3. apply, 4. advance
        self._apply_ready(rd)
        await self.snapshots.maybe_snapshot()

    def _send(self, msgs: Sequence[Message]) -> None:
        if msgs and self.transport is not None:
            self.outbox.send(self.transport, msgs)

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
        self.waiters.answer_reads(rd.read_states)
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.leader_id, rd.soft_state.role)
        self.rn.advance(rd)
        self.waiters.applied(self.applied_index)

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
            self.waiters.leader_known()
        if role != StateRole.LEADER:
            # Reads waiting on a read index we asked for as leader will never be answered.
            self.waiters.fail_reads(NotLeader(leader, self.client_addr_of(leader)))

    def _apply_snapshot(self, data: bytes, index: int) -> None:
        members = restore_node_snapshot(self.fsm, data)
        if members:
            self.membership.restore(members)
            self._sync_transport_peers()
        self.applied_index = index
        self.snapshots.index = index
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
            self.membership.apply_conf_change(a.conf_change)
            self._sync_transport_peers()
        elif a.kind == EntryKind.MEMBER and self.membership.apply_attrs(a.member, e.data[1:]):
            self._sync_transport_peers()  # a member's peer address changed
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

    def _sync_transport_peers(self) -> None:
        if self.transport is not None:
            sync_peers(self.transport, self.membership.wanted_peers())

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

    @property
    def members(self) -> dict[int, MemberRecord]:
        """The member table (id -> names and addresses), as applied."""
        return self.membership.members

    @property
    def snapshot_index(self) -> int:
        """The index of the last snapshot taken or installed (or under way)."""
        return self.snapshots.index

    @property
    def stopping(self) -> bool:
        return self._stopping

    def wake(self) -> None:
        """Something for the Ready loop: look at the core again."""
        self._wake.set()

    def client_addr_of(self, node_id: int) -> str:
        return self.membership.client_addr_of(node_id)

    def election_timeout(self) -> float:
        """Seconds of the (base) election timeout."""
        return self.cfg.election_tick * self.cfg.tick_interval

    async def wait_lease_primary(self, timeout: float) -> bool:
        """Wait, while leader, until the lessor holds the leases (duties.wait_lease_primary)."""
        return await duties.wait_lease_primary(self, timeout)

    def not_leader(self) -> NotLeader:
        lead = self.leader_id
        if lead == NONE:
            raise NoLeader("no leader elected (the cluster may have lost its quorum)")
        return NotLeader(lead, self.client_addr_of(lead))

    def check_usable(self) -> None:
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
        self.check_usable()
        if not self.is_leader:
            raise self.not_leader()
        if len(self.proposals) >= self.cfg.max_pending_proposals:
            from raftkv.errors import TooManyRequests

            raise TooManyRequests(retry_after=0.05)
        if "apply_twice" in self.cfg.test.unsafe:
            client_id = seq = 0  # UNSAFE (test only): no exactly-once tag, retries re-apply
        # ``now`` stamps the command with this leader's monotonic clock: the state machine
        # measures session time only between stamps of one term (KVStateMachine._advance_clock).
        cmd = Command(request=request, client_id=client_id, seq=seq, now=self.lease_now())
        self.stats["proposals"] += 1
        return await self.await_entry(
            self.rn.propose,
            kv_entry(codec.encode_command(cmd)),
            timeout,
            "request timed out waiting for the entry to commit",
        )

    async def await_entry(
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
        return await waiters.read_barrier(self, timeout)

    async def wait_applied(self, index: int, timeout: float | None = None) -> None:
        await waiters.wait_applied(self, index, timeout)

    async def wait_leader(self, timeout: float = 10.0) -> int:
        return await waiters.wait_leader(self, timeout)

    # --- membership and leadership (raftkv.server.changes) --------------------------------

    async def add_member(
        self, name: str, peer_addr: str, client_addr: str, learner: bool
    ) -> MemberRecord:
        return await changes.add_member(self, name, peer_addr, client_addr, learner)

    async def remove_member(self, nid: int) -> None:
        await changes.remove_member(self, nid)

    async def promote_member(self, nid: int) -> None:
        await changes.promote_member(self, nid)

    async def update_member(self, nid: int, peer_addr: str) -> None:
        """Change member ``nid``'s advertised peer address through the log (leader only)."""
        await changes.update_member(self, nid, peer_addr)

    async def transfer_leadership(self, to: int, timeout: float | None = None) -> None:
        await changes.transfer_leadership(self, to, timeout)

    # --- status ----------------------------------------------------------------------------

    def member_list(self) -> list[dict[str, Any]]:
        return self.membership.member_list(self.conf_state)

    async def defragment(self) -> tuple[int, int]:
        """Give the store's free pages back to the file system, while serving
        (SQLiteStorage.defragment): the database's bytes before and after."""
        self.check_serving()
        return await self.storage.defragment()

    def db_size(self) -> int:
        return serving.db_size(self.cfg.data_dir)

    def status(self, with_hash: bool = False) -> dict[str, Any]:
        """MemberRecord status; the content hash (a walk of the whole store) only on request."""
        return serving.status(self, with_hash)

    def health(self) -> tuple[bool, str]:
        """Whether this member can serve, and why not (raftkv.server.serving.health)."""
        return serving.health(self)
