"""Leases: replicated operations through the fsm, and the leader-local clock (checkpoint,
promote, renew, expiry rate limit) driven by explicit ``now`` values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv import api
from raftkv.api import EventType, LeaseGrantRequest, LeaseRevokeRequest
from raftkv.errors import InvalidArgument, LeaseExists, LeaseNotFound, NotLeader
from raftkv.state.fsm import KVStateMachine
from raftkv.state.lease import LeaseConfig, Lessor

from .helpers import Driver


def grant(d: Driver, ttl: int, lease_id: int = 0) -> int:
    r = d.ok(LeaseGrantRequest(ttl, lease_id))
    assert isinstance(r, api.LeaseGrantResponse)
    return r.id


def test_grant_auto_ids_and_lease_exists() -> None:
    d = Driver()
    assert grant(d, 10, 1) == 1
    assert grant(d, 10) == 2  # automatic ids skip taken ones
    assert isinstance(d.err(LeaseGrantRequest(10, 2)), LeaseExists)
    assert isinstance(d.err(LeaseGrantRequest(10, -4)), InvalidArgument)
    r = d.ok(api.LeaseLeasesRequest())
    assert isinstance(r, api.LeaseLeasesResponse) and r.leases == (1, 2)
    assert d.fsm.revision == 1  # leases are not KV writes


def test_ttl_below_minimum_is_raised() -> None:
    d = Driver(KVStateMachine(lease_config=LeaseConfig(min_ttl=5)))
    r = d.ok(LeaseGrantRequest(1, 7))
    assert isinstance(r, api.LeaseGrantResponse) and r.ttl == 5


def test_revoke_deletes_attached_keys_in_one_revision() -> None:
    d = Driver()
    lid = grant(d, 30)
    d.put(b"b", lease=lid)
    d.put(b"a", lease=lid)
    d.put(b"c")  # not attached
    d.put(b"d", lease=lid)
    d.put(b"d")  # re-put without lease detaches it
    before = d.fsm.revision
    r = d.apply(LeaseRevokeRequest(lid))
    assert r.error is None
    assert d.fsm.revision == before + 1
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in r.events] == [
        (EventType.DELETE, b"a", before + 1),
        (EventType.DELETE, b"b", before + 1),
    ]
    assert [kv.key for kv in d.get(b"\0", api.ALL_KEYS)] == [b"c", b"d"]
    assert isinstance(d.err(LeaseRevokeRequest(lid)), LeaseNotFound)


def test_lease_expire_command_revokes_each_lease_in_its_own_revision() -> None:
    d = Driver()
    a, b = grant(d, 10), grant(d, 10)
    d.put(b"ka", lease=a)
    d.put(b"kb", lease=b)
    r = d.ok(api.LeaseExpireRequest((a, 999, b)))
    assert isinstance(r, api.LeaseExpireResponse)
    assert r.revoked == (a, b)  # unknown ids are skipped
    assert d.fsm.revision == 5
    assert d.get(b"\0", api.ALL_KEYS) == []


def test_time_to_live_through_log_and_leader_local() -> None:
    d = Driver()
    lid = grant(d, 100)
    d.put(b"k", lease=lid)
    r = d.ok(api.LeaseTimeToLiveRequest(lid, keys=True))
    assert isinstance(r, api.LeaseTimeToLiveResponse)
    assert (r.ttl, r.granted_ttl, r.keys) == (100, 100, (b"k",))
    d.fsm.lessor.promote(now=1000.0, extend=0.0)
    local = d.fsm.time_to_live(api.LeaseTimeToLiveRequest(lid), now=1030.5)
    assert (local.ttl, local.granted_ttl) == (69, 100)
    assert d.fsm.time_to_live(api.LeaseTimeToLiveRequest(12345), now=1030.5).ttl == -1


def test_expiry_needs_a_leader_and_respects_deadlines() -> None:
    ls = Lessor()
    ls.grant(1, 10)
    assert ls.expired(now=1e9) == []  # a follower never decides expiry
    ls.promote(now=100.0, extend=0.0)
    assert ls.expired(now=109.9) == []
    assert ls.expired(now=110.0) == [1]
    ls.demote()
    assert ls.expired(now=500.0) == []


def test_checkpoint_lets_a_new_leader_continue_from_remaining_ttl() -> None:
    """etcd #9395: without checkpoints every election resets a lease to its full TTL."""
    leader, follower = Lessor(), Lessor()
    for ls in (leader, follower):
        ls.grant(7, 100)
    leader.promote(now=0.0, extend=0.0)
    cp = leader.checkpoint(now=60.0)
    assert cp is not None and cp.checkpoints == (api.LeaseCheckpoint(7, 40.0),)
    for ls in (leader, follower):
        ls.apply_checkpoint(cp)
    assert leader.checkpoint(now=60.5) is None  # nothing dropped enough since
    follower.promote(now=5000.0, extend=2.0)  # another clock entirely
    assert follower.remaining(7, now=5000.0) == pytest.approx(42.0)
    assert follower.expired(now=5041.9) == []
    assert follower.expired(now=5042.0) == [7]


