"""One test per MVCC / txn rule (etcd v3 semantics)."""

from __future__ import annotations

import pytest

from raftkv import api
from raftkv.api import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    EventType,
    PutRequest,
    RangeRequest,
    SortOrder,
    SortTarget,
    TxnRequest,
    prefix_end,
)
from raftkv.errors import (
    Compacted,
    DuplicateKey,
    FutureRevision,
    InvalidArgument,
    KeyNotFound,
    LeaseNotFound,
    RequestTooLarge,
    TooManyOps,
)
from raftkv.state.fsm import KVStateMachine

from .helpers import Driver


def test_empty_store_is_at_revision_1_and_first_put_gets_2() -> None:
    d = Driver()
    assert d.fsm.revision == 1
    resp = d.put(b"a")
    assert resp.header.revision == 2
    assert d.get(b"a")[0].mod_revision == 2
    assert d.get(b"a")[0].create_revision == 2


def test_each_write_request_takes_exactly_one_revision() -> None:
    d = Driver()
    revs = [d.put(b"k%d" % i).header.revision for i in range(5)]
    assert revs == [2, 3, 4, 5, 6]


def test_delete_of_nothing_does_not_bump_revision() -> None:
    d = Driver()
    d.put(b"a")
    before = d.fsm.revision
    resp = d.ok(DeleteRangeRequest(b"zz", b"zzz"))
    assert isinstance(resp, api.DeleteRangeResponse)
    assert resp.deleted == 0
    assert d.fsm.revision == before
    assert resp.header.revision == before


def test_delete_range_takes_one_revision_and_reports_prev_kvs() -> None:
    d = Driver()
    for k in (b"a", b"b", b"c"):
        d.put(k, k + b"!")
    r = d.apply(DeleteRangeRequest(b"a", b"c", prev_kv=True))
    assert isinstance(r.response, api.DeleteRangeResponse)
    assert r.response.deleted == 2
    assert [kv.value for kv in r.response.prev_kvs] == [b"a!", b"b!"]
    assert d.fsm.revision == 5
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in r.events] == [
        (EventType.DELETE, b"a", 5),
        (EventType.DELETE, b"b", 5),
    ]
    assert [kv.key for kv in d.get(b"\0", b"\0")] == [b"c"]


def test_txn_with_several_writes_takes_one_revision_with_sub_revision_order() -> None:
    d = Driver()
    d.put(b"x")
    txn = TxnRequest(
        success=(PutRequest(b"b", b"1"), PutRequest(b"a", b"2"), DeleteRangeRequest(b"x"))
    )
    r = d.apply(txn)
    assert isinstance(r.response, api.TxnResponse)
    assert r.response.succeeded
    assert r.response.header.revision == 3 == d.fsm.revision
    # events keep the order of the ops (sub-revisions), not key order
    assert [(e.type, e.kv.key) for e in r.events] == [
        (EventType.PUT, b"b"),
        (EventType.PUT, b"a"),
        (EventType.DELETE, b"x"),
    ]
    assert {kv.mod_revision for kv in d.get(b"\0", b"\0")} == {3}


def test_txn_without_writes_does_not_bump_revision() -> None:
    d = Driver()
    d.put(b"a")
    r = d.ok(TxnRequest(success=(RangeRequest(b"a"), DeleteRangeRequest(b"nope"))))
    assert isinstance(r, api.TxnResponse)
    assert d.fsm.revision == 2
    assert r.header.revision == 2


def test_version_counts_changes_and_resets_on_delete() -> None:
    d = Driver()
    d.put(b"k")
    d.put(b"k")
    d.put(b"k")
    assert d.get(b"k")[0].version == 3
    d.ok(DeleteRangeRequest(b"k"))
    assert d.get(b"k") == []
    d.put(b"k")
    kv = d.get(b"k")[0]
    assert kv.version == 1
    assert kv.create_revision == kv.mod_revision == d.fsm.revision


def test_read_at_old_revision_sees_old_value() -> None:
    d = Driver()
    d.put(b"k", b"one")
    d.put(b"k", b"two")
    assert d.get(b"k", rev=2)[0].value == b"one"
    assert d.get(b"k", rev=3)[0].value == b"two"
    assert d.get(b"k", rev=1) == []


