"""The static DuplicateKey check against its meaning: whatever branches run, a txn that passes
the check changes each key at most once (so one revision holds one change per key)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv import api
from raftkv.api import DeleteRangeRequest, PutRequest, RequestOp, TxnRequest
from raftkv.errors import DuplicateKey
from raftkv.state.mvcc import check_request

KEYS = [b"a", b"b", b"c"]
keys = st.sampled_from(KEYS)
leaf = st.one_of(
    st.builds(PutRequest, keys),
    st.builds(DeleteRangeRequest, keys),
    st.builds(DeleteRangeRequest, keys, st.sampled_from([b"b", b"c", api.ALL_KEYS])),
)
ops = st.recursive(
    leaf,
    lambda inner: st.builds(
        TxnRequest,
        st.just(()),
        st.lists(inner, max_size=3).map(tuple),
        st.lists(inner, max_size=3).map(tuple),
    ),
    max_leaves=8,
)


def covered(k: bytes, op: DeleteRangeRequest) -> bool:
    if not op.range_end:
        return k == op.key
    if op.range_end == api.ALL_KEYS:
        return k >= op.key
    return op.key <= k < op.range_end


def executions(branch: tuple[RequestOp, ...]) -> list[list[RequestOp]]:
    """Every list of leaf ops the branch can execute, over all choices of nested branches."""
    per_op: list[list[list[RequestOp]]] = []
    for op in branch:
        if isinstance(op, TxnRequest):
            per_op.append(executions(op.success) + executions(op.failure))
        else:
            per_op.append([[op]])
    return [list(itertools.chain.from_iterable(combo)) for combo in itertools.product(*per_op)]


def writes_a_key_twice(path: list[RequestOp]) -> bool:
    puts = [op.key for op in path if isinstance(op, PutRequest)]
    dels = [op for op in path if isinstance(op, DeleteRangeRequest)]
    return len(puts) != len(set(puts)) or any(covered(k, d) for k in puts for d in dels)


@settings(max_examples=400, deadline=None)
@given(st.lists(ops, max_size=4).map(tuple))
def test_accepted_txns_never_write_a_key_twice(branch: tuple[RequestOp, ...]) -> None:
    try:
        check_request(TxnRequest(success=branch), api.DEFAULT_LIMITS)
    except DuplicateKey:
        return
    for path in executions(branch):
        assert not writes_a_key_twice(path), path


def test_etcd_order_quirk_is_refused() -> None:
    """etcd accepts [txn(put k), txn(delete k)] (nested deletes are only checked against
    earlier nested puts); we refuse it in either order."""
    put_k = TxnRequest(success=(PutRequest(b"k"),))
    del_k = TxnRequest(success=(DeleteRangeRequest(b"k"),))
    for branch in ((put_k, del_k), (del_k, put_k)):
        try:
            check_request(TxnRequest(success=branch), api.DEFAULT_LIMITS)
        except DuplicateKey:
            continue
        raise AssertionError(f"accepted {branch}")


def test_exclusive_branches_of_one_nested_txn_may_touch_the_same_key() -> None:
    one = TxnRequest(success=(PutRequest(b"k"),), failure=(DeleteRangeRequest(b"k"),))
    check_request(TxnRequest(success=(one,)), api.DEFAULT_LIMITS)
    both = TxnRequest(success=(PutRequest(b"k"),), failure=(PutRequest(b"k"),))
    check_request(TxnRequest(success=(both,)), api.DEFAULT_LIMITS)
