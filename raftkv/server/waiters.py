"""What callers wait on besides their proposals: ReadIndex answers (the linearizable read
barrier), an applied index, a known leader.  The Ready loop settles them
(``answer_reads``, ``applied``, ``leader_known``); a member that stops fails them all."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING

from raftkv.errors import NoLeader, ProposalDropped, Timeout
from raftkv.raft import NONE, ReadState

if TYPE_CHECKING:
    from raftkv.server.node import Node


async def read_barrier(node: Node, timeout: float | None = None) -> int:
    """Wait until ``node`` may serve a linearizable read from local state (ReadIndex): the
    read index the leader confirmed, once applied here."""
    node.check_usable()
    timeout = timeout or node.cfg.request_timeout
    w = node.waiters
    ctx = w.next_ctx(node.id)
    fut = w.read(ctx)
    try:
        node.rn.read_index(ctx)
    except ProposalDropped:
        w.forget_read(ctx)
        raise NoLeader("no leader to confirm the read") from None
    node.wake()
    try:
        index = await asyncio.wait_for(fut, timeout)
    except TimeoutError:
        w.forget_read(ctx)
        raise Timeout("linearizable read timed out (no quorum?)") from None
    await wait_applied(node, index, timeout)
    return index


async def wait_applied(node: Node, index: int, timeout: float | None = None) -> None:
    if node.applied_index >= index:
        return
    fut = node.waiters.until_applied(index)
    try:
        await asyncio.wait_for(fut, timeout or node.cfg.request_timeout)
    except TimeoutError:
        raise Timeout(f"timed out waiting to apply index {index}") from None


async def wait_leader(node: Node, timeout: float = 10.0) -> int:
    if node.leader_id != NONE:
        return node.leader_id
    fut = node.waiters.until_leader()
    try:
        await asyncio.wait_for(fut, timeout)
    except TimeoutError:
        raise Timeout("no leader elected in time") from None
    return node.leader_id


class Waiters:
    __slots__ = ("_applied", "_ctx", "_leader", "_reads")

    def __init__(self) -> None:
        self._ctx = itertools.count(1)
        self._reads: dict[bytes, asyncio.Future[int]] = {}
        self._applied: list[tuple[int, asyncio.Future[None]]] = []
        self._leader: list[asyncio.Future[None]] = []

    # --- ReadIndex ----------------------------------------------------------------------

    def next_ctx(self, node_id: int) -> bytes:
        """A new read request tag: a counter and the member's id (unique in the cluster)."""
        return next(self._ctx).to_bytes(8, "big") + node_id.to_bytes(8, "big")

    def read(self, ctx: bytes) -> asyncio.Future[int]:
        """A future for the read index of the request tagged ``ctx``."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reads[ctx] = fut
        return fut

    def forget_read(self, ctx: bytes) -> None:
        self._reads.pop(ctx, None)

    def answer_reads(self, read_states: Iterable[ReadState]) -> None:
        for rs in read_states:
            fut = self._reads.pop(rs.request_ctx, None)
            if fut is not None and not fut.done():
                fut.set_result(rs.index)

    def fail_reads(self, err: BaseException) -> None:
        """Reads waiting on a read index asked as leader: no longer answered."""
        reads, self._reads = self._reads, {}
        for fut in reads.values():
            if not fut.done():
                fut.set_exception(err)

    # --- the applied index and the leader -----------------------------------------------

    def until_applied(self, index: int) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._applied.append((index, fut))
        return fut

    def applied(self, applied_index: int) -> None:
        """Release the waiters for indexes up to ``applied_index``."""
        if not self._applied:
            return
        keep: list[tuple[int, asyncio.Future[None]]] = []
        for idx, fut in self._applied:
            if idx <= applied_index:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((idx, fut))
        self._applied = keep

    def until_leader(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._leader.append(fut)
        return fut

    def leader_known(self) -> None:
        waiters, self._leader = self._leader, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def fail_all(self, err: BaseException) -> None:
        """Fail the reads and the applied-index waiters (the member stops serving)."""
        self.fail_reads(err)
        applied, self._applied = self._applied, []
        for _, fut in applied:
            if not fut.done():
                fut.set_exception(err)
