"""The apply step, sans-IO: committed entry -> envelope decode -> state machine -> result.

The one place where a committed entry becomes state.  The asyncio node
(:mod:`raftkv.server.node`) and the deterministic simulator (:mod:`jepsen_like.sim.cluster`)
both apply through :class:`Applier`, so a seeded simulation runs the production apply code.
Nothing here waits, reads a clock or does I/O (tests/test_architecture.py checks): the lease
clock is an argument, and proposals waiting for their entries are resolved by whoever holds
them, from what :meth:`Proposals.settle` returns.

Log entries carry a one-byte envelope: ``K`` + a state-machine command
(:func:`raftkv.protocol.codec.encode_command`), or ``M`` + member attributes (a member
publishing its client address).  Configuration changes are entries of type ``CONF_CHANGE``;
every other entry (a new leader's empty entry, anything without an envelope) still passes
through the state machine as an empty entry, so its applied index stays contiguous with the
log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

import msgpack

from raftkv.raft import ConfChange, ConfState, Entry, EntryType
from raftkv.state.fsm import ApplyResult, KVStateMachine

ENTRY_KV = b"K"
"""Envelope of a state-machine command."""
ENTRY_MEMBER = b"M"
"""Envelope of member attributes (``{"id": int, "client_addr": str}``, msgpack)."""

W = TypeVar("W")


class EntryKind(Enum):
    KV = "kv"
    """A state-machine command (``K``)."""
    MEMBER = "member"
    """Member attributes (``M``); ``Applied.member`` is None if they were malformed."""
    CONF_CHANGE = "conf_change"
    """A membership change, already applied to the core (``Applied.conf_state``)."""
    OTHER = "other"
    """Anything else: an empty entry to the state machine."""


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one committed entry did."""

    entry: Entry
    kind: EntryKind
    result: ApplyResult
    """The state machine's answer; for entries other than commands, the empty entry's
    (its index and the revision after it)."""
    conf_change: ConfChange | None = None
    conf_state: ConfState | None = None
    """The configuration after a ``CONF_CHANGE`` (the core's answer)."""
    member: tuple[int, str] | None = None
    """(member id, client address) of a well-formed ``MEMBER`` entry."""


def kv_entry(command: bytes) -> bytes:
    """An encoded command in the node's envelope."""
    return ENTRY_KV + command


def member_entry(member_id: int, client_addr: str) -> bytes:
    """Member attributes in the node's envelope."""
    body: bytes = msgpack.packb({"id": member_id, "client_addr": client_addr})
    return ENTRY_MEMBER + body


def decode_member(data: bytes) -> tuple[int, str] | None:
    """The (id, client address) of a member-attributes body, or None if it is malformed."""
    try:
        d = msgpack.unpackb(data)
        return int(d["id"]), str(d["client_addr"])
    except (ValueError, KeyError, TypeError, msgpack.UnpackException):
        return None


class Applier:
    """Applies committed entries to a :class:`KVStateMachine`, in log order, exactly once.

    ``apply_conf_change`` is the core's (``RawNode.apply_conf_change``): a membership change
    takes effect in the core when its entry is applied, as Raft requires.
    """

    __slots__ = ("_apply_conf_change", "applied_index", "fsm")

    def __init__(
        self,
        fsm: KVStateMachine,
        apply_conf_change: Callable[[ConfChange], ConfState],
        applied_index: int,
    ) -> None:
        self.fsm = fsm
        self._apply_conf_change = apply_conf_change
        self.applied_index = applied_index

    def restored(self, fsm: KVStateMachine, index: int) -> None:
        """A snapshot at ``index`` replaced the state (``fsm`` holds it now)."""
        self.fsm = fsm
        self.applied_index = index

    def apply(self, e: Entry, clock: float | None = None) -> Applied | None:
        """Apply ``e``; None if it is at or below the applied index (a replay after a
        snapshot).  ``clock`` is the member's lease clock, recorded with lease budgets."""
        if e.index <= self.applied_index:
            return None
        fsm = self.fsm
        data = e.data
        applied: Applied
        if e.type == EntryType.NORMAL and data.startswith(ENTRY_KV):
            fsm.lessor.apply_clock = clock
            applied = Applied(e, EntryKind.KV, fsm.apply(e.index, data[1:], e.term))
        else:
            result = fsm.apply(e.index, b"")
            if e.type == EntryType.CONF_CHANGE:
                cc = ConfChange.decode(data)
                conf = self._apply_conf_change(cc)
                applied = Applied(e, EntryKind.CONF_CHANGE, result, cc, conf)
            elif data.startswith(ENTRY_MEMBER):
                applied = Applied(e, EntryKind.MEMBER, result, member=decode_member(data[1:]))
            else:
                applied = Applied(e, EntryKind.OTHER, result)
        self.applied_index = e.index
        return applied


@dataclass(slots=True)
class _Waiting(Generic[W]):
    term: int
    waiter: W


class Proposals(Generic[W]):
    """Proposals waiting for their entries, by log index: the one pending-proposal table.

    A proposal is known by the (index, term) the core gave it (``RawNode.propose``).  When
    the entry at that index is applied, :meth:`settle` hands its waiter back with the result
    if the entry is the one proposed (same term), or with None if a new leader replaced it.
    ``W`` is whatever the caller waits with (the node: an asyncio future).
    """

    __slots__ = ("_by_index", "peak")

    def __init__(self) -> None:
        self._by_index: dict[int, _Waiting[W]] = {}
        self.peak = 0
        """The most proposals that were pending at once."""

    def __len__(self) -> int:
        return len(self._by_index)

    def add(self, index: int, term: int, waiter: W) -> None:
        self._by_index[index] = _Waiting(term, waiter)
        if len(self._by_index) > self.peak:
            self.peak = len(self._by_index)

    def forget(self, index: int) -> None:
        """The caller stopped waiting (a timeout)."""
        self._by_index.pop(index, None)

    def settle(self, applied: Applied) -> tuple[W, ApplyResult | None] | None:
        """The waiter of ``applied``'s index, if any, and its result: None as the result if
        the applied entry is not the proposed one (a new leader replaced it)."""
        w = self._by_index.pop(applied.entry.index, None)
        if w is None:
            return None
        return w.waiter, (applied.result if w.term == applied.entry.term else None)

    def drop_through(self, index: int) -> list[W]:
        """Remove and return the waiters at or below ``index`` (a snapshot superseded them:
        they can no longer be matched to their entries)."""
        gone = [i for i in self._by_index if i <= index]
        return [self._by_index.pop(i).waiter for i in gone]

    def drain(self) -> Iterator[W]:
        """Remove and yield every waiter."""
        waiting, self._by_index = self._by_index, {}
        for w in waiting.values():
            yield w.waiter
