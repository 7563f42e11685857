"""A small interpreter for datadriven scripts that drive a network of sans-IO Raft cores.

A script is a sequence of blocks separated by blank lines; lines starting with ``#`` are
comments (kept verbatim on rewrite)::

    # comment
    command arg1 arg2 key=value
    ----
    expected output lines

Each command runs against one :class:`Env`: a hand-driven network of ``RawNode`` cores over
``MemoryStorage``.  Nothing happens unless a command says so: ``process-ready`` hands one
``Ready`` of a node to the "application" (persist, queue the messages, apply, advance) and
prints it; ``deliver-msgs`` steps queued messages into their recipients.  There is no clock
and no unseeded randomness: the randomized election timeout is pinned to ``election`` ticks
unless ``add-nodes ... seed=N`` asks for a seeded draw.

The output formats are this project's own:

* an entry is ``TERM/INDEX PAYLOAD`` with the payload ``"text"``, ``0xHEX`` or
  ``conf(add-voter 4)``;
* a message is ``FROM->TO MsgType Term:T ...`` (e.g. ``1->2 MsgApp Term:2 Log:1/3 Commit:2
  Entries:[2/4 "x"]``, where ``Log:`` is the term/index of the entry preceding the entries);
* a processed Ready is ``> ID ready:`` followed by its indented parts.

Commands (``ID`` is a node id; ``IDS`` one or more ids, by default all nodes)::

    add-nodes N [prevote=B] [checkquorum=B] [election=T] [heartbeat=T] [max-msg-size=S]
                [max-inflight=N] [max-uncommitted-size=S] [seed=N]
        the first call creates voters 1..N, each bootstrapped from a snapshot at 1/1 holding
        the configuration; later calls add N blank nodes (empty log, no configuration) that a
        conf change must bring in
    campaign ID                       start an election at ID (PreVote first if enabled)
    tick ID [N]                       N ticks (default 1)
    tick-election IDS                 tick until each node's election timeout fires (leader:
                                      its CheckQuorum round)
    tick-heartbeat IDS                tick heartbeat-interval times
    process-ready IDS                 handle one Ready of each node that has one
    deliver-msgs [IDS] [drop=IDS] [from=ID] [type=MsgX]
                                      deliver queued messages to IDS (all if neither IDS nor
                                      drop is given) and discard those to the drop= nodes;
                                      from= and type= narrow the selection; the rest stays
    stabilize [IDS]                   process-ready + deliver-msgs until nothing moves
    drop FROM TO                      cut the one-way link FROM->TO
    partition A,B|C[|...]             cut every link between nodes of different groups
                                      (nodes in no group keep all their links)
    heal                              restore every link
    crash ID / restart ID             stop a node (queued messages to and from it, and those
                                      sent to it while down, are lost) / rebuild its core
                                      from what it persisted
    propose ID DATA
    propose-conf-change ID add=N|add-learner=N|promote=N|remove=N
    compact ID INDEX                  snapshot the node's state machine at INDEX (<= applied)
                                      and discard its log through INDEX
    transfer-leadership from=X to=Y
    raft-state                        one line per node
    raft-log ID                       the node's log (stable and unstable)
    status ID                         RawNode.status(), with the leader's progress
    check leader=ID|none              exactly this node (or none) leads among the live nodes
    check FIELD ID=VALUE...           FIELD: role term vote lead commit applied last first
                                      voters learners snapshot data entry transferee; for
                                      ``entry`` VALUE is TERM/INDEX (the node's log holds that
                                      entry), for ``data`` the applied payloads a,b,c

Every command is also checked for State Machine Safety: two nodes that apply different
entries at the same index fail the script.  A failed ``check``, a safety violation, a
``stabilize`` that never quiesces and an invariant the core asserts (``AssertionError``) are
failures of the script even when its golden output is being rewritten.

Run ``python -m tests.raft.datadriven.interp [--rewrite] FILE...`` to check (or regenerate)
scripts outside pytest.
"""

from __future__ import annotations

import argparse
import difflib
import json
import random
import shlex
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from raftkv.errors import RaftKVError
from raftkv.raft import (
    NONE,
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Entry,
    EntryType,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    Ready,
    Snapshot,
    StateRole,
)

MT = MessageType

SEPARATOR = "----"
STABILIZE_ROUNDS = 500
STABILIZE_KEEP_LINES = 100  # output kept of a stabilize that never quiesces

# --- script files ------------------------------------------------------------------------------


class ScriptError(Exception):
    """A malformed script or command (a bug in the script, not in the core)."""


@dataclass(slots=True)
class Block:
    """One command with its expected output (``None``: the script has no ``----`` yet)."""

    lineno: int
    command: str
    expected: list[str] | None


Item = str | Block  # a raw line (comment or blank) or a command block


