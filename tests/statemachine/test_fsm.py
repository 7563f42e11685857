"""The fsm envelope: exactly-once writes, typed error results, snapshots, hash, codec."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv import api
from raftkv.api import PutRequest, RangeRequest, TxnRequest
from raftkv.errors import (
    ApplyFailed,
    CorruptionError,
    DuplicateKey,
    InvalidArgument,
    RemoteProtocolError,
    RequestTooLarge,
)
from raftkv.protocol import codec
from raftkv.state.fsm import DedupConfig, KVStateMachine

from .helpers import Driver

# --- exactly-once ---------------------------------------------------------------------------


def test_retried_write_returns_the_original_result_without_applying_twice() -> None:
    d = Driver()
    first = d.apply(PutRequest(b"k", b"v1", prev_kv=True), client_id=7, seq=1, now=10.0)
    d.apply(PutRequest(b"k", b"other"), client_id=8, seq=1, now=11.0)
    rev = d.fsm.revision
    again = d.apply(PutRequest(b"k", b"v1", prev_kv=True), client_id=7, seq=1, now=12.0)
    assert again.duplicate and not first.duplicate
    assert again.response == first.response
    assert again.events == ()
    assert d.fsm.revision == rev
    assert d.get(b"k")[0].value == b"other"
    # the same seq from another client is a different write
    other = d.apply(PutRequest(b"k", b"v1"), client_id=9, seq=1, now=12.0)
    assert not other.duplicate and d.fsm.revision == rev + 1


def test_retried_failed_write_returns_the_same_error() -> None:
    d = Driver()
    bad = TxnRequest(success=(PutRequest(b"a"), PutRequest(b"a")))
    first = d.apply(bad, client_id=1, seq=5)
    again = d.apply(bad, client_id=1, seq=5)
    assert isinstance(first.error, DuplicateKey)
    assert again.duplicate and type(again.error) is DuplicateKey


def test_results_per_client_are_bounded() -> None:
    d = Driver(KVStateMachine(dedup=DedupConfig(max_results_per_client=3)))
    for seq in range(1, 6):
        d.apply(PutRequest(b"k%d" % seq), client_id=1, seq=seq)
    rev = d.fsm.revision
    assert d.apply(PutRequest(b"k5"), client_id=1, seq=5).duplicate
    assert d.apply(PutRequest(b"k3"), client_id=1, seq=3).duplicate
    too_old = d.apply(PutRequest(b"k1"), client_id=1, seq=1)
    assert isinstance(too_old.error, InvalidArgument)  # forgotten: refused, never re-applied
    assert d.fsm.revision == rev


def test_sessions_expire_with_leader_time_and_are_bounded_in_number() -> None:
    d = Driver(
        KVStateMachine(dedup=DedupConfig(session_ttl=100.0, max_clients=2, max_clock_step=1e6))
    )
    d.apply(PutRequest(b"a"), client_id=1, seq=1, now=0.0)
    d.apply(PutRequest(b"b"), client_id=2, seq=1, now=50.0)
    assert d.apply(PutRequest(b"a"), client_id=1, seq=1, now=99.0).duplicate
    d.apply(PutRequest(b"c"), client_id=3, seq=1, now=120.0)  # evicts client 2 (oldest, cap 2)
    assert not d.apply(PutRequest(b"b"), client_id=2, seq=1, now=121.0).duplicate
    # client 3 last seen at 120: kept until leader time passes 220
    assert d.apply(PutRequest(b"c"), client_id=3, seq=1, now=219.0).duplicate
    assert not d.apply(PutRequest(b"c"), client_id=3, seq=1, now=400.0).duplicate


def test_a_leader_with_a_skewed_clock_cannot_expire_sessions() -> None:
    """A retry must not apply twice because leadership passed through a member whose wall
    clock runs 790 s ahead (more than the 600 s session TTL)."""
    d = Driver(KVStateMachine())
    first = d.apply(PutRequest(b"k", b"v1", prev_kv=True), client_id=7, seq=1, now=1000.0, term=2)
    d.apply(PutRequest(b"x"), client_id=8, seq=1, now=1001.0, term=2)
    for i in range(5):  # the skewed leader of term 3 stamps its own, far-ahead clock
        d.apply(PutRequest(b"y%d" % i), client_id=9, seq=i + 1, now=1790.0 + i, term=3)
    again = d.apply(PutRequest(b"k", b"v1", prev_kv=True), client_id=7, seq=1, now=1796.0, term=3)
    assert again.duplicate and again.response == first.response
    assert d.get(b"k")[0].version == 1, "applied once"


def test_a_clock_jump_within_a_term_advances_sessions_by_at_most_one_step() -> None:
    d = Driver(KVStateMachine(dedup=DedupConfig(session_ttl=100.0, max_clock_step=10.0)))
    d.apply(PutRequest(b"a"), client_id=1, seq=1, now=0.0)
    d.apply(PutRequest(b"b"), client_id=2, seq=1, now=10_000.0)  # a stepped clock: +10 s only
    assert d.apply(PutRequest(b"a"), client_id=1, seq=1, now=10_001.0).duplicate


def test_sessions_still_expire_as_log_time_passes() -> None:
    d = Driver(KVStateMachine(dedup=DedupConfig(session_ttl=100.0, max_clock_step=10.0)))
    d.apply(PutRequest(b"a"), client_id=1, seq=1, now=0.0)
    for i in range(1, 13):  # 120 s of a steady leader clock, in 10 s steps
        d.apply(PutRequest(b"b"), client_id=2, seq=i, now=10.0 * i)
    assert not d.apply(PutRequest(b"a"), client_id=1, seq=1, now=121.0).duplicate


def test_log_time_survives_a_snapshot() -> None:
    d = Driver(KVStateMachine(dedup=DedupConfig(session_ttl=100.0, max_clock_step=10.0)))
    d.apply(PutRequest(b"a"), client_id=1, seq=1, now=0.0, term=4)
    d.apply(PutRequest(b"b"), client_id=2, seq=1, now=5.0, term=4)
    restored = KVStateMachine(dedup=DedupConfig(session_ttl=100.0, max_clock_step=10.0))
    restored.restore(d.fsm.snapshot())
    assert restored.snapshot() == d.fsm.snapshot()


def test_an_unexpected_exception_in_apply_is_a_deterministic_result() -> None:
    results = []
    for _ in range(2):  # two members applying the same entries
        d = Driver()
        lid = d.ok(api.LeaseGrantRequest(ttl=60, id=777))
        assert isinstance(lid, api.LeaseGrantResponse)

        def boom(req: Any) -> Any:
            raise ZeroDivisionError("bug")

        d.fsm._handlers[api.LeaseRevokeRequest] = boom
        bad = d.apply(api.LeaseRevokeRequest(777))
        good = d.apply(PutRequest(b"after", b"v"))
        results.append((str(bad.error), type(bad.error), good.error, d.fsm.hash(), d.fsm.revision))
    assert results[0] == results[1]
    assert results[0][1] is ApplyFailed
    assert results[0][2] is None, "the next entry still applies"


def test_an_entry_carrying_nan_from_an_old_log_is_an_error_result() -> None:
    """The entry of the reported outage: a checkpoint with remaining TTL NaN, already in a
    log.  Replaying it now gives an error result, and the lease stays readable."""
    d = Driver()
    d.ok(api.LeaseGrantRequest(ttl=60, id=777))
    cmd = codec.to_plain(api.Command(api.LeaseCheckpointRequest((api.LeaseCheckpoint(777, 1.0),))))
    cmd[1][1][0][2] = float("nan")  # what the old codec let through
    d.index += 1
    r = d.fsm.apply(d.index, msgpack.packb(cmd, use_bin_type=True), 1)
    assert r.error is not None and "not finite" in str(r.error)
    ttl = d.fsm.time_to_live(api.LeaseTimeToLiveRequest(777), now=0.0)
    assert ttl.ttl > 0


def test_reads_and_internal_commands_are_not_deduplicated() -> None:
    d = Driver()
    d.put(b"k")
    r1 = d.apply(RangeRequest(b"k"), client_id=1, seq=1)
    d.put(b"k", b"new")
    r2 = d.apply(RangeRequest(b"k"), client_id=1, seq=1)
    assert not r2.duplicate and r1.response != r2.response


# --- error results --------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_entry_is_an_error_result_and_apply_goes_on(data: bytes) -> None:
    d = Driver()
    d.index += 1
    r = d.fsm.apply(d.index, data)
    if data:
        assert isinstance(r.error, RemoteProtocolError | InvalidArgument)
    assert d.put(b"k").header.revision == 2


def test_oversized_entry_and_empty_entry() -> None:
    d = Driver(KVStateMachine(limits=api.Limits(max_request_bytes=100)))
    d.index += 1
    assert isinstance(d.fsm.apply(d.index, b"x" * 101).error, RequestTooLarge)
    d.index += 1
    r = d.fsm.apply(d.index, b"")  # a new leader's empty entry
    assert r.error is None and r.response is None and d.fsm.applied_index == d.index


def test_apply_out_of_order_is_a_broken_invariant() -> None:
    d = Driver()
    d.put(b"k")
    with pytest.raises(AssertionError):
        d.fsm.apply(d.index, codec.encode_command(api.Command(PutRequest(b"k"))))
    with pytest.raises(AssertionError):
        d.fsm.apply(d.index - 1, codec.encode_command(api.Command(PutRequest(b"k"))))
    # a gap is fine: the node does not hand configuration-change entries to the fsm
    r = d.fsm.apply(d.index + 2, codec.encode_command(api.Command(PutRequest(b"k"))))
    assert r.error is None and d.fsm.applied_index == d.index + 2


# --- snapshot and hash ----------------------------------------------------------------------


def _busy_fsm() -> Driver:
    d = Driver()
    lid = d.ok(api.LeaseGrantRequest(30, 5))
    assert isinstance(lid, api.LeaseGrantResponse)
    for i in range(20):
        d.apply(PutRequest(b"k%02d" % (i % 7), b"v%d" % i), client_id=1 + i % 3, seq=i, now=i)
    d.put(b"leased", lease=5)
    d.ok(api.DeleteRangeRequest(b"k03"))
    d.ok(api.CompactionRequest(10))
    d.ok(api.LeaseCheckpointRequest((api.LeaseCheckpoint(5, 12.5),)))
    return d


def test_snapshot_round_trip_is_exact_and_behaves_the_same() -> None:
    a = _busy_fsm()
    data = a.fsm.snapshot()
    b = Driver(KVStateMachine())
    b.fsm.restore(data)
    b.index = b.fsm.applied_index
    assert b.fsm.snapshot() == data
    assert (b.fsm.hash(), b.fsm.revision, b.fsm.compact_revision, b.fsm.applied_index) == (
        a.fsm.hash(),
        a.fsm.revision,
        a.fsm.compact_revision,
        a.fsm.applied_index,
    )
    assert b.fsm.lessor.get(5).keys == {b"leased"}
    assert b.fsm.events(11) == a.fsm.events(11)
    # the dedup table survived: a retry is still answered from it on both
    for d in (a, b):
        r = d.apply(PutRequest(b"k05", b"v5"), client_id=3, seq=5, now=30.0)
        assert r.duplicate
        d.apply(api.LeaseRevokeRequest(5), now=31.0)
    assert a.fsm.snapshot() == b.fsm.snapshot()


def test_corrupt_snapshot_is_detected_and_state_is_untouched() -> None:
    a = _busy_fsm()
    data = a.fsm.snapshot()
    b = Driver()
    b.put(b"mine")
    before = b.fsm.hash()
    for bad in (
        data[:-1],
        data[:40] + bytes([data[40] ^ 1]) + data[41:],
        data[:-5] + bytes([data[-5] ^ 0x80]) + data[-4:],
        b"",
        b"RKVFSM1\n" + b"\0" * 10,
    ):
        with pytest.raises(CorruptionError):
            b.fsm.restore(bad)
    assert b.fsm.hash() == before
    # a well-formed checksum over a bad structure is still refused
    from raftkv.state.fsm import SNAPSHOT_MAGIC

    body = msgpack.packb([1, 2, 3], use_bin_type=True)
    import hashlib

    forged = SNAPSHOT_MAGIC + hashlib.blake2b(body, digest_size=32).digest() + body
    with pytest.raises(CorruptionError):
        b.fsm.restore(forged)


def test_hash_equal_for_same_log_and_differs_on_divergence() -> None:
    a, b = _busy_fsm(), _busy_fsm()
    assert a.fsm.hash() == b.fsm.hash()
    a.put(b"x", b"1")
    b.put(b"x", b"2")
    assert a.fsm.hash() != b.fsm.hash()


# --- codec ----------------------------------------------------------------------------------

HDR = api.ResponseHeader(1, 2, 3, 4)
KV = api.KeyValue(b"k", b"v", 2, 3, 1, 9)
SAMPLES: list[Any] = [
    KV,
    api.Event(api.EventType.DELETE, KV, None),
    HDR,
    RangeRequest(b"a", b"b", 3, 4, api.SortOrder.DESCEND, api.SortTarget.MOD, True, True),
    api.RangeResponse(HDR, (KV, KV), True, 7),
    PutRequest(b"k", b"v", 3, True, False, True),
    api.PutResponse(HDR, KV),
    api.DeleteRangeRequest(b"a", b"\0", True),
    api.DeleteRangeResponse(HDR, 2, (KV,)),
    api.Compare(b"k", api.CompareTarget.MOD, api.CompareResult.LESS, 5, b"z"),
    TxnRequest(
        (api.Compare(b"k", api.CompareTarget.VALUE, api.CompareResult.EQUAL, b"v"),),
        (PutRequest(b"a"), TxnRequest(failure=(RangeRequest(b"x"),))),
        (api.DeleteRangeRequest(b"q"),),
    ),
    api.TxnResponse(HDR, True, (api.PutResponse(HDR), api.TxnResponse(HDR))),
    api.CompactionRequest(5, True),
    api.CompactionResponse(HDR),
    api.LeaseGrantRequest(10, 3),
    api.LeaseGrantResponse(HDR, 3, 10),
    api.LeaseRevokeRequest(3),
    api.LeaseRevokeResponse(HDR),
    api.LeaseTimeToLiveRequest(3, True),
    api.LeaseTimeToLiveResponse(HDR, 3, 5, 10, (b"a", b"b")),
    api.LeaseLeasesRequest(),
    api.LeaseLeasesResponse(HDR, (1, 2)),
    api.LeaseKeepAliveRequest(3),
    api.LeaseKeepAliveResponse(HDR, 3, 10),
    api.LeaseCheckpoint(3, 1.5),
    api.LeaseCheckpointRequest((api.LeaseCheckpoint(3, 1.5),)),
    api.LeaseCheckpointResponse(HDR),
    api.LeaseExpireRequest((1, 2)),
    api.LeaseExpireResponse(HDR, (1,)),
    api.Limits(1, 2, 3, 4),
    api.Command(PutRequest(b"k"), 1, 2, 3.5),
    api.Member(5, "n5", "127.0.0.1:2380", "127.0.0.1:2379", True),
    api.MemberListRequest(),
    api.MemberListResponse(HDR, (api.Member(5, "n5", "127.0.0.1:2380"),)),
    api.MemberAddRequest("n6", "127.0.0.1:2382", "", True),
    api.MemberAddResponse(HDR, api.Member(6, "n6", "127.0.0.1:2382"), ()),
    api.MemberRemoveRequest(6),
    api.MemberPromoteRequest(6),
    api.MemberUpdateRequest(6, "127.0.0.1:2384"),
    api.MembersResponse(HDR, ()),
    api.StatusRequest(with_hash=True),
    api.StatusResponse(
        HDR,
        2,
        "n2",
        1,
        2,
        4,
        10,
        10,
        10,
        3,
        0,
        4096,
        api.Hash64((1 << 64) - 1),
        False,
        "leader",
        "0.1.0",
    ),
    api.HealthRequest(),
    api.HealthResponse(False, "no leader"),
    api.HashKVRequest(3),
    api.HashKVResponse(HDR, api.Hash64(1 << 63), 3, 0),
    api.MoveLeaderRequest(2),
    api.MoveLeaderResponse(HDR, 2),
    api.SnapshotRequest(),
    api.SnapshotChunk(data=b"page"),
    api.WatchProgressRequest(),
    api.WatchProgressResponse(2),
    api.AlarmMember(2, api.AlarmType.CORRUPT),
    api.AlarmRequest(api.AlarmAction.DEACTIVATE, 2, api.AlarmType.CORRUPT),
    api.AlarmResponse(HDR, (api.AlarmMember(2, api.AlarmType.CORRUPT),)),
    api.DefragmentRequest(),
    api.DefragmentResponse(HDR, 8192, 4096),
]


def test_every_registered_type_round_trips() -> None:
    assert {type(s) for s in SAMPLES} == set(codec.TAGS)
    for s in SAMPLES:
        data = codec.encode(s)
        assert codec.decode(type(s), data) == s
        assert codec.from_plain_any(codec.unpack(data)) == s


def test_decoding_wrong_shapes_raises_remote_protocol_error() -> None:
    bad_plain = [
        [12],  # PutRequest without its key
        [12, "text-not-bytes"],
        [12, b"k", b"v", True],  # bool where an int belongs
        [10, b"k", b"", 0, 0, 7],  # sort order out of range
        [17, [], [[99]]],  # unknown op in a txn branch
        [17, [], [[19, 5]]],  # a CompactionRequest is not a RequestOp
        [12, b"k", b"v", 0, False, False, False, "extra"],
        {"a": 1},
    ]
    for plain in bad_plain:
        with pytest.raises(RemoteProtocolError):
            codec.from_plain_any(plain)
    with pytest.raises(RemoteProtocolError):
        codec.decode(PutRequest, codec.encode(RangeRequest(b"k")))


def test_older_peer_may_omit_trailing_defaults() -> None:
    assert codec.from_plain(PutRequest, [12, b"k"]) == PutRequest(b"k")


def test_error_round_trip() -> None:
    from raftkv.errors import Compacted, LeaseNotFound

    for err in (Compacted(42), LeaseNotFound(7), DuplicateKey("dup")):
        back = codec.decode_error(codec.encode_error(err))
        assert type(back) is type(err) and back.details() == err.details()


def test_deeply_nested_txn_is_refused_the_same_way_at_any_stack_depth() -> None:
    t = TxnRequest(success=(PutRequest(b"k"),))
    for _ in range(120):
        t = TxnRequest(success=(t,))
    data = codec.encode_command(api.Command(t))

    def apply_at_depth(n: int) -> type:
        if n:
            return apply_at_depth(n - 1)
        r = KVStateMachine().apply(1, data)
        return type(r.error)

    assert apply_at_depth(0) is RemoteProtocolError
    assert apply_at_depth(700) is RemoteProtocolError
