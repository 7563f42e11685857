"""A member's background duties: publishing its client address, the leader's lease duties,
and automatic compaction.  Each is a loop over one :class:`~raftkv.server.node.Node`; what
they decide goes through the log like any other write."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from raftkv.errors import RaftError, RaftKVError
from raftkv.raft import NONE, Entry, Message, MessageType
from raftkv.server.apply import member_entry
from raftkv.server.config import CompactionMode

if TYPE_CHECKING:
    from raftkv.server.node import Node

log = logging.getLogger("raftkv.server.node")


def start(node: Node) -> list[asyncio.Task[None]]:
    """Start ``node``'s duties: publishing, leases, and compaction if it is configured."""
    name = node.cfg.name
    tasks = [
        asyncio.create_task(publish_loop(node), name=f"raftkv-publish-{name}"),
        asyncio.create_task(lease_loop(node), name=f"raftkv-lease-{name}"),
    ]
    cfg = node.cfg
    if cfg.auto_compaction_mode != CompactionMode.OFF and cfg.auto_compaction_retention > 0:
        tasks.append(asyncio.create_task(compaction_loop(node), name=f"raftkv-compact-{name}"))
    return tasks


async def publish_loop(node: Node) -> None:
    """Publish our client address through the log until it has been applied.

    Peers learn each other's peer addresses from ``--initial-cluster``, but client
    addresses only this way (as etcd publishes member attributes), so a follower can point
    a client at the leader's client address.
    """
    payload = member_entry(node.id, node.cfg.client_addr)
    while not node.stopping and not node.membership.published and node.fatal is None:
        leader = node.leader_id
        if leader == node.id:
            with contextlib.suppress(RaftError):
                node.rn.propose(payload)
                node.wake()
        elif leader != NONE and node.transport is not None:
            node.transport.send(
                [Message(MessageType.PROP, leader, node.id, entries=(Entry(0, 0, data=payload),))]
            )
        await asyncio.sleep(node.cfg.tick_interval * 5)


async def lease_loop(node: Node) -> None:
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
    lessor = node.fsm.lessor
    # Grace a new leader gives every lease so its holder can find it and renew; charged
    # to the lease at each election (see Lessor.promote).
    extend = node.election_timeout() / 2
    while not node.stopping:
        await asyncio.sleep(node.cfg.lease_interval)
        lessor = node.fsm.lessor  # a snapshot restore replaces it
        now = node.lease_now()
        leading = node.is_leader
        if not leading:
            if lessor.is_primary:
                lessor.demote()
            continue
        try:
            if not lessor.is_primary:
                # Only once our own term's entry is applied is our lease state current.
                st = node.rn.status()
                if not st.committed_in_term or node.applied_index < st.commit:
                    continue
                charge = lessor.promote(now, extend)
                if charge is not None:
                    # It lists every lease: entries of at most checkpoint_batch leases,
                    # proposed together (one Raft round, no 1.5 MB entry at 100,000).
                    results = await asyncio.gather(
                        *(node.propose(part) for part in lessor.batches(charge)),
                        return_exceptions=True,
                    )
                    for r in results:
                        if isinstance(r, BaseException):
                            raise r
                continue
            ids = lessor.expired(now)
            if ids:
                from raftkv.api import LeaseExpireRequest

                await node.propose(LeaseExpireRequest(tuple(ids)))
            cp = lessor.checkpoint(now)
            if cp is not None:
                await node.propose(cp)
        except RaftKVError as e:  # not leader any more, or the entry did not commit in time
            log.debug("lease duty skipped: %s", e)
        except Exception:
            log.exception("lease loop error")


async def compaction_loop(node: Node) -> None:
    """Automatic compaction, decided by the leader and applied through the log (etcd's
    ``--auto-compaction-mode``/``--auto-compaction-retention``).

    ``revision`` mode compacts to ``revision - retention`` every few seconds.  ``periodic``
    mode samples the revision every ``retention / 10`` seconds and compacts to the sample
    taken ``retention`` seconds ago, so about that much history stays readable.
    """
    from raftkv.api import CompactionRequest

    mode = node.cfg.auto_compaction_mode
    retention = node.cfg.auto_compaction_retention
    interval = (
        max(retention / 10, 0.1)
        if mode == CompactionMode.PERIODIC
        else node.cfg.auto_compaction_interval
    )
    samples: list[tuple[float, int]] = []
    while not node.stopping:
        await asyncio.sleep(interval)
        now = time.monotonic()
        rev = node.fsm.revision
        samples.append((now, rev))
        if not node.is_leader:
            continue
        if mode == CompactionMode.REVISION:
            target = rev - int(retention)
        else:
            old = [r for t, r in samples if now - t >= retention]
            samples = [(t, r) for t, r in samples if now - t < retention * 2]
            target = max(old) if old else 0
        if target > node.fsm.compact_revision:
            try:
                await node.propose(CompactionRequest(target))
                log.info("auto-compacted", extra={"revision": target, "mode": mode})
            except RaftError as e:
                log.debug("auto-compaction skipped: %s", e)


async def wait_lease_primary(node: Node, timeout: float) -> bool:
    """Wait, while ``node`` is leader, until its lessor has taken over the leases (the lease
    loop promotes it once the leader's own term's entry is applied); False if that did not
    happen within ``timeout`` seconds or leadership was lost."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    step = max(node.cfg.lease_interval / 2, 0.005)
    while node.is_leader and not node.fsm.lessor.is_primary:
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(step)
    return node.is_leader
