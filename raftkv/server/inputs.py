"""What drives a member's core from outside the Ready loop: messages from peers, peers the
transport could not reach, and the clock (one tick every ``tick_interval``).  Each input
steps the core and wakes the Ready loop; none of them persists or sends anything."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from raftkv.errors import RaftError
from raftkv.raft import LogLost, Message, MessageType
from raftkv.server.apply import ENTRY_MEMBER

if TYPE_CHECKING:
    from raftkv.server.node import Node

log = logging.getLogger("raftkv.server.node")


def on_message(node: Node, m: Message) -> None:
    """A message from a peer (the transport calls it on the event loop)."""
    if node.stopping or node.fatal is not None:
        return
    if m.type == MessageType.PROP:
        # A member forwarding its attributes (duties.publish_loop): propose them if we lead.
        if node.is_leader:
            with contextlib.suppress(RaftError):
                node.rn.propose_batch(
                    [e.data for e in m.entries if e.data.startswith(ENTRY_MEMBER)]
                )
                node.wake()
        return
    node.outbox.heard(m)
    try:
        node.rn.step(m)
    except (RaftError, ValueError) as e:
        log.debug("dropped message", extra={"reason": str(e)})
    except LogLost as e:
        # The leader's commit index proves we lost entries we acknowledged.
        node.stop_serving(e)
    node.wake()


def on_unreachable(node: Node, node_id: int) -> None:
    """The transport could not deliver to ``node_id``: the core probes it again, slowly."""
    if not node.stopping:
        node.rn.report_unreachable(node_id)
        node.wake()


async def tick_loop(node: Node) -> None:
    """Tick the core every ``tick_interval`` seconds (without bursts after a stall)."""
    interval = node.cfg.tick_interval
    next_at = time.monotonic()
    while not node.stopping:
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            next_at = time.monotonic()  # we fell behind (e.g. SIGSTOP): do not burst
        if node.fatal is not None:
            return  # out of service: no elections, no heartbeats
        node.rn.tick()
        node.wake()
