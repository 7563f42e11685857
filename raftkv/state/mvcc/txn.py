"""Request validation and compare evaluation, as etcd does them before applying.

:func:`check_request` is the static part (sizes, empty keys, flag conflicts, txn op counts,
keys written twice in one txn); it depends only on the request.  :func:`compare_ok` evaluates
one :class:`~raftkv.api.Compare` against the store at a given revision.
"""

from __future__ import annotations

from raftkv.api import (
    ALL_KEYS,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    KeyValue,
    Limits,
    PutRequest,
    RangeRequest,
    RequestOp,
    TxnRequest,
)
from raftkv.errors import DuplicateKey, InvalidArgument, RequestTooLarge, TooManyOps
from raftkv.state.mvcc.store import KVStore


def check_request(req: RequestOp, limits: Limits) -> None:
    """Raise the error etcd would give before applying ``req`` (InvalidArgument,
    RequestTooLarge, TooManyOps, DuplicateKey)."""
    if isinstance(req, PutRequest):
        _check_put(req, limits)
    elif isinstance(req, RangeRequest):
        _check_key(req.key, limits)
        if req.limit < 0:
            raise InvalidArgument("range: limit is negative")
    elif isinstance(req, DeleteRangeRequest):
        _check_key(req.key, limits)
    else:
        _check_txn(req, limits)
        _check_intervals(req.success)
        _check_intervals(req.failure)


def _check_key(key: bytes, limits: Limits) -> None:
    if not key:
        raise InvalidArgument("key is not provided")
    if len(key) > limits.max_key_bytes:
        raise RequestTooLarge(f"key of {len(key)} bytes exceeds {limits.max_key_bytes}")


def _check_put(req: PutRequest, limits: Limits) -> None:
    _check_key(req.key, limits)
    if len(req.value) > limits.max_value_bytes:
        raise RequestTooLarge(f"value of {len(req.value)} bytes exceeds {limits.max_value_bytes}")
    if req.ignore_value and req.value:
        raise InvalidArgument("value is provided with ignore_value")
    if req.ignore_lease and req.lease:
        raise InvalidArgument("lease is provided with ignore_lease")
    if req.lease < 0:
        raise InvalidArgument("lease id is negative")


def _check_txn(txn: TxnRequest, limits: Limits) -> None:
    n = limits.max_txn_ops
    if len(txn.compare) > n or len(txn.success) > n or len(txn.failure) > n:
        raise TooManyOps(f"too many operations in txn request (max {n} per list)")
    for c in txn.compare:
        _check_key(c.key, limits)
        if c.target == CompareTarget.VALUE:
            if not isinstance(c.value, bytes):
                raise InvalidArgument("a VALUE compare needs a bytes value")
        elif not isinstance(c.value, int):
            raise InvalidArgument(f"a {c.target.name} compare needs an int value")
    for op in (*txn.success, *txn.failure):
        if isinstance(op, TxnRequest):
            _check_txn(op, limits)
        else:
            check_request(op, limits)


def _in_range(key: bytes, start: bytes, end: bytes) -> bool:
    if not end:
        return key == start
    if end == ALL_KEYS:
        return key >= start
    return start <= key < end


def _check_intervals(ops: tuple[RequestOp, ...]) -> tuple[set[bytes], list[tuple[bytes, bytes]]]:
    """etcd's ``checkIntervals``: within one branch, no key may be put twice, and no key may be
    both put and covered by a delete range (at this level or in a nested txn).  Deletes may
    overlap each other; the then/else branches of one nested txn may put the same key, since
    only one of them runs.  Returns this branch's (puts, delete ranges).

    Stricter than etcd in one place: etcd checks a nested txn's puts only against the deletes
    of the nested txns *before* it, so ``[txn(put k), txn(delete k)]`` slips through and writes
    ``k`` twice in one revision.  Here every nested txn's puts are checked against the deletes
    of all the other nested txns, so for every choice of branches each key changes at most
    once per txn."""
    level_dels = [(op.key, op.range_end) for op in ops if isinstance(op, DeleteRangeRequest)]
    nested: list[tuple[set[bytes], set[bytes], list[tuple[bytes, bytes]]]] = []
    for op in ops:
        if isinstance(op, TxnRequest):
            puts_then, dels_then = _check_intervals(op.success)
            puts_else, dels_else = _check_intervals(op.failure)
            nested.append((puts_then, puts_else, dels_then + dels_else))

    def covered(k: bytes, dels: list[tuple[bytes, bytes]]) -> bool:
        return any(_in_range(k, s, e) for s, e in dels)

    puts: set[bytes] = set()
    for i, (puts_then, puts_else, _) in enumerate(nested):
        others = level_dels + [d for j, n in enumerate(nested) if j != i for d in n[2]]
        for k in sorted(puts_then):  # sorted: the same error message on every member
            if k in puts or covered(k, others):
                raise DuplicateKey(f"duplicate key given in txn request: {k!r}")
        for k in sorted(puts_else):
            if (k in puts and k not in puts_then) or covered(k, others):
                raise DuplicateKey(f"duplicate key given in txn request: {k!r}")
        puts |= puts_then | puts_else
    all_dels = level_dels + [d for n in nested for d in n[2]]
    for op in ops:
        if isinstance(op, PutRequest):
            if op.key in puts or covered(op.key, all_dels):
                raise DuplicateKey(f"duplicate key given in txn request: {op.key!r}")
            puts.add(op.key)
    return puts, all_dels


def _compare_kv(c: Compare, kv: KeyValue) -> bool:
    actual: bytes | int
    if c.target == CompareTarget.VALUE:
        actual = kv.value
    elif c.target == CompareTarget.VERSION:
        actual = kv.version
    elif c.target == CompareTarget.CREATE:
        actual = kv.create_revision
    elif c.target == CompareTarget.MOD:
        actual = kv.mod_revision
    else:
        actual = kv.lease
    want = c.value
    if type(actual) is not type(want):
        return False
    r = c.result
    if r == CompareResult.EQUAL:
        return actual == want
    if r == CompareResult.NOT_EQUAL:
        return actual != want
    if r == CompareResult.LESS:
        return actual < want  # type: ignore[operator]
    return actual > want  # type: ignore[operator]


def compare_ok(store: KVStore, c: Compare, rev: int) -> bool:
    """etcd's ``applyCompare``: every key in the range at ``rev`` must satisfy ``c``; with no
    key, a VALUE compare is false and the others compare against zeros."""
    kvs = store.kvs(c.key, c.range_end, rev)
    if not kvs:
        if c.target == CompareTarget.VALUE:
            return False
        return _compare_kv(c, KeyValue(c.key))
    return all(_compare_kv(c, kv) for kv in kvs)
