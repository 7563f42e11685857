"""The node's side of the peer transport: what it needs (:class:`Transport`), the TCP one,
and keeping its peer list equal to the membership."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from raftkv.raft import Message


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
