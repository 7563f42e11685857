"""The state machine against a plain-Python reference model over random operation sequences.

The model keeps, per key, the full list of (revision, version-or-None) and recomputes every
answer by brute force.  It never compacts its own history: compaction must leave every read
at or above the compact revision unchanged and make every read below it fail with Compacted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from raftkv import api
from raftkv.api import (
    ALL_KEYS,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    Event,
    EventType,
    KeyValue,
    PutRequest,
    RangeRequest,
    TxnRequest,
    prefix_end,
)
from raftkv.errors import (
    Compacted,
    DuplicateKey,
    FutureRevision,
    LeaseExists,
    LeaseNotFound,
    RaftKVError,
)
from raftkv.state.fsm import KVStateMachine

from .helpers import Driver

KEYS = [b"a", b"ab", b"b", b"ba", b"c", b"\xff"]
VALUES = [b"", b"x", b"y", b"zz"]
LEASE_IDS = [1, 2, 3]

keys = st.sampled_from(KEYS)
ranges = st.one_of(
    keys.map(lambda k: (k, b"")),
    keys.map(lambda k: (k, prefix_end(k))),
    keys.map(lambda k: (k, ALL_KEYS)),
    st.tuples(keys, keys),
)
puts = st.builds(
    PutRequest,
    keys,
    st.sampled_from(VALUES),
    st.sampled_from([0, 0, *LEASE_IDS]),
    prev_kv=st.booleans(),
)
deletes = st.builds(lambda r, p: DeleteRangeRequest(r[0], r[1], p), ranges, st.booleans())
reads = st.builds(lambda r: RangeRequest(r[0], r[1]), ranges)
compares = st.one_of(
    st.builds(
        lambda k, res, v: Compare(k, CompareTarget.VALUE, res, v),
        keys,
        st.sampled_from(CompareResult),
        st.sampled_from(VALUES),
    ),
    st.builds(
        lambda r, t, res, v: Compare(r[0], t, res, v, r[1]),
        ranges,
        st.sampled_from([t for t in CompareTarget if t != CompareTarget.VALUE]),
        st.sampled_from(CompareResult),
        st.integers(0, 8),
    ),
)
branch = st.lists(st.one_of(puts, deletes, reads), max_size=4).map(tuple)
txns = st.builds(TxnRequest, st.lists(compares, max_size=2).map(tuple), branch, branch)


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    if not end:
        return key == start
    if end == ALL_KEYS:
        return key >= start
    return start <= key < end


@dataclass
class Model:
    rev: int = 1
    compact: int = 0
    hist: dict[bytes, list[tuple[int, KeyValue | None]]] = field(default_factory=dict)
    leases: set[int] = field(default_factory=set)

    def at(self, key: bytes, rev: int) -> KeyValue | None:
        found = None
        for r, kv in self.hist.get(key, []):
            if r <= rev:
                found = kv
        return found

    def range(self, start: bytes, end: bytes, rev: int) -> list[KeyValue]:
        out = []
        for k in sorted(self.hist):
            kv = self.at(k, rev) if in_range(k, start, end) else None
            if kv is not None:
                out.append(kv)
        return out

    def compare(self, c: Compare, rev: int) -> bool:
        kvs = self.range(c.key, c.range_end, rev)
        if not kvs:
            if c.target == CompareTarget.VALUE:
                return False
            kvs = [KeyValue(c.key)]
        attr = {
            CompareTarget.VALUE: "value",
            CompareTarget.VERSION: "version",
            CompareTarget.CREATE: "create_revision",
            CompareTarget.MOD: "mod_revision",
            CompareTarget.LEASE: "lease",
        }[c.target]
        ops = {
            CompareResult.EQUAL: lambda a, b: a == b,
            CompareResult.NOT_EQUAL: lambda a, b: a != b,
            CompareResult.LESS: lambda a, b: a < b,
            CompareResult.GREATER: lambda a, b: a > b,
        }
        return all(ops[c.result](getattr(kv, attr), c.value) for kv in kvs)

    # writes at self.rev + 1; the caller bumps rev if anything changed
    def put(self, req: PutRequest, events: list[Event]) -> None:
        new_rev = self.rev + 1
        prev = self.at(req.key, new_rev)
        if prev is None:
            kv = KeyValue(req.key, req.value, new_rev, new_rev, 1, req.lease)
        else:
            kv = KeyValue(
                req.key, req.value, prev.create_revision, new_rev, prev.version + 1, req.lease
            )
        self.hist.setdefault(req.key, []).append((new_rev, kv))
        events.append(Event(EventType.PUT, kv, prev))

    def delete(self, start: bytes, end: bytes, events: list[Event]) -> None:
        new_rev = self.rev + 1
        for kv in self.range(start, end, new_rev):
            self.hist[kv.key].append((new_rev, None))
            events.append(Event(EventType.DELETE, KeyValue(kv.key, mod_revision=new_rev), kv))

    @staticmethod
    def has_duplicates(ops: tuple[api.RequestOp, ...]) -> bool:
        put_keys = [op.key for op in ops if isinstance(op, PutRequest)]
        dels = [(op.key, op.range_end) for op in ops if isinstance(op, DeleteRangeRequest)]
        if len(set(put_keys)) != len(put_keys):
            return True
        return any(in_range(k, s, e) for k in put_keys for s, e in dels)


class StateMachineVsModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.d = Driver()
        self.m = Model()
        self.last_rev = 1

    def expect(self, req: api.Request, events: list[Event], error: type | None = None) -> None:
        r = self.d.apply(req)
        if error is not None:
            assert isinstance(r.error, error), (r.error, r.response)
            assert r.events == ()
            return
        assert r.error is None, r.error
        assert list(r.events) == events
        if events:
            self.m.rev += 1
        assert r.revision == self.m.rev

    @rule(req=puts)
    def put(self, req: PutRequest) -> None:
        if req.lease and req.lease not in self.m.leases:
            self.expect(req, [], LeaseNotFound)
            return
        events: list[Event] = []
        self.m.put(req, events)
        self.expect(req, events)

    @rule(req=deletes)
    def delete(self, req: DeleteRangeRequest) -> None:
        events: list[Event] = []
        self.m.delete(req.key, req.range_end, events)
        self.expect(req, events)

    @rule(req=txns)
    def txn(self, req: TxnRequest) -> None:
        m = self.m
        if m.has_duplicates(req.success) or m.has_duplicates(req.failure):
            self.expect(req, [], DuplicateKey)
            return
        ok = all(m.compare(c, m.rev) for c in req.compare)
        ops = req.success if ok else req.failure
        if any(isinstance(op, PutRequest) and op.lease not in (0, *m.leases) for op in ops):
            self.expect(req, [], LeaseNotFound)
            return
        events: list[Event] = []
        reads: list[list[KeyValue]] = []
        for op in ops:
            if isinstance(op, PutRequest):
                m.put(op, events)
            elif isinstance(op, DeleteRangeRequest):
                m.delete(op.key, op.range_end, events)
            elif isinstance(op, RangeRequest):
                reads.append(m.range(op.key, op.range_end, m.rev + 1))
        r = self.d.apply(req)
        assert r.error is None, r.error
        assert isinstance(r.response, api.TxnResponse)
        assert r.response.succeeded == ok
        got_reads = [list(x.kvs) for x in r.response.responses if isinstance(x, api.RangeResponse)]
        assert got_reads == reads
        assert list(r.events) == events
        if events:
            m.rev += 1
        assert r.response.header.revision == m.rev == r.revision

    @rule(lease_id=st.sampled_from(LEASE_IDS))
    def grant(self, lease_id: int) -> None:
        if lease_id in self.m.leases:
            self.expect(api.LeaseGrantRequest(60, lease_id), [], LeaseExists)
            return
        self.m.leases.add(lease_id)
        self.expect(api.LeaseGrantRequest(60, lease_id), [])

    @rule(lease_id=st.sampled_from(LEASE_IDS))
    def revoke(self, lease_id: int) -> None:
        if lease_id not in self.m.leases:
            self.expect(api.LeaseRevokeRequest(lease_id), [], LeaseNotFound)
            return
        self.m.leases.remove(lease_id)
        events: list[Event] = []
        new_rev = self.m.rev + 1
        for kv in self.m.range(b"\0", ALL_KEYS, self.m.rev):
            if kv.lease == lease_id:
                self.m.hist[kv.key].append((new_rev, None))
                events.append(Event(EventType.DELETE, KeyValue(kv.key, mod_revision=new_rev), kv))
        self.expect(api.LeaseRevokeRequest(lease_id), events)

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        rev = data.draw(st.integers(0, self.m.rev + 1))
        if rev > self.m.rev:
            self.expect(api.CompactionRequest(rev), [], FutureRevision)
        elif rev <= self.m.compact:
            self.expect(api.CompactionRequest(rev), [], Compacted)
        else:
            self.m.compact = rev
            self.expect(api.CompactionRequest(rev), [])

    @rule(data=st.data(), r=ranges, limit=st.integers(0, 3))
    def read(self, data: st.DataObject, r: tuple[bytes, bytes], limit: int) -> None:
        rev = data.draw(st.integers(1, self.m.rev + 1))
        req = RangeRequest(r[0], r[1], limit=limit, revision=rev)
        try:
            resp = self.d.fsm.range(req)
        except RaftKVError as e:
            if rev > self.m.rev:
                assert isinstance(e, FutureRevision)
            else:
                assert isinstance(e, Compacted) and rev < self.m.compact
                assert e.revision == self.m.compact
            return
        assert self.m.compact <= rev <= self.m.rev
        want = self.m.range(r[0], r[1], rev)
        assert resp.count == len(want)
        shown = want[:limit] if limit else want
        assert list(resp.kvs) == shown
        assert resp.more == (len(shown) < len(want))

    @rule(
        r=ranges,
        sort_target=st.sampled_from(api.SortTarget),
        order=st.sampled_from(api.SortOrder),
        limit=st.integers(0, 3),
        min_mod=st.integers(0, 6),
        max_create=st.sampled_from([0, 0, 4, 8]),
        keys_only=st.booleans(),
    )
    def read_sorted(
        self,
        r: tuple[bytes, bytes],
        sort_target: api.SortTarget,
        order: api.SortOrder,
        limit: int,
        min_mod: int,
        max_create: int,
        keys_only: bool,
    ) -> None:
        req = RangeRequest(
            r[0],
            r[1],
            limit=limit,
            sort_order=order,
            sort_target=sort_target,
            keys_only=keys_only,
            min_mod_revision=min_mod,
            max_create_revision=max_create,
        )
        resp = self.d.fsm.range(req)
        every = self.m.range(r[0], r[1], self.m.rev)
        want = [
            kv
            for kv in every
            if kv.mod_revision >= min_mod and (not max_create or kv.create_revision <= max_create)
        ]
        attr = {
            api.SortTarget.KEY: lambda kv: kv.key,
            api.SortTarget.VERSION: lambda kv: kv.version,
            api.SortTarget.CREATE: lambda kv: kv.create_revision,
            api.SortTarget.MOD: lambda kv: kv.mod_revision,
            api.SortTarget.VALUE: lambda kv: kv.value,
        }[sort_target]
        if order == api.SortOrder.DESCEND:
            want = sorted(want, key=attr, reverse=True)  # stable: ties keep key order
        elif order == api.SortOrder.ASCEND or sort_target != api.SortTarget.KEY:
            want = sorted(want, key=attr)
        shown = want[:limit] if limit else want
        if keys_only:
            shown = [
                KeyValue(kv.key, b"", kv.create_revision, kv.mod_revision, kv.version, kv.lease)
                for kv in shown
            ]
        assert list(resp.kvs) == shown
        assert resp.count == len(every)
        assert resp.more == (len(shown) < len(want))

    @rule(ids=st.lists(st.sampled_from([*LEASE_IDS, 9]), max_size=3, unique=True))
    def expire(self, ids: list[int]) -> None:
        """A LeaseExpire entry revokes each listed lease that exists, one revision each."""
        r = self.d.apply(api.LeaseExpireRequest(tuple(ids)))
        assert r.error is None
        assert isinstance(r.response, api.LeaseExpireResponse)
        assert r.response.revoked == tuple(i for i in ids if i in self.m.leases)
        for lease_id in r.response.revoked:
            self.m.leases.remove(lease_id)
            new_rev = self.m.rev + 1
            doomed = [
                kv for kv in self.m.range(b"\0", ALL_KEYS, self.m.rev) if kv.lease == lease_id
            ]
            for kv in doomed:
                self.m.hist[kv.key].append((new_rev, None))
            if doomed:
                self.m.rev = new_rev
        assert r.revision == self.m.rev

    @precondition(lambda self: self.m.compact < self.m.rev)
    @rule()
    def history_events(self) -> None:
        """Rebuilt events of the retained history agree with the model's history."""
        evs = self.d.fsm.events(self.m.compact + 1)
        for e in evs:
            r = e.kv.mod_revision
            assert self.m.at(e.kv.key, r) == (e.kv if e.type == EventType.PUT else None)
            assert self.m.at(e.kv.key, r - 1) == e.prev_kv

    @rule()
    def snapshot_restore(self) -> None:
        old = self.d.fsm
        fresh = KVStateMachine()
        fresh.restore(old.snapshot())
        assert fresh.hash() == old.hash()
        assert fresh.snapshot() == old.snapshot()
        self.d.fsm = fresh  # carry on with the restored copy

    @invariant()
    def revision_matches_and_never_decreases(self) -> None:
        assert self.d.fsm.revision == self.m.rev
        assert self.d.fsm.revision >= self.last_rev
        self.last_rev = self.d.fsm.revision
        assert self.d.fsm.compact_revision == self.m.compact

    @invariant()
    def current_state_matches(self) -> None:
        got = list(self.d.fsm.range(RangeRequest(b"\0", ALL_KEYS)).kvs)
        assert got == self.m.range(b"\0", ALL_KEYS, self.m.rev)
        for lease_id in self.m.leases:
            ttl = self.d.fsm.lessor.get(lease_id)
            attached = sorted(kv.key for kv in got if kv.lease == lease_id)
            assert sorted(ttl.keys) == attached


TestStateMachineVsModel = StateMachineVsModel.TestCase
TestStateMachineVsModel.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
