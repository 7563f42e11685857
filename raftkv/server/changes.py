"""The membership and leadership changes an operator asks a member for: add, remove,
promote, update a member's peer address, move the leadership.  Each is checked against the
member table (:class:`~raftkv.server.membership.Membership`), then proposed through the log
by the leader (``NotLeader`` elsewhere) and awaited until it is applied."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from raftkv.errors import MemberNotFound, Timeout
from raftkv.raft import ConfChange
from raftkv.server.membership import MemberRecord

if TYPE_CHECKING:
    from raftkv.server.node import Node


async def add_member(
    node: Node, name: str, peer_addr: str, client_addr: str, learner: bool
) -> MemberRecord:
    cc = node.membership.add_change(
        name, peer_addr, client_addr, learner, node.conf_state, node.cfg.cluster_token
    )
    await conf_change(node, cc)
    return node.members[cc.node_id]


async def remove_member(node: Node, nid: int) -> None:
    await conf_change(node, node.membership.remove_change(nid, node.conf_state))


async def promote_member(node: Node, nid: int) -> None:
    await conf_change(node, node.membership.promote_change(nid, node.conf_state))


async def update_member(node: Node, nid: int, peer_addr: str) -> None:
    """Change member ``nid``'s advertised peer address: a member-attributes entry through
    the log, applied on every member, whose transport then dials the new address."""
    payload = node.membership.update_payload(nid, peer_addr, node.conf_state)
    node.check_usable()
    if not node.is_leader:
        raise node.not_leader()
    await node.await_entry(node.rn.propose, payload, None, "member update timed out")


async def conf_change(node: Node, cc: ConfChange) -> None:
    node.check_usable()
    if not node.is_leader:
        raise node.not_leader()
    await node.await_entry(node.rn.propose_conf_change, cc, None, "membership change timed out")


async def transfer_leadership(node: Node, to: int, timeout: float | None = None) -> None:
    node.check_usable()
    if to not in node.conf_state.voters:
        raise MemberNotFound(f"member {to:x} is not a voter")
    if not node.is_leader:
        raise node.not_leader()
    node.rn.transfer_leadership(to)
    node.wake()
    deadline = time.monotonic() + (timeout or node.cfg.request_timeout)
    while time.monotonic() < deadline:
        if node.leader_id == to:
            return
        await asyncio.sleep(node.cfg.tick_interval / 2)
    raise Timeout(f"leadership did not move to {to:x} in time")
