"""Membership: the member table, client addresses published through the log, the peers
the transport should know, the node-level snapshot format, and bootstrapping a new cluster.

The Raft configuration (voters, learners) lives in the core; this is the node's side of it:
names and addresses.  Conf-change entries carry a new member's name and addresses in their
context; ``M`` entries carry a member's client address (see :mod:`raftkv.server.apply`).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import msgpack

from raftkv.errors import (
    ConfChangeRefused,
    CorruptionError,
    InvalidArgument,
    MemberExists,
    MemberNotFound,
)
from raftkv.raft import NONE, ConfChange, ConfChangeType, ConfState
from raftkv.server.apply import ENTRY_MEMBER
from raftkv.server.config import ClusterState, NodeConfig
from raftkv.server.storage.sqlite import SQLiteStorage
from raftkv.state.fsm import KVStateMachine

log = logging.getLogger("raftkv.server.node")

NODE_SNAPSHOT_VERSION = 1


def peer_addr_entry(member_id: int, peer_addr: str) -> bytes:
    """A member-attributes entry that changes a member's advertised peer address
    (``{"id": int, "peer_addr": str}``; the client-address form is
    :func:`raftkv.server.apply.member_entry`)."""
    body: bytes = msgpack.packb({"id": member_id, "peer_addr": peer_addr})
    return ENTRY_MEMBER + body


def decode_peer_addr(body: bytes) -> tuple[int, str] | None:
    """The (id, peer address) of a peer-address entry's body, None if it is not one."""
    try:
        d = msgpack.unpackb(body)
        if not isinstance(d, dict) or "client_addr" in d:
            return None
        return int(d["id"]), str(d["peer_addr"])
    except (ValueError, KeyError, TypeError, msgpack.UnpackException):
        return None


@dataclass(slots=True)
class MemberRecord:
    """A member as this node keeps it (mutable: its addresses arrive through the log); the
    API shows it as :class:`raftkv.api.Member`."""

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
    def from_dict(cls, d: dict[str, Any]) -> MemberRecord:
        return cls(
            id=int(d["id"]),
            name=str(d["name"]),
            peer_addr=str(d["peer_addr"]),
            client_addr=str(d.get("client_addr", "")),
            is_learner=bool(d.get("is_learner", False)),
        )


