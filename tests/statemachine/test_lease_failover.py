"""A new leader charges the time since each lease budget was recorded (member-local clock)."""

from __future__ import annotations

from raftkv.state.lease import Lessor


def test_promote_charges_time_since_the_budget_was_applied() -> None:
    follower = Lessor()
    follower.apply_clock = 100.0
    follower.grant(1, 10)
    # The old leader dies; we win the election 4 s after we applied the grant.
    follower.promote(104.0, extend=0.5)
    assert follower.expired(110.4) == []
    assert follower.expired(110.6) == [1]  # 10 s after the grant + 0.5 s grace, not 104 + 10


def test_without_a_recorded_time_the_budget_is_taken_as_is() -> None:
    follower = Lessor()
    follower.grant(1, 10)  # e.g. restored from a snapshot: no local time known
    follower.promote(104.0, extend=0.5)
    assert follower.expired(114.4) == []
    assert follower.expired(114.6) == [1]


def test_renewed_lease_record_is_refreshed_by_checkpoint() -> None:
    leader = Lessor()
    leader.apply_clock = 0.0
    leader.grant(1, 9)
    leader.promote(0.0, extend=0.0)
    leader.renew(1, 5.0)  # leader-local keep-alive: budget 9 s from t=5
    cp = leader.checkpoint(5.5)  # record aged 5.5 s, real budget 8.5 s: refresh it
    assert cp is not None and [(c.id, c.remaining_ttl) for c in cp.checkpoints] == [(1, 8.5)]
    quiet = Lessor()
    quiet.apply_clock = 0.0
    quiet.grant(1, 9)
    quiet.promote(0.0, extend=0.0)
    assert quiet.checkpoint(0.5) is None  # nothing drifted yet