def parse_script(text: str) -> list[Item]:
    lines = text.splitlines()
    items: list[Item] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            items.append(line)
            i += 1
            continue
        lineno = i + 1
        i += 1
        expected: list[str] | None = None
        if i < len(lines) and lines[i].strip() == SEPARATOR:
            i += 1
            expected = []
            while i < len(lines) and lines[i].strip():
                expected.append(lines[i])
                i += 1
        items.append(Block(lineno, line.strip(), expected))
    return items


def render_script(items: list[Item], outputs: dict[int, list[str]]) -> str:
    """The script text with each block's output taken from ``outputs`` (by line number)."""
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
            continue
        out.append(item.command)
        out.append(SEPARATOR)
        out.extend(outputs.get(item.lineno, item.expected or []))
    return "\n".join(out) + "\n"


@dataclass(slots=True)
class Command:
    name: str
    args: list[str]
    kwargs: dict[str, list[str]]

    @classmethod
    def parse(cls, line: str) -> Command:
        try:
            tokens = shlex.split(line)
        except ValueError as e:
            raise ScriptError(f"cannot parse {line!r}: {e}") from None
        if not tokens:
            raise ScriptError("empty command")
        args: list[str] = []
        kwargs: dict[str, list[str]] = {}
        for tok in tokens[1:]:
            key, eq, value = tok.partition("=")
            if eq:
                kwargs.setdefault(key, []).append(value)
            else:
                args.append(tok)
        return cls(tokens[0], args, kwargs)

    def one(self, key: str, default: str | None = None) -> str:
        values = self.kwargs.get(key)
        if not values:
            if default is None:
                raise ScriptError(f"{self.name}: missing {key}=")
            return default
        if len(values) > 1:
            raise ScriptError(f"{self.name}: {key}= given more than once")
        return values[0]

    def only(self, *keys: str) -> None:
        unknown = set(self.kwargs) - set(keys)
        if unknown:
            raise ScriptError(f"{self.name}: unknown argument(s) {sorted(unknown)}")


def parse_int(s: str, what: str = "number") -> int:
    try:
        return int(s)
    except ValueError:
        raise ScriptError(f"expected a {what}, got {s!r}") from None


def parse_bool(s: str) -> bool:
    if s in ("true", "1", "yes"):
        return True
    if s in ("false", "0", "no"):
        return False
    raise ScriptError(f"expected true or false, got {s!r}")


def parse_ids(s: str) -> list[int]:
    return [parse_int(x, "node id") for x in s.split(",") if x]


# --- formatting --------------------------------------------------------------------------------

ROLE_NAMES: dict[StateRole, str] = {
    StateRole.FOLLOWER: "Follower",
    StateRole.CANDIDATE: "Candidate",
    StateRole.PRE_CANDIDATE: "PreCandidate",
    StateRole.LEADER: "Leader",
}

MSG_NAMES: dict[MessageType, str] = {
    MT.HUP: "MsgHup",
    MT.BEAT: "MsgBeat",
    MT.PROP: "MsgProp",
    MT.APP: "MsgApp",
    MT.APP_RESP: "MsgAppResp",
    MT.VOTE: "MsgVote",
    MT.VOTE_RESP: "MsgVoteResp",
    MT.SNAP: "MsgSnap",
    MT.HEARTBEAT: "MsgHeartbeat",
    MT.HEARTBEAT_RESP: "MsgHeartbeatResp",
    MT.UNREACHABLE: "MsgUnreachable",
    MT.SNAP_STATUS: "MsgSnapStatus",
    MT.CHECK_QUORUM: "MsgCheckQuorum",
    MT.TRANSFER_LEADER: "MsgTransferLeader",
    MT.TIMEOUT_NOW: "MsgTimeoutNow",
    MT.READ_INDEX: "MsgReadIndex",
    MT.READ_INDEX_RESP: "MsgReadIndexResp",
    MT.PRE_VOTE: "MsgPreVote",
    MT.PRE_VOTE_RESP: "MsgPreVoteResp",
}
MSG_TYPES: dict[str, MessageType] = {v: k for k, v in MSG_NAMES.items()}

CC_NAMES: dict[ConfChangeType, str] = {
    ConfChangeType.ADD_VOTER: "add-voter",
    ConfChangeType.REMOVE_NODE: "remove",
    ConfChangeType.ADD_LEARNER: "add-learner",
    ConfChangeType.PROMOTE_LEARNER: "promote",
}
CC_ARGS: dict[str, ConfChangeType] = {
    "add": ConfChangeType.ADD_VOTER,
    "add-learner": ConfChangeType.ADD_LEARNER,
    "promote": ConfChangeType.PROMOTE_LEARNER,
    "remove": ConfChangeType.REMOVE_NODE,
}


def fmt_ids(ids: Iterable[int]) -> str:
    return "[" + " ".join(str(i) for i in sorted(ids)) + "]"


def fmt_conf(cs: ConfState) -> str:
    s = f"Voters:{fmt_ids(cs.voters)}"
    if cs.learners:
        s += f" Learners:{fmt_ids(cs.learners)}"
    return s


