"""The checker flags each broken property from hand-made inputs, and stays quiet on good ones."""

from __future__ import annotations

from jepsen_like.sim.invariants import Checker
from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import Entry, HardState, Message, MessageType, ReadState


def log_of(*terms: int) -> MemoryStorage:
    st = MemoryStorage()
    st.append([Entry(t, i + 1, data=b"%d" % (i + 1)) for i, t in enumerate(terms)])
    return st


def names(c: Checker) -> list[str]:
    return [v.invariant for v in c.violations]


def test_election_safety_two_leaders_in_one_term() -> None:
    c = Checker()
    c.observe_leaders([(1, 2, log_of(1, 2))])
    c.observe_leaders([(1, 2, log_of(1, 2)), (2, 3, log_of(1, 3))])
    assert c.ok
    c.observe_leaders([(3, 2, log_of(1, 2))])
    assert names(c) == ["election safety"]


def test_leader_append_only() -> None:
    c = Checker()
    c.observe_leaders([(1, 2, log_of(1, 2, 2))])
    c.observe_leaders([(1, 2, log_of(1, 2, 2, 2))])  # appending is fine
    assert c.ok
    c.observe_leaders([(1, 2, log_of(1, 2))])  # truncated its own log
    assert names(c) == ["leader append-only"]


def test_leader_append_only_overwrite() -> None:
    c = Checker()
    c.observe_leaders([(1, 3, log_of(1, 2, 3))])
    c.observe_leaders([(1, 3, log_of(1, 2, 2, 3))])  # index 3 changed term
    assert names(c) == ["leader append-only"]


def test_log_matching_same_index_and_term_different_prefix() -> None:
    c = Checker()
    a = log_of(1, 1, 2)
    c.on_persist_entries(1, a.ents[1:], a)
    b = log_of(1, 1, 2)
    c.on_persist_entries(2, b.ents[1:], b)
    assert c.ok
    bad = log_of(1, 3, 2)  # (3, t2) after a term-3 entry; elsewhere after term 1
    c.on_persist_entries(3, bad.ents[3:], bad)
    assert names(c) == ["log matching"]


def test_log_matching_same_index_and_term_different_payload() -> None:
    c = Checker()
    a = log_of(1, 2)
    c.on_persist_entries(1, a.ents[1:], a)
    b = MemoryStorage()
    b.append([Entry(1, 1, data=b"1"), Entry(2, 2, data=b"other")])
    c.on_persist_entries(2, b.ents[2:], b)
    assert names(c) == ["log matching"]


def test_leader_completeness_new_leader_lacks_committed_entry() -> None:
    c = Checker()
    committed = log_of(1, 2, 2)
    c.on_commit(1, 0, 3, 2, committed)
    c.observe_leaders([(2, 3, log_of(1, 2, 2, 3))])
    assert c.ok
    c.observe_leaders([(3, 4, log_of(1, 2, 4))])  # lost (3, t2), committed in term 2
    assert names(c) == ["leader completeness"]


def test_leader_completeness_ignores_a_stale_leader_of_an_older_term() -> None:
    c = Checker()
    c.observe_leaders([(1, 2, log_of(1, 2))])
    c.on_commit(2, 0, 3, 3, log_of(1, 2, 3))  # committed in term 3, leader 1 of 2 is stale
    c.check_fresh_commits([(1, 2, log_of(1, 2))])
    assert c.ok


def test_leader_completeness_checks_current_leaders_on_fresh_commits() -> None:
    c = Checker()
    c.observe_leaders([(2, 5, log_of(1, 1, 5))])
    c.on_commit(1, 0, 2, 3, log_of(1, 2))  # (2, t2) committed in term 3 < 5
    c.check_fresh_commits([(2, 5, log_of(1, 1, 5))])
    assert names(c) == ["leader completeness"]


def test_state_machine_safety_different_commits_at_one_index() -> None:
    c = Checker()
    c.on_commit(1, 0, 2, 2, log_of(1, 2))
    c.on_commit(2, 0, 2, 3, log_of(1, 3))
    assert names(c) == ["state machine safety"]


def test_state_machine_safety_applied_chains_differ() -> None:
    c = Checker()
    c.on_apply(1, 5, 2, b"a" * 16)
    c.on_apply(2, 5, 2, b"a" * 16)
    assert c.ok
    c.on_apply(3, 5, 2, b"b" * 16)
    assert names(c) == ["state machine safety"]
    c.on_restore(4, 5, b"c" * 16)
    assert names(c) == ["state machine safety"] * 2


def test_persistence_vote_and_term_and_ack() -> None:
    c = Checker()
    hs = HardState(term=3, vote=2, commit=0)
    c.on_message_out(1, Message(MessageType.VOTE_RESP, to=2, frm=1, term=3), hs, 5)
    c.on_message_out(1, Message(MessageType.APP_RESP, to=2, frm=1, term=3, index=5), hs, 5)
    c.on_message_out(1, Message(MessageType.PRE_VOTE, to=2, frm=1, term=4), hs, 5)
    c.on_message_out(1, Message(MessageType.VOTE_RESP, to=3, frm=1, term=3, reject=True), hs, 5)
    assert c.ok
    c.on_message_out(1, Message(MessageType.VOTE_RESP, to=3, frm=1, term=3), hs, 5)
    c.on_message_out(1, Message(MessageType.APP_RESP, to=2, frm=1, term=3, index=6), hs, 5)
    c.on_message_out(1, Message(MessageType.HEARTBEAT, to=2, frm=1, term=4), hs, 5)
    assert names(c) == ["persistence"] * 3


def test_read_index_must_cover_commits_known_when_requested() -> None:
    c = Checker()
    c.on_commit(1, 0, 4, 2, log_of(1, 2, 2, 2))
    c.on_read_index(b"r1")
    c.on_read_state(2, ReadState(4, b"r1"))
    assert c.ok and c.reads_served == 1
    c.on_read_index(b"r2")
    c.on_read_state(3, ReadState(3, b"r2"))
    assert names(c) == ["linearizable read"]


def test_persistence_a_grant_from_an_older_term_in_the_same_ready_is_fine() -> None:
    # One Ready: granted 3 in term 11, then moved to term 12 and granted 5 (seed 5263).
    c = Checker()
    hs = HardState(term=12, vote=5, commit=0)
    c.on_message_out(2, Message(MessageType.VOTE_RESP, to=3, frm=2, term=11), hs, 5)
    c.on_message_out(2, Message(MessageType.VOTE_RESP, to=5, frm=2, term=12), hs, 5)
    c.on_message_out(2, Message(MessageType.APP_RESP, to=3, frm=2, term=11, index=9), hs, 5)
    assert c.ok