class Membership:
    """The member table as applied from the log (and snapshots), on one member."""

    def __init__(self, self_id: int, client_addr: str, members: dict[int, MemberRecord]) -> None:
        self.id = self_id
        self.client_addr = client_addr
        self.members = members
        self.join_peers: dict[int, str] = {}
        """A joining member's peers as given at start (the membership as of its addition):
        kept in the transport until the applied membership includes this member, because a
        snapshot older than the addition (even the bootstrap one) can predate its leader."""
        self.published = False
        """This member's own client address has been applied (it stops publishing it)."""

    def restore(self, members: dict[int, MemberRecord]) -> None:
        """A snapshot's member table replaces ours."""
        self.members = members
        if self.id in members:
            self.join_peers = {}
        me = members.get(self.id)
        self.published = me is not None and me.client_addr == self.client_addr

    def apply_conf_change(self, cc: ConfChange) -> None:
        """Follow a membership change the core applied: names and addresses."""
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
                m = MemberRecord(
                    nid,
                    str(info.get("name", f"{nid:x}")),
                    str(info.get("peer_addr", "")),
                    str(info.get("client_addr", "")),
                )
                self.members[nid] = m
            m.is_learner = cc.type == ConfChangeType.ADD_LEARNER
            if nid == self.id:
                self.join_peers = {}
        elif cc.type == ConfChangeType.PROMOTE_LEARNER and nid in self.members:
            self.members[nid].is_learner = False
        log.info("membership changed", extra={"change": cc.type.name, "member": f"{nid:x}"})

    def apply_attrs(self, attrs: tuple[int, str] | None, body: bytes = b"") -> bool:
        """A member-attributes entry: ``attrs`` is its (id, client address) as the apply step
        decoded it, None if it carries none; ``body`` is the entry's envelope body, read for a
        peer-address update (:func:`peer_addr_entry`).  True if a member's peer address
        changed (the transport must follow)."""
        if attrs is None:
            update = decode_peer_addr(body)
            if update is None:
                log.warning("ignored a malformed member-attributes entry")
                return False
            nid, peer = update
            m = self.members.get(nid)
            if m is None or m.peer_addr == peer:
                return False
            m.peer_addr = peer
            log.info("member peer address changed", extra={"member": f"{nid:x}", "peer": peer})
            return True
        nid, addr = attrs
        if nid in self.members:
            self.members[nid].client_addr = addr
        if nid == self.id and addr == self.client_addr:
            self.published = True
        return False

    def wanted_peers(self) -> dict[int, str]:
        """The peers the transport should know: the applied membership, plus, until that
        includes this member, the peers it was told at join time (see ``join_peers``)."""
        wanted = {mid: m.peer_addr for mid, m in self.members.items() if m.peer_addr}
        for pid, addr in self.join_peers.items():
            wanted.setdefault(pid, addr)
        wanted.pop(self.id, None)
        return wanted

    def client_addr_of(self, node_id: int) -> str:
        m = self.members.get(node_id)
        return m.client_addr if m is not None else ""

    # --- the changes an operator asks for (checked here, proposed by the node) ----------

    def add_change(
        self,
        name: str,
        peer_addr: str,
        client_addr: str,
        learner: bool,
        conf: ConfState,
        cluster_token: str,
    ) -> ConfChange:
        from raftkv.protocol.methods import member_id

        nid = member_id(name, cluster_token)
        if nid in self.members or nid in conf.all_ids():
            raise MemberExists(f"member {name} ({nid:x}) already exists")
        ctx = msgpack.packb({"name": name, "peer_addr": peer_addr, "client_addr": client_addr})
        cc_type = ConfChangeType.ADD_LEARNER if learner else ConfChangeType.ADD_VOTER
        return ConfChange(cc_type, nid, ctx)

    def update_payload(self, nid: int, peer_addr: str, conf: ConfState) -> bytes:
        """The entry that changes member ``nid``'s peer address (checked here)."""
        from raftkv.protocol.methods import split_addr

        if nid not in self.members and nid not in conf.all_ids():
            raise MemberNotFound(f"member {nid:x} not found")
        try:
            split_addr(peer_addr)
        except ValueError as e:
            raise InvalidArgument(f"bad peer address {peer_addr!r}: {e}") from None
        return peer_addr_entry(nid, peer_addr)

    def remove_change(self, nid: int, conf: ConfState) -> ConfChange:
        if nid not in conf.all_ids():
            raise MemberNotFound(f"member {nid:x} not found")
        return ConfChange(ConfChangeType.REMOVE_NODE, nid)

    def promote_change(self, nid: int, conf: ConfState) -> ConfChange:
        if nid not in conf.learners:
            if nid in conf.voters:
                raise ConfChangeRefused(f"member {nid:x} is already a voter")
            raise MemberNotFound(f"member {nid:x} not found")
        return ConfChange(ConfChangeType.PROMOTE_LEARNER, nid)

    def member_list(self, conf: ConfState) -> list[dict[str, Any]]:
        out = []
        for nid in sorted(conf.all_ids()):
            m = self.members.get(nid) or MemberRecord(nid, f"{nid:x}", "")
            d = m.to_dict()
            d["is_learner"] = nid in conf.learners
            out.append(d)
        return out


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a starting member is: its cluster, its id, the initial members by id, and the
    configuration a new cluster bootstraps with (empty when joining)."""

    cluster_id: int
    node_id: int
    initial: dict[int, str]
    """member id -> name, of ``--initial-cluster``."""
    bootstrap: ConfState


def identity(cfg: NodeConfig) -> Identity:
    from raftkv.protocol.methods import cluster_id as make_cluster_id
    from raftkv.protocol.methods import member_id

    if cfg.name not in cfg.initial_cluster:
        raise ValueError(f"--initial-cluster must include this member ({cfg.name})")
    if cfg.cluster_id is not None:
        cid = cfg.cluster_id
    elif cfg.initial_cluster_state == ClusterState.NEW:
        cid = make_cluster_id(cfg.initial_cluster, cfg.cluster_token)
    else:
        raise ValueError("joining an existing cluster needs its cluster id (--cluster-id)")
    nid = member_id(cfg.name, cfg.cluster_token)
    ids = {member_id(n, cfg.cluster_token): n for n in cfg.initial_cluster}
    bootstrap = (
        ConfState(voters=tuple(sorted(ids)))
        if cfg.initial_cluster_state == ClusterState.NEW
        else ConfState()
    )
    return Identity(cid, nid, ids, bootstrap)


async def open_store(
    cfg: NodeConfig, me: Identity
) -> tuple[SQLiteStorage, KVStateMachine, dict[int, MemberRecord]]:
    """Open a member's storage (bootstrapping a brand-new member of a new cluster) and restore
    the state machine and the member table from its latest snapshot."""
    # A store behind its high-water mark opens anyway (read-only, ``storage.loss`` set):
    # the member then starts out of service, so /health and status can say why.
    nid = me.node_id
    storage = await SQLiteStorage.open(
        cfg.data_dir,
        conf_state=me.bootstrap,
        cluster_id=me.cluster_id,
        node_id=nid,
        allow_loss=True,
    )
    try:
        fsm = cfg.fsm_factory()
        members = {
            i: MemberRecord(i, n, cfg.initial_cluster[n], cfg.client_addr if i == nid else "")
            for i, n in me.initial.items()
        }
        if (
            cfg.initial_cluster_state == ClusterState.NEW
            and storage.loss is None
            and storage.last_index() == 0
            and storage.snapshot().is_empty()
        ):
            await bootstrap(storage, me.bootstrap, fsm, members)
        snap = storage.snapshot()
        if not snap.is_empty():
            members = restore_node_snapshot(fsm, snap.data) or members
    except BaseException:
        await storage.close()
        raise
    return storage, fsm, members


async def bootstrap(
    storage: SQLiteStorage, conf: ConfState, fsm: KVStateMachine, members: dict[int, MemberRecord]
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
    # table); each member publishes its own through the log (raftkv.server.duties.publish_loop).
    blank = {i: MemberRecord(m.id, m.name, m.peer_addr) for i, m in members.items()}
    snap = Snapshot(SnapshotMeta(1, 1, conf), node_snapshot(fsm, blank))
    await storage.save(HardState(term=1, vote=NONE, commit=1), [], snap)


def node_snapshot(fsm: KVStateMachine, members: dict[int, MemberRecord]) -> bytes:
    body: bytes = msgpack.packb(
        {
            "v": NODE_SNAPSHOT_VERSION,
            "fsm": fsm.snapshot(),
            "members": [m.to_dict() for m in members.values()],
        }
    )
    return body


def restore_node_snapshot(fsm: KVStateMachine, data: bytes) -> dict[int, MemberRecord]:
    try:
        d = msgpack.unpackb(data)
        if not isinstance(d, dict) or d.get("v") != NODE_SNAPSHOT_VERSION:
            raise ValueError("not a raftkv node snapshot")
        fsm_data = d["fsm"]
        members = {int(m["id"]): MemberRecord.from_dict(m) for m in d["members"]}
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as e:
        raise CorruptionError(f"snapshot payload is not a valid node snapshot: {e}") from e
    fsm.restore(fsm_data)
    return members
