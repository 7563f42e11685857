"""The apply step the node and the simulator share (raftkv.server.apply), driven by hand."""

from __future__ import annotations

from jepsen_like.sim.cluster import App
from raftkv.api import Command, PutRequest
from raftkv.protocol import codec
from raftkv.raft import ConfChange, ConfChangeType, ConfState, Entry, EntryType
from raftkv.server.apply import (
    Applier,
    EntryKind,
    Proposals,
    kv_entry,
    member_entry,
)
from raftkv.state.fsm import KVStateMachine


def put(key: bytes) -> bytes:
    return kv_entry(codec.encode_command(Command(PutRequest(key, b"v"))))


def make() -> tuple[Applier, list[ConfChange]]:
    seen: list[ConfChange] = []

    def conf(cc: ConfChange) -> ConfState:
        seen.append(cc)
        return ConfState(voters=(1, cc.node_id))

    return Applier(KVStateMachine(), conf, 0), seen


def test_each_envelope_is_decoded_and_applied_once_in_order() -> None:
    ap, seen = make()
    cc = ConfChange(ConfChangeType.ADD_VOTER, 2)
    entries = [
        Entry(1, 1),  # a new leader's empty entry
        Entry(1, 2, data=put(b"a")),
        Entry(1, 3, EntryType.CONF_CHANGE, cc.encode()),
        Entry(1, 4, data=member_entry(2, "127.0.0.1:1")),
        Entry(1, 5, data=b"M\xc1"),  # malformed attributes
    ]
    out = [ap.apply(e, clock=1.0) for e in entries]
    assert [a.kind if a else None for a in out] == [
        EntryKind.OTHER,
        EntryKind.KV,
        EntryKind.CONF_CHANGE,
        EntryKind.MEMBER,
        EntryKind.MEMBER,
    ]
    assert out[1] is not None and out[1].result.error is None and out[1].result.revision == 2
    assert out[2] is not None and out[2].conf_state == ConfState(voters=(1, 2)) and seen == [cc]
    assert out[3] is not None and out[3].member == (2, "127.0.0.1:1")
    assert out[4] is not None and out[4].member is None
    assert ap.applied_index == ap.fsm.applied_index == 5
    assert ap.apply(Entry(1, 2, data=put(b"a"))) is None  # a replay is skipped
    assert ap.fsm.revision == 2


def test_a_proposal_is_answered_with_its_result_or_with_none_if_replaced() -> None:
    ap, _ = make()
    props: Proposals[str] = Proposals()
    props.add(1, 1, "first")
    props.add(2, 1, "second")
    props.add(3, 1, "third")
    assert len(props) == 3 and props.peak == 3
    a1 = ap.apply(Entry(1, 1, data=put(b"x")))
    assert a1 is not None
    assert props.settle(a1) == ("first", a1.result)
    a2 = ap.apply(Entry(2, 2, data=put(b"y")))  # a new leader's entry at index 2
    assert a2 is not None
    assert props.settle(a2) == ("second", None)
    assert props.drop_through(3) == ["third"]
    assert len(props) == 0 and props.peak == 3


def test_the_simulator_applies_through_the_same_step() -> None:
    app = App(0, bytes(16), ConfState(voters=(1,)))
    assert isinstance(app.applier, Applier) and app.applier.fsm is app.fsm
