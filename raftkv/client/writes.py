"""Exactly-once write tags: the ``seq`` numbers of one client, handed out through a window.

The server keeps the last 64 results per client (:class:`raftkv.state.fsm.DedupConfig`), so
a new write waits while its seq would be ``size`` or more ahead of the oldest write still in
flight; otherwise a write delayed by retries could be evicted from the dedup table before it
applies and fail with ``InvalidArgument``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["WriteWindow"]


class WriteWindow:
    """The seqs of one client: :meth:`next` hands out the next one once it is within
    ``size`` of the oldest still in flight, and releases it when the write is done."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.last = 0
        """The last seq handed out."""
        self._inflight: set[int] = set()
        self._cond: asyncio.Condition | None = None  # made on the loop that first uses it

    @contextlib.asynccontextmanager
    async def next(self) -> AsyncIterator[int]:
        """The next seq, held for the duration of the ``async with`` block."""
        if self._cond is None:
            self._cond = asyncio.Condition()
        cond = self._cond
        async with cond:
            await cond.wait_for(
                lambda: not self._inflight or self.last + 1 - min(self._inflight) < self.size
            )
            self.last += 1
            seq = self.last
            self._inflight.add(seq)
        try:
            yield seq
        finally:
            self._inflight.discard(seq)
            async with cond:
                cond.notify_all()