def test_compacted_and_future_revisions() -> None:
    d = Driver()
    for i in range(5):
        d.put(b"k", b"%d" % i)  # revisions 2..6
    d.ok(api.CompactionRequest(4))
    assert d.fsm.compact_revision == 4
    with pytest.raises(Compacted) as ei:
        d.get(b"k", rev=3)
    assert ei.value.revision == 4
    assert d.get(b"k", rev=4)[0].value == b"2"  # the compact revision itself stays readable
    with pytest.raises(FutureRevision):
        d.get(b"k", rev=7)
    assert isinstance(d.err(api.CompactionRequest(4)), Compacted)
    assert isinstance(d.err(api.CompactionRequest(3)), Compacted)
    assert isinstance(d.err(api.CompactionRequest(99)), FutureRevision)


def test_compaction_drops_deleted_keys_and_keeps_latest_live_version() -> None:
    d = Driver()
    d.put(b"gone")
    d.put(b"live", b"old")
    d.ok(DeleteRangeRequest(b"gone"))
    d.put(b"live", b"new")
    d.ok(api.CompactionRequest(d.fsm.revision))
    assert len(d.fsm.store) == 1  # the tombstoned key left the index
    assert d.get(b"live")[0].value == b"new"
    assert d.get(b"live")[0].version == 2  # version survives compaction


def test_duplicate_key_put_twice_in_txn() -> None:
    d = Driver()
    err = d.err(TxnRequest(success=(PutRequest(b"a", b"1"), PutRequest(b"a", b"2"))))
    assert isinstance(err, DuplicateKey)
    assert d.fsm.revision == 1


def test_duplicate_key_put_inside_delete_range() -> None:
    d = Driver()
    ops = (DeleteRangeRequest(b"a", b"c"), PutRequest(b"b"))
    assert isinstance(d.err(TxnRequest(success=ops)), DuplicateKey)
    # also when the delete range is in a nested txn
    nested = TxnRequest(success=(DeleteRangeRequest(b"a", api.ALL_KEYS),))
    assert isinstance(d.err(TxnRequest(success=(nested, PutRequest(b"z")))), DuplicateKey)
    # and checked on the failure branch too
    assert isinstance(d.err(TxnRequest(failure=ops)), DuplicateKey)


def test_overlapping_deletes_and_exclusive_nested_branches_are_allowed() -> None:
    d = Driver()
    d.put(b"b")
    ops = (
        DeleteRangeRequest(b"a", b"c"),
        DeleteRangeRequest(b"b"),
        TxnRequest(success=(PutRequest(b"x", b"then"),), failure=(PutRequest(b"x", b"else"),)),
    )
    r = d.ok(TxnRequest(success=ops))
    assert isinstance(r, api.TxnResponse)
    assert d.get(b"x")[0].value == b"then"
    assert d.get(b"b") == []


def test_nested_put_duplicating_outer_put_is_refused() -> None:
    d = Driver()
    ops = (PutRequest(b"k"), TxnRequest(failure=(PutRequest(b"k"),)))
    assert isinstance(d.err(TxnRequest(success=ops)), DuplicateKey)


def test_too_many_ops_default_and_configurable() -> None:
    d = Driver()
    ops = tuple(PutRequest(b"k%d" % i) for i in range(129))
    assert isinstance(d.err(TxnRequest(success=ops)), TooManyOps)
    assert d.ok(TxnRequest(success=ops[:128]))
    small = Driver(KVStateMachine(limits=api.Limits(max_txn_ops=2)))
    cmp = tuple(Compare(b"a", CompareTarget.VERSION, CompareResult.EQUAL, 0) for _ in range(3))
    assert isinstance(small.err(TxnRequest(compare=cmp)), TooManyOps)
    nested = TxnRequest(failure=tuple(PutRequest(b"n%d" % i) for i in range(3)))
    assert isinstance(small.err(TxnRequest(success=(nested,))), TooManyOps)


def test_request_too_large() -> None:
    d = Driver(KVStateMachine(limits=api.Limits(max_value_bytes=10, max_request_bytes=200)))
    assert isinstance(d.err(PutRequest(b"k", b"x" * 11)), RequestTooLarge)
    assert d.put(b"k", b"x" * 10).header.revision == 2  # at the limit is fine
    huge = TxnRequest(success=tuple(PutRequest(b"k%d" % i, b"123456789") for i in range(20)))
    assert isinstance(d.err(huge), RequestTooLarge)