def fmt_data(data: bytes) -> str:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return "0x" + data.hex()
    if text.isprintable() and '"' not in text:
        return f'"{text}"'
    return "0x" + data.hex()


def fmt_entry(e: Entry) -> str:
    if e.type == EntryType.CONF_CHANGE:
        cc = ConfChange.decode(e.data)
        return f"{e.term}/{e.index} conf({CC_NAMES[cc.type]} {cc.node_id})"
    return f"{e.term}/{e.index} {fmt_data(e.data)}"


def fmt_snapshot(s: Snapshot) -> str:
    return f"[{s.meta.term}/{s.meta.index} {fmt_conf(s.meta.conf_state)}]"


def fmt_msg(m: Message) -> str:
    t = m.type
    parts = [f"{m.frm}->{m.to}", MSG_NAMES.get(t, f"Msg{int(t)}"), f"Term:{m.term}"]
    if t == MT.APP:
        parts.append(f"Log:{m.log_term}/{m.index}")
        parts.append(f"Commit:{m.commit}")
        if m.entries:
            parts.append("Entries:[" + ", ".join(fmt_entry(e) for e in m.entries) + "]")
    elif t == MT.APP_RESP:
        parts.append(f"Index:{m.index}")
        if m.reject:
            parts.append(f"Rejected Hint:{m.log_term}/{m.reject_hint}")
    elif t in (MT.VOTE, MT.PRE_VOTE):
        parts.append(f"Log:{m.log_term}/{m.index}")
        if m.context:
            parts.append(f"Ctx:{fmt_data(m.context)}")
    elif t in (MT.VOTE_RESP, MT.PRE_VOTE_RESP):
        if m.reject:
            parts.append("Rejected")
    elif t == MT.HEARTBEAT:
        parts.append(f"Commit:{m.commit}")
        if m.context:
            parts.append(f"Ctx:{fmt_data(m.context)}")
    elif t == MT.SNAP and m.snapshot is not None:
        parts.append(f"Snapshot:{fmt_snapshot(m.snapshot)}")
    elif t in (MT.READ_INDEX, MT.READ_INDEX_RESP):
        parts.append(f"Index:{m.index} Ctx:{fmt_data(m.context)}")
    return " ".join(parts)


def fmt_error(e: Exception) -> str:
    return f"error: {type(e).__name__}: {e}"


# --- the network -------------------------------------------------------------------------------


class PinnedTimeout(random.Random):
    """An rng whose ``randrange`` is always 0: the election timeout is exactly ``election``."""

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        return 0


@dataclass(slots=True)
class Options:
    pre_vote: bool = False
    check_quorum: bool = False
    election_tick: int = 3
    heartbeat_tick: int = 1
    max_size_per_msg: int = 1 << 20
    max_inflight: int = 256
    max_uncommitted_size: int = 1 << 62
    seed: int | None = None

    def updated(self, cmd: Command) -> Options:
        cmd.only(
            "prevote",
            "checkquorum",
            "election",
            "heartbeat",
            "max-msg-size",
            "max-inflight",
            "max-uncommitted-size",
            "seed",
        )
        o = Options(
            self.pre_vote,
            self.check_quorum,
            self.election_tick,
            self.heartbeat_tick,
            self.max_size_per_msg,
            self.max_inflight,
            self.max_uncommitted_size,
            self.seed,
        )
        kw = cmd.kwargs
        if "prevote" in kw:
            o.pre_vote = parse_bool(cmd.one("prevote"))
        if "checkquorum" in kw:
            o.check_quorum = parse_bool(cmd.one("checkquorum"))
        if "election" in kw:
            o.election_tick = parse_int(cmd.one("election"))
        if "heartbeat" in kw:
            o.heartbeat_tick = parse_int(cmd.one("heartbeat"))
        if "max-msg-size" in kw:
            o.max_size_per_msg = parse_int(cmd.one("max-msg-size"))
        if "max-inflight" in kw:
            o.max_inflight = parse_int(cmd.one("max-inflight"))
        if "max-uncommitted-size" in kw:
            o.max_uncommitted_size = parse_int(cmd.one("max-uncommitted-size"))
        if "seed" in kw:
            o.seed = parse_int(cmd.one("seed"))
        return o


@dataclass(slots=True)
class Node:
    id: int
    opts: Options
    storage: MemoryStorage
    rn: RawNode
    applied: list[tuple[int, bytes]] = field(default_factory=list)
    # (index, configuration after it) for every conf change applied since the last snapshot
    conf_history: list[tuple[int, ConfState]] = field(default_factory=list)
    down: bool = False


def encode_state(applied: list[tuple[int, bytes]]) -> bytes:
    """The state machine (the applied payloads) as snapshot data."""
    return json.dumps([[ix, d.hex()] for ix, d in applied]).encode()


