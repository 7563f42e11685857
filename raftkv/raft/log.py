"""The Raft log: what is stable (in :class:`LogStorage`) plus the unstable tail not yet persisted.

Mirrors etcd-io/raft's ``raftLog`` and ``unstable``.  The application persists the unstable
part from a ``Ready`` and the core then marks it stable (``stable_to``).
"""

from __future__ import annotations

from raftkv.errors import Compacted, CorruptionError, Unavailable
from raftkv.raft.storage import LogStorage, limit_size
from raftkv.raft.types import Entry, Snapshot


class LogLost(CorruptionError):
    """The leader says entries are committed that this member's log does not hold.

    The leader only ever sends a follower a commit index up to what that follower has
    acknowledged (``min(match, committed)``), so a commit beyond our last index means entries
    we acknowledged are gone: a truncated WAL, a data dir rolled back to an older copy, a disk
    that lost acknowledged writes.  etcd panics here ("tocommit is out of range ... was the
    raft log corrupted, truncated, or lost?").  The core raises this and changes nothing; the
    application must stop this member from participating (it must not vote, acknowledge or
    serve reads) until an operator replaces it with an empty one.
    """

    def __init__(self, to_commit: int, last_index: int) -> None:
        super().__init__(
            f"commit index {to_commit} from the leader is beyond the last log index "
            f"{last_index}: entries this member acknowledged are missing (was the raft log "
            "truncated, rolled back or lost?)"
        )
        self.to_commit = to_commit
        self.last_index = last_index


