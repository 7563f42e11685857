"""A hand-driven network of Raft cores for scripted scenario tests (etcd-io/raft style).

Messages are delivered only when a test says so, and any of them can be dropped by a filter,
so each scenario is reproduced step by step without clocks or threads.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from raftkv.raft import (
    ConfChange,
    Config,
    ConfState,
    EntryType,
    MemoryStorage,
    Message,
    RawNode,
    ReadState,
    StateRole,
)

Filter = Callable[[Message], "bool | Message"]  # True: deliver, False: drop, Message: deliver this


@dataclass
class Node:
    id: int
    storage: MemoryStorage
    rn: RawNode
    applied: list[tuple[int, bytes]] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    sent: list[Message] = field(default_factory=list)


class Network:
    def __init__(
        self,
        ids: Iterable[int] = (1, 2, 3),
        *,
        learners: Iterable[int] = (),
        pre_vote: bool = True,
        check_quorum: bool = True,
        election_tick: int = 10,
        max_size_per_msg: int = 1 << 20,
        max_inflight: int = 256,
        mutations: frozenset[str] = frozenset(),
        seed: int = 0,
    ) -> None:
        self.ids = list(ids)
        self.conf = ConfState(voters=tuple(self.ids), learners=tuple(learners))
        self.kw = dict(
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            election_tick=election_tick,
            max_size_per_msg=max_size_per_msg,
            max_inflight_msgs=max_inflight,
            mutations=mutations,
        )
        self.seed = seed
        self.nodes: dict[int, Node] = {}
        self.down: set[int] = set()
        self.blocked: set[tuple[int, int]] = set()
        self.inflight: list[Message] = []
        for i in (*self.ids, *learners):
            self.nodes[i] = self._new_node(i, MemoryStorage(self.conf))

    def _new_node(self, i: int, storage: MemoryStorage, applied: int = 0) -> Node:
        cfg = Config(
            id=i,
            storage=storage,
            applied=applied,
            rng=random.Random(self.seed * 1000 + i),
            **self.kw,  # type: ignore[arg-type]
        )
        return Node(i, storage, RawNode(cfg))

    def add_node(self, i: int) -> Node:
        """A brand-new node with an empty log and no configuration."""
        node = self._new_node(i, MemoryStorage(ConfState()))
        self.nodes[i] = node
        return node

    # --- driving -----------------------------------------------------------------------

    def process(self, i: int) -> None:
        """Run the Ready loop of node ``i`` once (persist, queue messages, apply, advance)."""
        node = self.nodes[i]
        if i in self.down:
            return
        while node.rn.has_ready():
            rd = node.rn.ready()
            if rd.hard_state is not None:
                node.storage.set_hard_state(rd.hard_state)
            if rd.snapshot is not None:
                node.storage.apply_snapshot(rd.snapshot)
                node.applied = [(ix, bytes.fromhex(d)) for ix, d in json.loads(rd.snapshot.data)]
            node.storage.append(rd.entries)
            msgs = rd.early_messages + rd.messages
            node.sent.extend(msgs)
            self.inflight.extend(msgs)
            for e in rd.committed_entries:
                if e.type == EntryType.CONF_CHANGE:
                    node.rn.apply_conf_change(ConfChange.decode(e.data))
                elif e.data:
                    node.applied.append((e.index, e.data))
            node.read_states.extend(rd.read_states)
            node.rn.advance(rd)

    def process_all(self) -> None:
        for i in list(self.nodes):
            self.process(i)

    def deliver(self, keep: Filter | None = None, max_rounds: int = 1000) -> int:
        """Deliver messages until none are left; ``keep`` may drop some. Returns # delivered."""
        delivered = 0
        for _ in range(max_rounds):
            self.process_all()
            if not self.inflight:
                return delivered
            batch, self.inflight = self.inflight, []
            for m in batch:
                if m.to in self.down or m.frm in self.down or (m.frm, m.to) in self.blocked:
                    continue
                if m.to not in self.nodes:
                    continue
                if keep is not None:
                    verdict = keep(m)
                    if verdict is False:
                        continue
                    if isinstance(verdict, Message):
                        m = verdict
                self.nodes[m.to].rn.step(m)
                delivered += 1
        raise AssertionError("network did not quiesce")

    def tick(self, n: int = 1, ids: Iterable[int] | None = None) -> None:
        targets = list(ids) if ids is not None else list(self.nodes)
        for _ in range(n):
            for i in targets:
                if i not in self.down:
                    self.nodes[i].rn.tick()
            self.deliver()

    def elect(self, i: int) -> None:
        self.nodes[i].rn.campaign()
        self.deliver()
        assert self.role(i) == StateRole.LEADER, f"node {i} failed to win: {self.role(i)}"

    def propose(self, i: int, data: bytes) -> None:
        self.nodes[i].rn.propose(data)
        self.deliver()

    # --- faults ------------------------------------------------------------------------

    def isolate(self, i: int) -> None:
        for j in self.nodes:
            if j != i:
                self.blocked.add((i, j))
                self.blocked.add((j, i))

    def cut(self, a: int, b: int) -> None:
        self.blocked.add((a, b))
        self.blocked.add((b, a))

    def heal(self) -> None:
        self.blocked.clear()

    def crash(self, i: int) -> None:
        """Stop node ``i``: everything not persisted (and its in-flight messages) is lost."""
        self.down.add(i)
        self.inflight = [m for m in self.inflight if m.frm != i]

    def restart(self, i: int) -> None:
        self.down.discard(i)
        st = self.nodes[i].storage
        snap_index = st.snapshot().meta.index
        node = self._new_node(i, st, applied=snap_index)
        if snap_index:
            data = st.snapshot().data
            node.applied = [(ix, bytes.fromhex(d)) for ix, d in json.loads(data)]
        self.nodes[i] = node

    def snapshot_and_compact(self, i: int) -> None:
        node = self.nodes[i]
        applied = node.rn.raft.raft_log.applied
        data = json.dumps([[ix, d.hex()] for ix, d in node.applied]).encode()
        node.storage.create_snapshot(applied, node.rn.raft.prs.conf_state(), data)
        node.storage.compact(applied)

    # --- inspection --------------------------------------------------------------------

    def role(self, i: int) -> StateRole:
        return self.nodes[i].rn.raft.state

    def term(self, i: int) -> int:
        return self.nodes[i].rn.raft.term

    def commit(self, i: int) -> int:
        return self.nodes[i].rn.raft.raft_log.committed

    def leaders(self) -> list[int]:
        return [i for i in self.nodes if i not in self.down and self.role(i) == StateRole.LEADER]

    def data(self, i: int) -> list[bytes]:
        return [d for _, d in self.nodes[i].applied]