def decode_state(data: bytes) -> list[tuple[int, bytes]]:
    if not data:
        return []
    return [(int(ix), bytes.fromhex(d)) for ix, d in json.loads(data)]


class CheckFailed(Exception):
    pass


class Env:
    """The network, the nodes and the command implementations."""

    def __init__(self) -> None:
        self.nodes: dict[int, Node] = {}
        self.opts: Options | None = None
        self.queue: list[Message] = []  # sent (Ready processed) but not yet delivered
        self.blocked: set[tuple[int, int]] = set()
        self.out: list[str] = []
        self.failures: list[str] = []  # of the current command
        # State Machine Safety: index -> (term or None if from a snapshot, payload, node) of the
        # first entry applied at that index
        self.applied_at: dict[int, tuple[int | None, str, int]] = {}
        self.handlers: dict[str, Callable[[Command], None]] = {
            "add-nodes": self.cmd_add_nodes,
            "campaign": self.cmd_campaign,
            "tick": self.cmd_tick,
            "tick-election": self.cmd_tick_election,
            "tick-heartbeat": self.cmd_tick_heartbeat,
            "process-ready": self.cmd_process_ready,
            "deliver-msgs": self.cmd_deliver_msgs,
            "stabilize": self.cmd_stabilize,
            "drop": self.cmd_drop,
            "partition": self.cmd_partition,
            "heal": self.cmd_heal,
            "crash": self.cmd_crash,
            "restart": self.cmd_restart,
            "propose": self.cmd_propose,
            "propose-conf-change": self.cmd_propose_conf_change,
            "compact": self.cmd_compact,
            "transfer-leadership": self.cmd_transfer_leadership,
            "raft-state": self.cmd_raft_state,
            "raft-log": self.cmd_raft_log,
            "status": self.cmd_status,
            "check": self.cmd_check,
        }

    def run(self, line: str) -> list[str]:
        """Run one command line; returns its output.

        Raises :class:`CheckFailed` (with the output in ``self.out``) when a ``check`` fails,
        when two nodes apply different entries at one index, or when ``stabilize`` finds a
        network that never quiesces.
        """
        cmd = Command.parse(line)
        handler = self.handlers.get(cmd.name)
        if handler is None:
            raise ScriptError(f"unknown command {cmd.name!r}")
        self.out = []
        self.failures = []
        handler(cmd)
        for ln in self.out:
            if not ln.strip():
                raise AssertionError("the interpreter printed a blank line")
        self.out = [ln.rstrip() for ln in self.out]
        if self.failures:
            raise CheckFailed("; ".join(self.failures))
        return self.out

    def fail(self, what: str) -> None:
        self.p(f"FAILED: {what}")
        self.failures.append(what)

    def record_applied(self, n: Node, index: int, term: int | None, payload: str) -> None:
        """Check State Machine Safety: every node applies the same entry at each index.

        An entry a node got through a snapshot has no term here: only its payload counts.
        """
        first = self.applied_at.get(index)
        if first is None:
            self.applied_at[index] = (term, payload, n.id)
            return
        t0, payload0, node0 = first
        if term is not None and t0 is None:
            self.applied_at[index] = (term, payload0, node0)
        if payload != payload0 or (term is not None and t0 is not None and term != t0):

            def show(t: int | None, pl: str) -> str:
                return f"{t}/{index} {pl}" if t is not None else f"?/{index} {pl}"

            self.fail(
                f"State Machine Safety: {n.id} applied {show(term, payload)}, "
                f"but {node0} applied {show(t0, payload0)}"
            )

    def p(self, line: str) -> None:
        self.out.append(line)

    # --- helpers ----------------------------------------------------------------------

    def node(self, s: str) -> Node:
        i = parse_int(s, "node id")
        if i not in self.nodes:
            raise ScriptError(f"no node {i}")
        return self.nodes[i]

    def targets(self, args: list[str]) -> list[int]:
        if not args:
            return sorted(self.nodes)
        ids: list[int] = []
        for a in args:
            for i in parse_ids(a):
                self.node(str(i))
                ids.append(i)
        return ids

    def _config(self, i: int, opts: Options, storage: MemoryStorage, applied: int) -> Config:
        rng: random.Random = (
            PinnedTimeout() if opts.seed is None else random.Random(opts.seed * 1000 + i)
        )
        return Config(
            id=i,
            storage=storage,
            applied=applied,
            election_tick=opts.election_tick,
            heartbeat_tick=opts.heartbeat_tick,
            max_size_per_msg=opts.max_size_per_msg,
            max_inflight_msgs=opts.max_inflight,
            max_uncommitted_entries_size=opts.max_uncommitted_size,
            pre_vote=opts.pre_vote,
            check_quorum=opts.check_quorum,
            rng=rng,
        )

    def state_line(self, n: Node) -> str:
        r = n.rn.raft
        log = r.raft_log
        s = (
            f"{n.id}: {ROLE_NAMES[r.state]} Term:{r.term} Vote:{r.vote} Lead:{r.lead} "
            f"Commit:{log.committed} Applied:{log.applied} Last:{log.last_index()}"
        )
        if n.id in r.prs.learners:
            s += " (learner)"
        elif n.id not in r.prs.voters:
            s += " (not a voter)"
        if n.down:
            s += " (down)"
        return s

    # --- building -----------------------------------------------------------------------

    def cmd_add_nodes(self, cmd: Command) -> None:
        if len(cmd.args) != 1:
            raise ScriptError("usage: add-nodes N [options]")
        count = parse_int(cmd.args[0])
        opts = (self.opts or Options()).updated(cmd)
        first = max(self.nodes, default=0) + 1
        ids = list(range(first, first + count))
        if self.opts is None:
            self.opts = opts
            conf = ConfState(voters=tuple(ids))
            storages = {i: MemoryStorage.bootstrap(conf) for i in ids}
        else:
            storages = {i: MemoryStorage(ConfState()) for i in ids}
        for i in ids:
            st = storages[i]
            applied = st.snapshot().meta.index
            node = Node(i, opts, st, RawNode(self._config(i, opts, st, applied)))
            node.conf_history = [(applied, st.snapshot().meta.conf_state)]
            self.nodes[i] = node
            self.p(self.state_line(node))

    def cmd_crash(self, cmd: Command) -> None:
        n = self.node(cmd.args[0])
        n.down = True
        lost = [m for m in self.queue if n.id in (m.to, m.frm)]
        self.queue = [m for m in self.queue if n.id not in (m.to, m.frm)]
        for m in lost:
            self.p(f"lost: {fmt_msg(m)}")

    def cmd_restart(self, cmd: Command) -> None:
        n = self.node(cmd.args[0])
        # Messages sent to it while it was down never arrived.
        for m in [m for m in self.queue if m.to == n.id]:
            self.p(f"lost: {fmt_msg(m)}")
        self.queue = [m for m in self.queue if m.to != n.id]
        st = n.storage
        snap = st.snapshot()
        n.rn = RawNode(self._config(n.id, n.opts, st, snap.meta.index))
        n.applied = decode_state(snap.data)
        n.conf_history = [(snap.meta.index, snap.meta.conf_state)]
        n.down = False
        self.p(self.state_line(n))

    # --- time and elections ---------------------------------------------------------------

    def _tick(self, n: Node, count: int) -> None:
        if n.down:
            self.p(f"{n.id} is down")
            return
        for _ in range(count):
            n.rn.tick()

    def cmd_tick(self, cmd: Command) -> None:
        if not 1 <= len(cmd.args) <= 2:
            raise ScriptError("usage: tick ID [N]")
        count = parse_int(cmd.args[1]) if len(cmd.args) == 2 else 1
        self._tick(self.node(cmd.args[0]), count)

    def cmd_tick_election(self, cmd: Command) -> None:
        for i in self.targets(cmd.args):
            n = self.nodes[i]
            r = n.rn.raft
            # The timeout a leader counts to is the plain election timeout (CheckQuorum);
            # everybody else waits for its randomized one.
            timeout = (
                r.election_timeout if r.state == StateRole.LEADER else r.randomized_election_timeout
            )
            self._tick(n, max(1, timeout - r.election_elapsed))

    def cmd_tick_heartbeat(self, cmd: Command) -> None:
        for i in self.targets(cmd.args):
            n = self.nodes[i]
            self._tick(n, n.rn.raft.heartbeat_timeout)

    def cmd_campaign(self, cmd: Command) -> None:
        n = self.node(cmd.args[0])
        if n.down:
            self.p(f"{n.id} is down")
            return
        n.rn.campaign()

    # --- the Ready loop -----------------------------------------------------------------

    def handle_ready(self, n: Node) -> None:
        """Be the application for one Ready: persist, send, apply, advance; print it."""
        rd: Ready = n.rn.ready()
        p = self.p
        p(f"> {n.id} ready:")
        if rd.soft_state is not None:
            ss = rd.soft_state
            p(f"  State: {ROLE_NAMES[ss.role]} Lead:{ss.leader_id}")
        # 1. persist
        if rd.hard_state is not None:
            hs = rd.hard_state
            p(f"  HardState: Term:{hs.term} Vote:{hs.vote} Commit:{hs.commit}")
            n.storage.set_hard_state(hs)
        if rd.snapshot is not None:
            p(f"  Snapshot: {fmt_snapshot(rd.snapshot)}")
            n.storage.apply_snapshot(rd.snapshot)
        if rd.entries:
            p("  Entries:")
            for e in rd.entries:
                p(f"    {fmt_entry(e)}")
            n.storage.append(rd.entries)
        # 2. send (the early messages could have left before step 1; here both go now)
        msgs = rd.early_messages + rd.messages
        if msgs:
            p("  Messages:")
            for m in msgs:
                p(f"    {fmt_msg(m)}")
            self.queue.extend(msgs)
        # 3. apply
        if rd.snapshot is not None:
            n.applied = decode_state(rd.snapshot.data)
            for ix, d in n.applied:
                self.record_applied(n, ix, None, fmt_data(d))
            n.conf_history = [(rd.snapshot.meta.index, rd.snapshot.meta.conf_state)]
        if rd.committed_entries:
            p("  Committed:")
            for e in rd.committed_entries:
                line = f"    {fmt_entry(e)}"
                if e.type == EntryType.CONF_CHANGE:
                    cs = n.rn.apply_conf_change(ConfChange.decode(e.data))
                    n.conf_history.append((e.index, cs))
                    line += f" -> {fmt_conf(cs)}"
                elif e.data:
                    n.applied.append((e.index, e.data))
                p(line)
                self.record_applied(n, e.index, e.term, fmt_entry(e).split(" ", 1)[1])
        for rs in rd.read_states:
            p(f"  ReadState: Index:{rs.index} Ctx:{fmt_data(rs.request_ctx)}")
        # 4. advance
        n.rn.advance(rd)

    def process_ready(self, ids: list[int], quiet: bool = False) -> bool:
        progressed = False
        for i in ids:
            n = self.nodes[i]
            if n.down:
                if not quiet:
                    self.p(f"{i} is down")
                continue
            if not n.rn.has_ready():
                if not quiet:
                    self.p(f"{i}: no Ready")
                continue
            self.handle_ready(n)
            progressed = True
        return progressed

    def cmd_process_ready(self, cmd: Command) -> None:
        self.process_ready(self.targets(cmd.args))

    def deliver(
        self,
        to: set[int] | None,
        drop: set[int],
        frm: int | None = None,
        mtype: MessageType | None = None,
    ) -> bool:
        """Step the selected queued messages into their recipients, grouped by recipient."""

        def selected(m: Message) -> bool:
            return (frm is None or m.frm == frm) and (mtype is None or m.type == mtype)

        keep: list[Message] = []
        by_node: dict[int, list[tuple[Message, bool]]] = {}
        for m in self.queue:
            if not selected(m):
                keep.append(m)
            elif m.to in drop:
                by_node.setdefault(m.to, []).append((m, False))
            elif to is None or m.to in to:
                by_node.setdefault(m.to, []).append((m, True))
            else:
                keep.append(m)
        self.queue = keep
        for i in sorted(by_node):
            self.p(f"> {i} receives:")
            for m, deliver in by_node[i]:
                line = f"  {fmt_msg(m)}"
                target = self.nodes.get(m.to)
                if not deliver:
                    self.p(line + " (dropped)")
                elif target is None:
                    self.p(line + " (dropped: no such node)")
                elif target.down:
                    self.p(line + f" (dropped: {m.to} is down)")
                elif (m.frm, m.to) in self.blocked:
                    self.p(line + " (dropped: partitioned)")
                else:
                    self.p(line)
                    try:
                        target.rn.step(m)
                    except RaftKVError as e:
                        self.p(f"    {fmt_error(e)}")
        return bool(by_node)

    def cmd_deliver_msgs(self, cmd: Command) -> None:
        cmd.only("drop", "from", "type")
        drop = {i for v in cmd.kwargs.get("drop", []) for i in parse_ids(v)}
        to: set[int] | None = set(self.targets(cmd.args)) if cmd.args else None
        if to is None and drop:
            to = set()  # only drop
        frm = parse_int(cmd.one("from")) if "from" in cmd.kwargs else None
        mtype: MessageType | None = None
        if "type" in cmd.kwargs:
            name = cmd.one("type")
            if name not in MSG_TYPES:
                raise ScriptError(f"unknown message type {name!r}")
            mtype = MSG_TYPES[name]
        if not self.deliver(to, drop, frm, mtype):
            self.p("no messages")

    def cmd_stabilize(self, cmd: Command) -> None:
        ids = self.targets(cmd.args)
        for _ in range(STABILIZE_ROUNDS):
            progressed = self.process_ready(ids, quiet=True)
            delivered = self.deliver(set(ids), set())
            if not progressed and not delivered:
                return
        # A livelock is a finding about the core, not a script error: keep the start of it.
        del self.out[STABILIZE_KEEP_LINES:]
        self.p("...")
        self.fail(f"stabilize: the network did not quiesce in {STABILIZE_ROUNDS} rounds")

    # --- faults -------------------------------------------------------------------------

    def cmd_drop(self, cmd: Command) -> None:
        if len(cmd.args) != 2:
            raise ScriptError("usage: drop FROM TO")
        a, b = (self.node(x).id for x in cmd.args)
        self.blocked.add((a, b))

    def cmd_partition(self, cmd: Command) -> None:
        if len(cmd.args) != 1 or "|" not in cmd.args[0]:
            raise ScriptError("usage: partition A,B|C")
        groups = [parse_ids(g) for g in cmd.args[0].split("|")]
        for gi, g in enumerate(groups):
            for hi, h in enumerate(groups):
                if gi != hi:
                    self.blocked.update((a, b) for a in g for b in h)
        cut = sorted(f"{a}-{b}" for a, b in self.blocked if a < b and (b, a) in self.blocked)
        one_way = sorted(f"{a}->{b}" for a, b in self.blocked if (b, a) not in self.blocked)
        self.p("cut: " + " ".join(cut + one_way))

    def cmd_heal(self, cmd: Command) -> None:
        self.blocked.clear()

    # --- client requests ------------------------------------------------------------------

    def _proposed(self, n: Node, before: int) -> None:
        log = n.rn.raft.raft_log
        last = log.last_index()
        if last > before:
            self.p("proposed " + ", ".join(fmt_entry(e) for e in log.slice(before + 1, last + 1)))

    def cmd_propose(self, cmd: Command) -> None:
        if len(cmd.args) != 2:
            raise ScriptError("usage: propose ID DATA")
        n = self.node(cmd.args[0])
        before = n.rn.raft.raft_log.last_index()
        try:
            n.rn.propose(cmd.args[1].encode())
        except RaftKVError as e:
            self.p(fmt_error(e))
            return
        self._proposed(n, before)

    def cmd_propose_conf_change(self, cmd: Command) -> None:
        cmd.only(*CC_ARGS)
        if len(cmd.args) != 1 or len(cmd.kwargs) != 1:
            raise ScriptError(
                "usage: propose-conf-change ID add=N|add-learner=N|promote=N|remove=N"
            )
        n = self.node(cmd.args[0])
        ((key, _),) = cmd.kwargs.items()
        cc = ConfChange(CC_ARGS[key], parse_int(cmd.one(key), "node id"))
        before = n.rn.raft.raft_log.last_index()
        try:
            n.rn.propose_conf_change(cc)
        except RaftKVError as e:
            self.p(fmt_error(e))
            return
        self._proposed(n, before)

    def cmd_transfer_leadership(self, cmd: Command) -> None:
        cmd.only("from", "to")
        n = self.node(cmd.one("from"))
        to = self.node(cmd.one("to")).id
        try:
            n.rn.transfer_leadership(to)
        except RaftKVError as e:
            self.p(fmt_error(e))

    def cmd_compact(self, cmd: Command) -> None:
        if len(cmd.args) != 2:
            raise ScriptError("usage: compact ID INDEX")
        n = self.node(cmd.args[0])
        index = parse_int(cmd.args[1], "index")
        applied = n.rn.raft.raft_log.applied
        if index > applied:
            raise ScriptError(f"compact {n.id} {index}: only {applied} is applied")
        conf = [cs for ix, cs in n.conf_history if ix <= index][-1]
        data = encode_state([(ix, d) for ix, d in n.applied if ix <= index])
        try:
            snap = n.storage.create_snapshot(index, conf, data)
            n.storage.compact(index)
        except RaftKVError as e:
            self.p(fmt_error(e))
            return
        self.p(
            f"snapshot {fmt_snapshot(snap)}; log of {n.id} now starts at {n.storage.first_index()}"
        )

    # --- inspection -----------------------------------------------------------------------

    def cmd_raft_state(self, cmd: Command) -> None:
        for i in self.targets(cmd.args):
            self.p(self.state_line(self.nodes[i]))

    def cmd_raft_log(self, cmd: Command) -> None:
        n = self.node(cmd.args[0])
        log = n.rn.raft.raft_log
        snap = log.snapshot()
        self.p(
            f"snapshot {snap.meta.term}/{snap.meta.index}; commit {log.committed}, "
            f"applied {log.applied}"
        )
        ents = log.slice(log.first_index(), log.last_index() + 1)
        stable_upto = log.unstable.offset
        for e in ents:
            self.p(fmt_entry(e) + (" (unstable)" if e.index >= stable_upto else ""))

    def cmd_status(self, cmd: Command) -> None:
        n = self.node(cmd.args[0])
        st = n.rn.status()
        self.p(
            f"{st.id}: {ROLE_NAMES[st.role]} Term:{st.term} Vote:{st.vote} Lead:{st.leader_id} "
            f"Commit:{st.commit} Applied:{st.applied} Last:{st.last_index} "
            f"{fmt_conf(st.conf_state)}"
            + (f" Transferee:{st.lead_transferee}" if st.lead_transferee != NONE else "")
        )
        for pid in sorted(st.progress):
            pr = st.progress[pid]
            self.p(
                f"  {pid}: {pr.state.name.capitalize()} match={pr.match} next={pr.next}"
                + (" learner" if pr.is_learner else "")
                + ("" if pr.recent_active else " inactive")
            )

    def field(self, n: Node, name: str, want: str) -> str:
        """The node's value of a ``check`` field, rendered like the expected value."""
        r = n.rn.raft
        log = r.raft_log
        if name == "role":
            return ROLE_NAMES[r.state].lower()
        if name in ("term", "vote", "lead", "transferee"):
            return str(
                {"term": r.term, "vote": r.vote, "lead": r.lead, "transferee": r.lead_transferee}[
                    name
                ]
            )
        if name in ("commit", "committed"):
            return str(log.committed)
        if name == "applied":
            return str(log.applied)
        if name == "last":
            return str(log.last_index())
        if name == "first":
            return str(log.first_index())
        if name == "voters":
            return ",".join(str(i) for i in sorted(r.prs.voters))
        if name == "learners":
            return ",".join(str(i) for i in sorted(r.prs.learners))
        if name == "snapshot":
            meta = n.storage.snapshot().meta
            return f"{meta.term}/{meta.index}"
        if name == "data":
            return ",".join(d.decode(errors="replace") for _, d in n.applied)
        if name == "entry":
            _, slash, idx = want.partition("/")
            if not slash:
                raise ScriptError(f"check entry: want TERM/INDEX, got {want!r}")
            index = parse_int(idx, "index")
            return f"{log.zero_term_on_err(index)}/{index}"
        raise ScriptError(f"check: unknown field {name!r}")

    def cmd_check(self, cmd: Command) -> None:
        failures: list[str] = []
        if not cmd.args:
            cmd.only("leader")
            want = cmd.one("leader")
            leaders = sorted(
                i
                for i, n in self.nodes.items()
                if not n.down and n.rn.raft.state == StateRole.LEADER
            )
            got = ",".join(map(str, leaders)) or "none"
            if got != want:
                failures.append(f"leader: want {want}, got {got}")
        else:
            if len(cmd.args) != 1 or not cmd.kwargs:
                raise ScriptError("usage: check FIELD ID=VALUE... | check leader=ID")
            name = cmd.args[0]
            for key, values in cmd.kwargs.items():
                n = self.node(key)
                for want in values:
                    got = self.field(n, name, want)
                    if got != want:
                        failures.append(f"{name} of {n.id}: want {want}, got {got}")
        for f in failures:
            self.fail(f)
        if not failures:
            self.p("ok")


