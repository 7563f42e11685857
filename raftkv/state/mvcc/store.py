"""The multi-version key space: etcd's ``treeIndex`` + revision-keyed history, in memory.

Every key maps (in a ``SortedDict``, so ranges are ordered scans) to its history: the main
revisions at which it changed, in ascending order, and the :class:`~raftkv.api.KeyValue` written
at each — or ``None`` for a delete (a tombstone).  A tombstone ends a *generation*; a later put
starts a new one with ``version`` 1 and a new ``create_revision``.  Alongside, ``_changes`` keeps
for every main revision the keys it changed in sub-revision order, so the events of any
uncompacted revision can be rebuilt in order (watch catch-up).

Revision rules (etcd's): an empty store is at revision 1; each write request or txn that
changes at least one key takes the next main revision; a request that changes nothing (a
delete that matched nothing, a txn without effective writes) does not bump it.  The store
itself does not decide when a request starts or ends: the applier calls :meth:`KVStore.put` and
:meth:`KVStore.delete` with ``rev = store.revision + 1`` and then :meth:`KVStore.commit`.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from typing import Any

from sortedcontainers import SortedDict

from raftkv.api import (
    ALL_KEYS,
    Event,
    EventType,
    KeyValue,
    RangeRequest,
    RangeResponse,
    ResponseHeader,
    SortOrder,
    SortTarget,
)
from raftkv.errors import Compacted, CorruptionError, FutureRevision, InvalidArgument


class _History:
    """The changes of one key: ``revs[i]`` is the main revision of ``kvs[i]`` (None: delete)."""

    __slots__ = ("kvs", "revs")

    def __init__(self) -> None:
        # Invariant: revs strictly ascending; len(revs) == len(kvs) >= 1 while indexed.
        self.revs: list[int] = []
        self.kvs: list[KeyValue | None] = []

    def at(self, rev: int) -> KeyValue | None:
        """The live version at ``rev`` (None if absent or deleted at that revision)."""
        revs = self.revs
        if rev >= revs[-1]:
            return self.kvs[-1]
        i = bisect_right(revs, rev) - 1
        return self.kvs[i] if i >= 0 else None


_SORT_KEYS = {
    SortTarget.VERSION: lambda kv: kv.version,
    SortTarget.CREATE: lambda kv: kv.create_revision,
    SortTarget.MOD: lambda kv: kv.mod_revision,
    SortTarget.VALUE: lambda kv: kv.value,
}


class KVStore:
    """In-memory MVCC key-value store (deterministic; no clocks, no I/O)."""

    def __init__(self) -> None:
        self._index: SortedDict = SortedDict()  # bytes -> _History
        # Invariant: compact_revision < revision, except both may be equal after compact(rev).
        self._rev = 1
        self._compact_rev = 0
        self._changes: dict[int, tuple[bytes, ...]] = {}  # main rev -> keys in sub order

    # --- state ----------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The revision of the last write (1 for an empty store)."""
        return self._rev

    @property
    def compact_revision(self) -> int:
        """Reads below this revision raise Compacted (0: never compacted)."""
        return self._compact_rev

    def __len__(self) -> int:
        """Number of keys with any retained history (live or tombstoned)."""
        return len(self._index)

    # --- reads ----------------------------------------------------------------------------

    def _keys(self, key: bytes, end: bytes) -> Iterator[bytes]:
        if not end:
            if key in self._index:
                yield key
            return
        if end == ALL_KEYS:
            yield from self._index.irange(minimum=key)
        elif end > key:
            yield from self._index.irange(key, end, inclusive=(True, False))

    def check_revision(self, rev: int, current: int | None = None) -> int:
        """Resolve a requested read revision (<= 0: ``current``) or raise Compacted /
        FutureRevision, as etcd does."""
        cur = self._rev if current is None else current
        if rev <= 0:
            return cur
        if rev > cur:
            raise FutureRevision(f"required revision {rev} is a future revision (now {cur})")
        if rev < self._compact_rev:
            raise Compacted(self._compact_rev)
        return rev

    def kvs(self, key: bytes, end: bytes = b"", rev: int | None = None) -> list[KeyValue]:
        """Live versions of the keys in the range at ``rev`` (default: latest, including
        writes of the request being applied), in key order.  No revision checks."""
        index = self._index
        out: list[KeyValue] = []
        if rev is None or rev >= self._rev + 1:
            for k in self._keys(key, end):
                kv = index[k].kvs[-1]
                if kv is not None:
                    out.append(kv)
        else:
            for k in self._keys(key, end):
                kv = index[k].at(rev)
                if kv is not None:
                    out.append(kv)
        return out

    def get(self, key: bytes, rev: int | None = None) -> KeyValue | None:
        h: _History | None = self._index.get(key)
        if h is None:
            return None
        return h.kvs[-1] if rev is None else h.at(rev)

    def range(self, req: RangeRequest, current: int | None = None) -> RangeResponse:
        """etcd's Range: ``count`` is the number of keys in the range at the revision (before
        the min/max revision filters, as etcd); with a limit, ``more`` says whether keys were
        left out after filtering and sorting.  ``current`` is the read view's revision (a txn
        that already wrote reads at ``revision + 1``)."""
        if not req.key:
            raise InvalidArgument("range: key is empty")
        cur = self._rev if current is None else current
        rev = self.check_revision(req.revision, cur)
        kvs = self.kvs(req.key, req.range_end, rev)
        count = len(kvs)
        header = ResponseHeader(revision=cur)
        if req.count_only:
            return RangeResponse(header, (), False, count)
        if req.min_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision >= req.min_mod_revision]
        if req.max_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision <= req.max_mod_revision]
        if req.min_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision >= req.min_create_revision]
        if req.max_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision <= req.max_create_revision]
        order = req.sort_order
        target = req.sort_target
        if target != SortTarget.KEY and order == SortOrder.NONE:
            order = SortOrder.ASCEND  # etcd: a non-key target sorts ascending by default
        if target == SortTarget.KEY:
            if order == SortOrder.DESCEND:
                kvs.reverse()
        elif order != SortOrder.NONE:
            # Stable sort over key order: ties stay in key order, so every member agrees.
            kvs.sort(key=_SORT_KEYS[target], reverse=order == SortOrder.DESCEND)
        more = False
        if req.limit > 0 and len(kvs) > req.limit:
            kvs = kvs[: req.limit]
            more = True
        if req.keys_only:
            kvs = [
                KeyValue(kv.key, b"", kv.create_revision, kv.mod_revision, kv.version, kv.lease)
                for kv in kvs
            ]
        return RangeResponse(header, tuple(kvs), more, count)

    # --- writes ---------------------------------------------------------------------------

    def put(
        self, rev: int, key: bytes, value: bytes, lease: int
    ) -> tuple[KeyValue, KeyValue | None]:
        """Write ``key`` at main revision ``rev``; returns ``(new, previous live version)``."""
        h: _History | None = self._index.get(key)
        if h is None:
            h = _History()
            self._index[key] = h
            prev = None
        else:
            if h.revs[-1] >= rev:
                raise AssertionError(f"key {key!r} changed twice at revision {rev}")
            prev = h.kvs[-1]
        if prev is None:
            kv = KeyValue(key, value, rev, rev, 1, lease)
        else:
            kv = KeyValue(key, value, prev.create_revision, rev, prev.version + 1, lease)
        h.revs.append(rev)
        h.kvs.append(kv)
        return kv, prev

    def delete(self, rev: int, key: bytes) -> KeyValue | None:
        """Tombstone ``key`` at ``rev`` if it is live; returns the deleted version or None."""
        h: _History | None = self._index.get(key)
        if h is None or h.kvs[-1] is None:
            return None
        if h.revs[-1] >= rev:
            raise AssertionError(f"key {key!r} changed twice at revision {rev}")
        prev = h.kvs[-1]
        h.revs.append(rev)
        h.kvs.append(None)
        return prev

    def commit(self, rev: int, changed: list[bytes]) -> None:
        """End a write request: if it changed keys, ``rev`` becomes the store revision."""
        if changed:
            # Invariant: exactly one main revision per write request that changed something.
            assert rev == self._rev + 1, (rev, self._rev)
            self._rev = rev
            self._changes[rev] = tuple(changed)

    def compact(self, rev: int) -> None:
        """Drop history below ``rev``: each key keeps its latest version at or below ``rev``
        (or nothing if that is a delete); reads at ``rev`` or later are unchanged.  Raises
        FutureRevision above the current revision and Compacted at or below the last
        compaction (etcd)."""
        if rev > self._rev:
            raise FutureRevision(f"compaction revision {rev} is a future revision")
        if rev <= self._compact_rev:
            raise Compacted(self._compact_rev)
        index = self._index
        dead: list[bytes] = []
        for key, h in index.items():
            revs = h.revs
            if len(revs) == 1 and h.kvs[0] is not None:
                continue
            i = bisect_right(revs, rev) - 1
            if i < 0:
                continue
            if h.kvs[i] is None:
                i += 1
            if i:
                del revs[:i]
                del h.kvs[:i]
                if not revs:
                    dead.append(key)
        for key in dead:
            del index[key]
        for r in range(self._compact_rev + 1, rev + 1):
            self._changes.pop(r, None)
        self._compact_rev = rev

    # --- history --------------------------------------------------------------------------

    def events(self, start: int, end: int | None = None) -> list[Event]:
        """The events of revisions ``start..end`` (inclusive; default: up to the current
        revision) in revision and sub-revision order.  Compacted if ``start`` is at or below
        the compact revision (its previous versions may be gone)."""
        if start <= self._compact_rev:
            raise Compacted(self._compact_rev)
        last = self._rev if end is None else min(end, self._rev)
        out: list[Event] = []
        for r in range(max(start, 2), last + 1):
            for key in self._changes.get(r, ()):
                h = self._index[key]
                i = bisect_left(h.revs, r)
                kv = h.kvs[i]
                prev = h.kvs[i - 1] if i > 0 else None
                if kv is None:
                    out.append(Event(EventType.DELETE, KeyValue(key, mod_revision=r), prev))
                else:
                    out.append(Event(EventType.PUT, kv, prev))
        return out

    # --- persistence ----------------------------------------------------------------------

    def hash_into(self, h: Any) -> None:
        """Feed every retained version, in key and revision order, to hashlib object ``h``."""
        h.update(b"rev%d/%d;" % (self._rev, self._compact_rev))
        for key, hist in self._index.items():
            h.update(b"k%d:" % len(key))
            h.update(key)
            for rev, kv in zip(hist.revs, hist.kvs, strict=True):
                if kv is None:
                    h.update(b"d%d;" % rev)
                else:
                    h.update(
                        b"p%d,%d,%d,%d,%d:"
                        % (rev, kv.create_revision, kv.version, kv.lease, len(kv.value))
                    )
                    h.update(kv.value)

    def hash(self) -> int:
        """A 64-bit hash over keys, values and revisions (like etcd's HashKV)."""
        h = hashlib.blake2b(digest_size=8)
        self.hash_into(h)
        return int.from_bytes(h.digest(), "big")

    def to_plain(self) -> list[Any]:
        keys = [
            [
                key,
                [
                    [
                        r,
                        None
                        if kv is None
                        else [kv.value, kv.create_revision, kv.version, kv.lease],
                    ]
                    for r, kv in zip(h.revs, h.kvs, strict=True)
                ],
            ]
            for key, h in self._index.items()
        ]
        changes = [[r, list(ks)] for r, ks in sorted(self._changes.items())]
        return [self._rev, self._compact_rev, keys, changes]

    @classmethod
    def from_plain(cls, plain: Any) -> KVStore:
        """Inverse of :meth:`to_plain`; CorruptionError if the structure is wrong."""
        try:
            rev, compact_rev, keys, changes = plain
            store = cls()
            store._rev = int(rev)
            store._compact_rev = int(compact_rev)
            items = []
            for key, versions in keys:
                h = _History()
                for r, v in versions:
                    h.revs.append(r)
                    if v is None:
                        h.kvs.append(None)
                    else:
                        value, create, version, lease = v
                        h.kvs.append(KeyValue(key, value, create, r, version, lease))
                if not h.revs:
                    raise ValueError("empty history")
                items.append((bytes(key), h))
            store._index = SortedDict(items)
            store._changes = {int(r): tuple(ks) for r, ks in changes}
        except (TypeError, ValueError) as e:
            raise CorruptionError(f"bad mvcc snapshot: {e}") from None
        return store