def test_promotion_charges_the_budget_so_elections_cannot_keep_a_lease_forever() -> None:
    """etcd #9888: a lease nobody renews must expire even if leaders change faster than it
    could expire.  Every promotion lowers the recorded budget by ``extend``."""
    ttl, extend = 10, 1.0
    members = [Lessor(), Lessor(), Lessor()]
    for ls in members:
        ls.grant(1, ttl)
    now = 0.0
    expired_at = None
    for election in range(100):
        leader = members[election % 3]
        charge = leader.promote(now, extend)
        assert charge is not None
        for ls in members:
            ls.apply_checkpoint(charge)
        now += 0.5  # the leader loses leadership before any periodic checkpoint
        if leader.expired(now):
            expired_at = election
            break
        leader.demote()
    assert expired_at is not None
    assert expired_at <= math.ceil(ttl / extend) + 1


def test_renew_resets_recorded_budget_and_refuses_expired_leases() -> None:
    ls = Lessor()
    ls.grant(1, 10)
    with pytest.raises(NotLeader):
        ls.renew(1, now=0.0)  # keep-alives are served by the leader only
    ls.promote(now=0.0, extend=0.0)
    ttl, reset = ls.renew(1, now=1.0)
    assert (ttl, reset) == (10, None)  # budget still full: no log entry needed
    cp = ls.checkpoint(now=5.0)
    assert cp is not None
    ls.apply_checkpoint(cp)
    ttl, reset = ls.renew(1, now=5.5)
    assert reset == api.LeaseCheckpointRequest((api.LeaseCheckpoint(1, 10.0),))
    assert ls.expired(now=15.4) == []
    assert ls.expired(now=15.5) == [1]
    with pytest.raises(LeaseNotFound):
        ls.renew(1, now=16.0)
    with pytest.raises(LeaseNotFound):
        ls.renew(99, now=16.0)


def test_keep_alive_through_the_log_restores_full_budget() -> None:
    d = Driver()
    lid = grant(d, 20)
    d.ok(api.LeaseCheckpointRequest((api.LeaseCheckpoint(lid, 3.0),)))
    assert d.fsm.lessor.get(lid).remaining == 3.0
    d.ok(api.LeaseKeepAliveRequest(lid))
    assert d.fsm.lessor.get(lid).remaining == 20.0


def test_expiry_is_rate_limited_and_retried() -> None:
    ls = Lessor(LeaseConfig(max_expire_per_call=3, expire_retry_interval=5.0))
    for i in range(1, 8):
        ls.grant(i, 10)
    ls.promote(now=0.0, extend=0.0)
    assert ls.expired(now=20.0) == [1, 2, 3]
    assert ls.expired(now=20.1) == [4, 5, 6]
    assert ls.expired(now=20.2) == [7]
    assert ls.expired(now=20.3) == []  # proposed already, not yet applied
    ls.revoke(1)
    assert ls.expired(now=25.05) == [2, 3]  # not revoked in time: proposed again


def test_stalled_leader_does_not_count_the_stall_against_clients() -> None:
    ls = Lessor(LeaseConfig(stall_threshold=2.0))
    ls.grant(1, 10)
    ls.promote(now=0.0, extend=0.0)
    assert ls.expired(now=1.0) == []
    # the leader was stalled for 30 s: nobody could renew, nothing expires at once
    assert ls.expired(now=31.0) == []
    assert ls.remaining(1, now=31.0) == pytest.approx(9.0)
    for t in range(32, 40):
        assert ls.expired(now=float(t)) == []
    assert ls.expired(now=40.0) == [1]
    # without a stall threshold the same gap expires the lease at once
    plain = Lessor()
    plain.grant(1, 10)
    plain.promote(now=0.0, extend=0.0)
    assert plain.expired(now=1.0) == []
    assert plain.expired(now=31.0) == [1]


@settings(max_examples=50, deadline=None)
@given(
    ttls=st.lists(st.integers(1, 50), min_size=1, max_size=8),
    steps=st.lists(st.floats(0.0, 7.0), min_size=1, max_size=20),
    extend=st.floats(0.5, 3.0),
)
def test_never_expired_before_its_budget(
    ttls: list[int], steps: list[float], extend: float
) -> None:
    """A lease is never reported expired while the leader's clock says budget is left, and
    is reported once its deadline passed (no rate limit hit here)."""
    ls = Lessor()
    for i, ttl in enumerate(ttls, start=1):
        ls.grant(i, ttl)
    now = 0.0
    ls.promote(now, extend)
    deadlines = {i: ttl + extend for i, ttl in enumerate(ttls, start=1)}
    reported: set[int] = set()
    for step in steps:
        now += step
        for lid in ls.expired(now):
            assert deadlines[lid] <= now + 1e-9
            reported.add(lid)
    assert reported == {lid for lid, dl in deadlines.items() if dl <= now}