class Unstable:
    """Entries and a snapshot not yet written to stable storage."""

    __slots__ = ("entries", "offset", "snapshot")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        # Invariant: entries[i].index == offset + i
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        if self.snapshot is not None:
            return self.snapshot.meta.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.meta.index
        return None

    def maybe_term(self, i: int) -> int | None:
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.meta.index == i:
                return self.snapshot.meta.term
            return None
        last = self.maybe_last_index()
        if last is None or i > last:
            return None
        return self.entries[i - self.offset].term

    def stable_to(self, i: int, t: int) -> None:
        gt = self.maybe_term(i)
        if gt is None:
            return
        # Only mark stable if the entry still matches (it may have been overwritten by a
        # newer leader's entries while the application was persisting).
        if gt == t and i >= self.offset:
            del self.entries[: i + 1 - self.offset]
            self.offset = i + 1

    def stable_snap_to(self, i: int) -> None:
        if self.snapshot is not None and self.snapshot.meta.index == i:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.meta.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: list[Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            # Replace the whole unstable tail (and anything stable from ``after`` on).
            self.offset = after
            self.entries = list(ents)
        else:
            del self.entries[after - self.offset :]
            self.entries.extend(ents)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    """Stable log (storage) + unstable tail, with the commit and apply cursors."""

    def __init__(self, storage: LogStorage, max_committed_size_per_ready: int) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        # Invariant: applied <= committed <= last_index()
        self.committed = first - 1
        self.applied = first - 1
        self.max_committed_size_per_ready = max_committed_size_per_ready

    # --- indices and terms ---------------------------------------------------------------

    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def term(self, i: int) -> int:
        """Term of entry ``i``; raises :class:`Compacted` / :class:`Unavailable` outside the log."""
        dummy = self.first_index() - 1
        if i < dummy:
            raise Compacted(dummy)
        if i > self.last_index():
            raise Unavailable(f"index {i} > last index {self.last_index()}")
        t = self.unstable.maybe_term(i)
        if t is not None:
            return t
        return self.storage.term(i)

    def zero_term_on_err(self, i: int) -> int:
        try:
            return self.term(i)
        except (Compacted, Unavailable):
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, i: int, t: int) -> bool:
        try:
            return self.term(i) == t
        except (Compacted, Unavailable):
            return False

    def is_up_to_date(self, lasti: int, term: int) -> bool:
        """Raft 5.4.1: is a log ending at (lasti, term) at least as up to date as ours?"""
        last_term = self.last_term()
        return term > last_term or (term == last_term and lasti >= self.last_index())

    # --- appending ------------------------------------------------------------------------

    def maybe_append(
        self,
        index: int,
        log_term: int,
        committed: int,
        ents: tuple[Entry, ...],
        check_match: bool = True,
    ) -> int | None:
        """Follower side of AppendEntries.  Returns the last new index, or None on mismatch."""
        if check_match and not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        ci = self.find_conflict(ents)
        if ci != 0:
            if ci <= self.committed:
                raise AssertionError(
                    f"entry {ci} conflicts with committed entry (committed {self.committed})"
                )
            self.append(list(ents[ci - index - 1 :]))
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, ents: list[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        if after < self.committed:
            raise AssertionError(f"after {after} is out of range [committed {self.committed}]")
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents: tuple[Entry, ...]) -> int:
        """Index of the first entry that is new or conflicts with ours; 0 if none."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest index <= ``index`` whose term is <= ``term``, and that term.

        This is the fast-backtracking hint: the leader can skip every entry of a term the
        follower does not share in one round trip instead of one index at a time.
        """
        while index > 0:
            try:
                our_term = self.term(index)
            except (Compacted, Unavailable):
                return index, 0
            if our_term <= term:
                return index, our_term
            index -= 1
        return 0, 0

    # --- commit / apply -------------------------------------------------------------------

    def commit_to(self, to_commit: int) -> None:
        if self.committed < to_commit:
            if self.last_index() < to_commit:
                raise LogLost(to_commit, self.last_index())
            self.committed = to_commit

    def maybe_commit(self, max_index: int, term: int) -> bool:
        """Raft 5.4.2: only an entry of the current term is committed by counting replicas."""
        if max_index > self.committed and self.zero_term_on_err(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def applied_to(self, i: int) -> None:
        if i == 0:
            return
        if self.committed < i or i < self.applied:
            raise AssertionError(
                f"applied {i} is out of range [prev applied {self.applied}, "
                f"committed {self.committed}]"
            )
        self.applied = i

    def has_next_committed_ents(self) -> bool:
        off = max(self.applied + 1, self.first_index())
        return self.committed + 1 > off

    def next_committed_ents(self) -> list[Entry]:
        off = max(self.applied + 1, self.first_index())
        if self.committed + 1 > off:
            return self.slice(off, self.committed + 1, self.max_committed_size_per_ready)
        return []

    def unstable_entries(self) -> list[Entry]:
        return list(self.unstable.entries)

    def has_pending_snapshot(self) -> bool:
        return self.unstable.snapshot is not None

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def stable_to(self, i: int, t: int) -> None:
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i: int) -> None:
        self.unstable.stable_snap_to(i)

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.meta.index
        self.unstable.restore(snap)

    # --- reading entries ------------------------------------------------------------------

    def entries(self, i: int, max_size: int | None = None) -> list[Entry]:
        if i > self.last_index():
            return []
        return self.slice(i, self.last_index() + 1, max_size)

    def all_entries(self) -> list[Entry]:
        try:
            return self.entries(self.first_index())
        except Compacted:
            # A race with compaction; retry once from the new first index.
            return self.entries(self.first_index())

    def slice(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)``, limited to ``max_size`` bytes (at least one entry)."""
        if lo > hi:
            raise AssertionError(f"invalid slice {lo} > {hi}")
        fi = self.first_index()
        if lo < fi:
            raise Compacted(fi - 1)
        if hi > self.last_index() + 1:
            raise Unavailable(f"slice [{lo}, {hi}) out of bound [{fi}, {self.last_index()}]")
        if lo == hi:
            return []
        ents: list[Entry] = []
        uoff = self.unstable.offset
        if lo < uoff:
            stored = self.storage.entries(lo, min(hi, uoff), max_size)
            # The storage may have returned fewer entries because of the size limit.
            if len(stored) < min(hi, uoff) - lo:
                return stored
            ents = stored
        if hi > uoff:
            ents = ents + self.unstable.slice(max(lo, uoff), hi)
        return limit_size(ents, max_size)
