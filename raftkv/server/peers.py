"""The node's side of the peer transport: what it needs (:class:`Transport`), its two
implementations — TCP (production) and an in-process network (:class:`MemoryNetwork`, for
tests: real nodes, no peer sockets, links cut and healed at will) — and keeping its peer
list equal to the membership."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from raftkv.raft import Message, MessageType

if TYPE_CHECKING:
    from raftkv.server.config import NodeConfig

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


class MemoryNetwork:
    """Members of one process talking through memory instead of TCP.

    A transport is known by the peer address it listens on, as with TCP: a message goes to
    whichever transport is started at the address its recipient has in the sender's peer
    list, on a later turn of the event loop, and only if the recipient knows the sender as a
    peer (TCP refuses the handshake of a non-peer).  Messages to an address nobody listens
    on, or across a cut link, are dropped and the sender hears ``on_unreachable``, as from
    the TCP transport.
    """

    def __init__(self) -> None:
        self.listening: dict[str, MemoryTransport] = {}
        self.cut: set[frozenset[int]] = set()
        """Links (pairs of member ids) that carry nothing, either way."""
        self.delivered = 0

    def factory(
        self,
        node_id: int,
        cluster_id: int,
        listen_addr: str,
        peers: dict[int, str],
        on_message: Callable[[Message], None],
        on_unreachable: Callable[[int], None],
    ) -> Transport:
        """A :data:`TransportFactory` for ``Node.start``."""
        return MemoryTransport(
            self, node_id, cluster_id, listen_addr, peers, on_message, on_unreachable
        )

    def isolate(self, node_id: int, others: list[int]) -> None:
        """Cut every link between ``node_id`` and ``others``."""
        self.cut.update(frozenset((node_id, o)) for o in others if o != node_id)

    def heal(self) -> None:
        self.cut.clear()


class MemoryTransport:
    """One member's end of a :class:`MemoryNetwork`."""

    def __init__(
        self,
        network: MemoryNetwork,
        node_id: int,
        cluster_id: int,
        listen_addr: str,
        peers: dict[int, str],
        on_message: Callable[[Message], None],
        on_unreachable: Callable[[int], None],
    ) -> None:
        self.network = network
        self.id = node_id
        self.cluster_id = cluster_id
        self.addr = listen_addr
        self.peers = dict(peers)
        self._on_message = on_message
        self._on_unreachable = on_unreachable
        self._running = False

    async def start(self) -> None:
        if self.network.listening.get(self.addr, self) is not self:
            raise OSError(f"address already in use: {self.addr}")
        self.network.listening[self.addr] = self
        self._running = True

    async def stop(self) -> None:
        self._running = False
        if self.network.listening.get(self.addr) is self:
            del self.network.listening[self.addr]

    def send(self, messages: list[Message]) -> None:
        if not self._running:
            return
        loop = asyncio.get_running_loop()
        for m in messages:
            addr = self.peers.get(m.to)
            dst = self.network.listening.get(addr) if addr is not None else None
            if (
                dst is None
                or dst.id != m.to
                or dst.cluster_id != self.cluster_id
                or frozenset((self.id, m.to)) in self.network.cut
            ):
                if addr is not None:
                    loop.call_soon(self._unreachable, m.to)
                continue
            loop.call_soon(dst._deliver, m)

    def _deliver(self, m: Message) -> None:
        if self._running and m.frm in self.peers:
            self.network.delivered += 1
            self._on_message(m)

    def _unreachable(self, node_id: int) -> None:
        if self._running:
            self._on_unreachable(node_id)

    def add_peer(self, node_id: int, addr: str) -> None:
        self.peers[node_id] = addr

    def remove_peer(self, node_id: int) -> None:
        self.peers.pop(node_id, None)

    def peer_ids(self) -> list[int]:
        return list(self.peers)


async def open_transport(
    cfg: NodeConfig,
    factory: TransportFactory,
    who: tuple[int, int, str, dict[int, str]],
    on_message: Callable[[Message], None],
    on_unreachable: Callable[[int], None],
) -> Transport:
    """Make and start a member's transport; ``who`` is (member id, cluster id, listen
    address, peers).  The TCP one gets the member's peer-connection limits."""
    transport = factory(*who, on_message, on_unreachable)
    if isinstance(transport, TcpTransport):
        transport.inner.max_inbound = cfg.max_peer_connections
        transport.inner.handshake_timeout = cfg.peer_handshake_timeout
    await transport.start()
    return transport


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
