"""Snapshot policy: when a member snapshots its state, and recording it off the Ready loop.

The state is captured between two Readys (inline for small states, by a forked child that
sees a copy-on-write image for large ones); writing the file and compacting the log run in
a background task.  The payload format is :func:`raftkv.server.membership.node_snapshot`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from raftkv.errors import RaftError, StorageError
from raftkv.raft import ConfState
from raftkv.server.membership import node_snapshot

if TYPE_CHECKING:
    from raftkv.server.node import Node

log = logging.getLogger("raftkv.server.node")


class Snapshotter:
    """One member's snapshots: ``index`` is the last one taken (or under way)."""

    def __init__(self, node: Node, index: int) -> None:
        self.node = node
        self.index = index
        self.running = False
        self.task: asyncio.Task[None] | None = None
        self.child: int | None = None
        """The pid of a forked child writing a snapshot, while it runs."""

    def kill(self) -> None:
        """Stop a running child at once (the member is stopping)."""
        if self.child is not None:
            with contextlib.suppress(OSError):
                os.kill(self.child, 9)

    async def maybe_snapshot(self) -> None:
        """Snapshot when enough entries were applied; recording it never blocks this loop.

        The state is captured right here, between two Readys: small states are serialised
        inline, large ones (``fork_snapshot_keys`` and up) by a forked child that sees a
        copy-on-write image of this instant.  Writing the file and compacting the log then
        run in a background task while the Ready loop keeps committing and applying.
        """
        n = self.node
        if self.running or n.applied_index - self.index < n.cfg.snapshot_count:
            return
        index = n.applied_index
        # Commit-only Readys are not persisted (they need no fsync); make the commit index on
        # disk cover the snapshot first, or a restart would find a snapshot above its commit.
        # Done here, in the Ready loop, so it is ordered with every other hard-state write.
        if n.storage.hard_state.commit < index:
            await n.storage.save(n.rn.hard_state(), [])
        self.running = True
        self.index = index  # do not trigger again while this one runs
        conf = n.conf_state
        data: bytes | None = None
        child: tuple[int, Path] | None = None
        if len(n.fsm.store) >= n.cfg.fork_snapshot_keys and hasattr(os, "fork"):
            child = self._fork()
        else:
            data = node_snapshot(n.fsm, n.members)
        self.task = asyncio.create_task(self._record(index, conf, data, child))

    def _fork(self) -> tuple[int, Path]:
        n = self.node
        tmp = n.cfg.data_dir / f"snap-child-{os.getpid()}-{n.applied_index}.tmp"
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; it never returns
            code = 0
            try:
                tmp.write_bytes(node_snapshot(n.fsm, n.members))
            except BaseException:
                code = 1
            os._exit(code)
        self.child = pid
        return pid, tmp

    async def _record(
        self, index: int, conf: ConfState, data: bytes | None, child: tuple[int, Path] | None
    ) -> None:
        n = self.node
        try:
            if child is not None:
                pid, tmp = child
                loop = asyncio.get_running_loop()
                _, status = await loop.run_in_executor(None, os.waitpid, pid, 0)
                self.child = None
                try:
                    if os.waitstatus_to_exitcode(status) != 0:
                        raise OSError(f"snapshot child exited with status {status}")
                    data = await asyncio.to_thread(tmp.read_bytes)
                finally:
                    with contextlib.suppress(OSError):
                        tmp.unlink()
            assert data is not None
            await n.storage.create_snapshot(index, conf, data)
            compact_to = index - n.cfg.snapshot_catchup_entries
            if compact_to > n.storage.first_index():
                with contextlib.suppress(RaftError):
                    await n.storage.compact(compact_to)
            log.info("snapshot taken", extra={"index": index})
        except RaftError:
            pass
        except OSError as e:
            log.warning("snapshot failed, will retry: %s", e)
            self.index = 0
        except StorageError as e:
            log.error("snapshot failed: %s", e)
        finally:
            self.running = False