def test_txn_is_atomic_when_a_later_op_fails() -> None:
    d = Driver()
    ops = (PutRequest(b"a", b"1"), PutRequest(b"b", b"2", lease=777))
    assert isinstance(d.err(TxnRequest(success=ops)), LeaseNotFound)
    assert d.fsm.revision == 1
    assert d.get(b"a") == []
    d.put(b"c")
    bad_read = (PutRequest(b"a"), RangeRequest(b"a", revision=99))
    assert isinstance(d.err(TxnRequest(success=bad_read)), FutureRevision)
    assert d.get(b"a") == []


def test_compares_choose_the_branch() -> None:
    d = Driver()
    d.put(b"k", b"v1")  # rev 2
    d.put(b"k", b"v2")  # rev 3, version 2

    def run(c: Compare) -> bool:
        r = d.ok(TxnRequest(compare=(c,)))
        assert isinstance(r, api.TxnResponse)
        return r.succeeded

    assert run(Compare(b"k", CompareTarget.VALUE, CompareResult.EQUAL, b"v2"))
    assert run(Compare(b"k", CompareTarget.VALUE, CompareResult.LESS, b"v3"))
    assert not run(Compare(b"k", CompareTarget.VALUE, CompareResult.GREATER, b"v3"))
    assert run(Compare(b"k", CompareTarget.VERSION, CompareResult.EQUAL, 2))
    assert run(Compare(b"k", CompareTarget.CREATE, CompareResult.EQUAL, 2))
    assert run(Compare(b"k", CompareTarget.MOD, CompareResult.GREATER, 2))
    assert run(Compare(b"k", CompareTarget.LEASE, CompareResult.EQUAL, 0))
    assert run(Compare(b"k", CompareTarget.MOD, CompareResult.NOT_EQUAL, 2))
    # a missing key: version 0, and a value compare is always false
    assert run(Compare(b"nope", CompareTarget.VERSION, CompareResult.EQUAL, 0))
    assert not run(Compare(b"nope", CompareTarget.VALUE, CompareResult.NOT_EQUAL, b"x"))
    # over a range every key must satisfy the compare
    d.put(b"kz", b"v0")
    assert not run(Compare(b"k", CompareTarget.VALUE, CompareResult.EQUAL, b"v2", b"l"))
    assert run(Compare(b"k", CompareTarget.VERSION, CompareResult.GREATER, 0, b"l"))
    bad = Compare(b"k", CompareTarget.VERSION, CompareResult.EQUAL, b"not an int")
    assert isinstance(d.err(TxnRequest(compare=(bad,))), InvalidArgument)


def test_failure_branch_runs_and_nested_compares_see_pre_txn_state() -> None:
    d = Driver()
    inner = TxnRequest(
        compare=(Compare(b"a", CompareTarget.VERSION, CompareResult.EQUAL, 0),),
        success=(PutRequest(b"b", b"a-was-absent"),),
        failure=(PutRequest(b"b", b"a-existed"),),
    )
    outer = TxnRequest(
        compare=(Compare(b"a", CompareTarget.VERSION, CompareResult.GREATER, 0),),
        success=(),
        failure=(PutRequest(b"a"), inner),
    )
    r = d.ok(outer)
    assert isinstance(r, api.TxnResponse)
    assert not r.succeeded
    assert d.get(b"b")[0].value == b"a-was-absent"


def test_range_inside_txn_sees_earlier_writes_of_the_txn() -> None:
    d = Driver()
    r = d.ok(TxnRequest(success=(PutRequest(b"a", b"new"), RangeRequest(b"a"))))
    assert isinstance(r, api.TxnResponse)
    rr = r.responses[1]
    assert isinstance(rr, api.RangeResponse)
    assert [kv.value for kv in rr.kvs] == [b"new"]


