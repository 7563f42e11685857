"""The node's side of the peer transport: what it needs (:class:`Transport`), the TCP one,
and keeping its peer list equal to the membership."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from raftkv.raft import Message, MessageType

log = logging.getLogger("raftkv.server.node")


class Transport(Protocol):
    """What the node needs from a peer transport (TCP in production, in-memory in tests)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def send(self, messages: list[Message]) -> None: ...

    def add_peer(self, node_id: int, addr: str) -> None: ...

    def remove_peer(self, node_id: int) -> None: ...


TransportFactory = Callable[
    [int, int, str, dict[int, str], Callable[[Message], None], Callable[[int], None]], Transport
]
"""(node_id, cluster_id, listen_addr, peers, on_message, on_unreachable) -> Transport."""


def tcp_transport_factory(
    node_id: int,
    cluster_id: int,
    listen_addr: str,
    peers: dict[int, str],
    on_message: Callable[[Message], None],
    on_unreachable: Callable[[int], None],
) -> Transport:
    """The production transport: asyncio TCP with msgpack frames (raftkv.server.transport)."""
    return TcpTransport(node_id, cluster_id, listen_addr, peers, on_message, on_unreachable)


class TcpTransport:
    def __init__(
        self,
        node_id: int,
        cluster_id: int,
        listen_addr: str,
        peers: dict[int, str],
        on_message: Callable[[Message], None],
        on_unreachable: Callable[[int], None],
    ) -> None:
        from raftkv.protocol.methods import split_addr
        from raftkv.server.transport.peer import PeerTransport

        self._split = split_addr
        self.inner = PeerTransport(
            node_id,
            cluster_id,
            split_addr(listen_addr),
            {i: split_addr(a) for i, a in peers.items()},
            on_message,
            report_unreachable=on_unreachable,
        )

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    def send(self, messages: list[Message]) -> None:
        self.inner.send(messages)

    def add_peer(self, node_id: int, addr: str) -> None:
        self.inner.add_peer(node_id, self._split(addr))

    def remove_peer(self, node_id: int) -> None:
        self.inner.remove_peer(node_id)

    def peer_ids(self) -> list[int]:
        return list(self.inner.peers)


def sync_peers(transport: Transport, wanted: dict[int, str]) -> None:
    """Make ``transport`` know exactly the peers in ``wanted`` (id -> peer address)."""
    for pid, addr in wanted.items():
        transport.add_peer(pid, addr)
    for pid in list(getattr(transport, "peer_ids", lambda: [])()):
        if pid not in wanted:
            transport.remove_peer(pid)


class Outbox:
    """What leaves a member for its peers passes here: every vote it promises is logged as it
    is sent (the promise must survive a crash, and jepsen_like's ``vote_durability`` check
    compares these lines with the term and vote a restarted member reports in ``node
    started``), and heartbeats are timed to their responses (``peer_rtt``)."""

    __slots__ = ("_hb_sent", "_logged_campaign", "id", "peer_rtt")

    def __init__(self, node_id: int) -> None:
        self.id = node_id
        self.peer_rtt: dict[int, float] = {}
        """Last heartbeat round-trip time to each peer, seconds (leader only)."""
        self._hb_sent: dict[int, float] = {}
        self._logged_campaign = 0

    def send(self, transport: Transport, msgs: Sequence[Message]) -> None:
        now = time.perf_counter()
        for m in msgs:
            if m.type == MessageType.VOTE and m.term != self._logged_campaign:
                self._logged_campaign = m.term
                log.info("campaigning", extra={"term": m.term, "vote": f"{self.id:x}"})
            elif m.type == MessageType.VOTE_RESP and not m.reject:
                log.info("vote granted", extra={"term": m.term, "vote": f"{m.to:x}"})
            elif m.type == MessageType.HEARTBEAT and m.to not in self._hb_sent:
                self._hb_sent[m.to] = now
        transport.send(list(msgs))

    def heard(self, m: Message) -> None:
        """A message arrived from a peer (a heartbeat response ends a round trip)."""
        if m.type == MessageType.HEARTBEAT_RESP:
            sent = self._hb_sent.pop(m.frm, None)
            if sent is not None:
                self.peer_rtt[m.frm] = time.perf_counter() - sent