# --- running scripts -----------------------------------------------------------------------------


@dataclass(slots=True)
class Result:
    path: Path
    original: str
    actual: str
    failures: list[str]

    @property
    def matches(self) -> bool:
        return self.original == self.actual

    @property
    def ok(self) -> bool:
        return self.matches and not self.failures

    def diff(self) -> str:
        return "".join(
            difflib.unified_diff(
                self.original.splitlines(keepends=True),
                self.actual.splitlines(keepends=True),
                fromfile=f"{self.path} (expected)",
                tofile=f"{self.path} (actual)",
            )
        )

    def report(self) -> str:
        parts: list[str] = []
        if self.failures:
            parts.append("failures:\n" + "\n".join(f"  {f}" for f in self.failures))
        if not self.matches:
            parts.append(
                "output differs from the golden file (RAFTKV_REWRITE=1 regenerates it):\n"
                + self.diff()
            )
        return "\n".join(parts)


def run_text(text: str, path: Path) -> Result:
    items = parse_script(text)
    env = Env()
    outputs: dict[int, list[str]] = {}
    failures: list[str] = []
    for item in items:
        if isinstance(item, str):
            continue
        where = f"{path.name}:{item.lineno}: {item.command}"
        try:
            outputs[item.lineno] = env.run(item.command)
        except CheckFailed as e:
            outputs[item.lineno] = env.out
            failures.append(f"{where}: {e}")
        except ScriptError as e:
            raise ScriptError(f"{where}: {e}") from None
        except AssertionError as e:
            # An invariant of the core broke: record it and keep going (later output shows
            # what the broken state leads to, and the test fails anyway).
            outputs[item.lineno] = [*env.out, f"PANIC: {e}"]
            failures.append(f"{where}: the core asserted: {e}")
    return Result(path, text, render_script(items, outputs), failures)


def run_file(path: Path, rewrite: bool = False) -> Result:
    result = run_text(path.read_text(), path)
    if rewrite and not result.matches:
        path.write_text(result.actual)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tests.raft.datadriven.interp", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--rewrite", action="store_true", help="regenerate the golden output")
    ap.add_argument("files", nargs="+", type=Path)
    ns = ap.parse_args(argv)
    status = 0
    for path in ns.files:
        result = run_file(path, rewrite=ns.rewrite)
        if result.failures or (not result.matches and not ns.rewrite):
            status = 1
            print(f"{path}: FAILED\n{result.report()}")
        elif not result.matches:
            print(f"{path}: rewritten")
        else:
            print(f"{path}: ok")
    return status


if __name__ == "__main__":
    sys.exit(main())