def test_put_prev_kv_ignore_value_ignore_lease() -> None:
    d = Driver()
    assert isinstance(d.err(PutRequest(b"k", ignore_value=True)), KeyNotFound)
    assert isinstance(d.err(PutRequest(b"k", ignore_lease=True)), KeyNotFound)
    assert isinstance(d.err(PutRequest(b"k", b"v", ignore_value=True)), InvalidArgument)
    assert isinstance(d.err(PutRequest(b"k", lease=5)), LeaseNotFound)
    lease = d.ok(api.LeaseGrantRequest(60))
    assert isinstance(lease, api.LeaseGrantResponse)
    d.put(b"k", b"v1", lease=lease.id)
    r = d.ok(PutRequest(b"k", b"v2", prev_kv=True, ignore_lease=True))
    assert isinstance(r, api.PutResponse)
    assert r.prev_kv is not None and r.prev_kv.value == b"v1"
    assert d.get(b"k")[0].lease == lease.id
    d.ok(PutRequest(b"k", ignore_value=True))  # drops the lease, keeps the value
    kv = d.get(b"k")[0]
    assert (kv.value, kv.lease, kv.version) == (b"v2", 0, 3)
    assert isinstance(d.err(PutRequest(b"", b"x")), InvalidArgument)


def test_range_limit_count_sort_and_filters() -> None:
    d = Driver()
    for k, v in ((b"a", b"3"), (b"b", b"1"), (b"c", b"2"), (b"d", b"0")):
        d.put(k, v)  # mod revisions 2..5
    d.put(b"b", b"9")  # b: version 2, mod 6
    r = d.fsm.range(RangeRequest(b"a", b"d", limit=2))
    assert ([kv.key for kv in r.kvs], r.more, r.count) == ([b"a", b"b"], True, 3)
    r = d.fsm.range(RangeRequest(b"a", api.ALL_KEYS, sort_target=SortTarget.VALUE))
    assert [kv.value for kv in r.kvs] == [b"0", b"2", b"3", b"9"]  # ascending by default
    r = d.fsm.range(RangeRequest(b"a", api.ALL_KEYS, sort_order=SortOrder.DESCEND))
    assert [kv.key for kv in r.kvs] == [b"d", b"c", b"b", b"a"]
    r = d.fsm.range(
        RangeRequest(
            b"a", api.ALL_KEYS, sort_target=SortTarget.MOD, sort_order=SortOrder.DESCEND, limit=1
        )
    )
    assert ([kv.key for kv in r.kvs], r.more) == ([b"b"], True)
    r = d.fsm.range(RangeRequest(b"a", api.ALL_KEYS, sort_target=SortTarget.VERSION))
    assert [kv.key for kv in r.kvs] == [b"a", b"c", b"d", b"b"]  # ties stay in key order
    r = d.fsm.range(RangeRequest(b"a", api.ALL_KEYS, min_mod_revision=4, max_mod_revision=5))
    assert ([kv.key for kv in r.kvs], r.count) == ([b"c", b"d"], 4)  # count before filters
    r = d.fsm.range(RangeRequest(b"a", api.ALL_KEYS, min_create_revision=3, max_create_revision=3))
    assert [kv.key for kv in r.kvs] == [b"b"]
    r = d.fsm.range(RangeRequest(b"a", api.ALL_KEYS, keys_only=True))
    assert {kv.value for kv in r.kvs} == {b""} and len(r.kvs) == 4
    r = d.fsm.range(RangeRequest(b"a", api.ALL_KEYS, count_only=True))
    assert (r.kvs, r.count) == ((), 4)


def test_prefix_end_and_range_end_conventions() -> None:
    assert prefix_end(b"abc") == b"abd"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == api.ALL_KEYS
    assert prefix_end(b"") == api.ALL_KEYS
    d = Driver()
    for k in (b"a", b"a\xff", b"ab", b"b", b"\xff\x01"):
        d.put(k)
    assert [kv.key for kv in d.get(b"a", prefix_end(b"a"))] == [b"a", b"ab", b"a\xff"]
    assert [kv.key for kv in d.get(b"ab")] == [b"ab"]
    assert [kv.key for kv in d.get(b"b", api.ALL_KEYS)] == [b"b", b"\xff\x01"]
    assert d.get(b"b", b"a") == []  # empty interval


def test_events_history_matches_apply_events() -> None:
    d = Driver()
    produced = []
    produced += d.apply(PutRequest(b"a", b"1")).events
    produced += d.apply(TxnRequest(success=(PutRequest(b"b"), PutRequest(b"a", b"2")))).events
    produced += d.apply(DeleteRangeRequest(b"a", b"c")).events
    assert d.fsm.events(2) == produced
    assert d.fsm.events(3, 3) == produced[1:3]
    d.ok(api.CompactionRequest(3))
    with pytest.raises(Compacted):
        d.fsm.events(3)
    assert d.fsm.events(4) == produced[3:]
