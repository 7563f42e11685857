"""How a follower hands a call to the leader: as a client of the leader's client port.

The follower keeps one native-protocol connection to the leader it knows (many calls
multiplexed on it) and opens a new one when the leader changes.  Its handshake names the
forwarding member (``node_id`` non-zero), so the leader's front end marks these calls as
forwarded and never forwards them again.

Why a client connection and not the peer link: the leader then decides a forwarded call
exactly as one from a client (exactly-once tags, limits, lease authority, admission), through
the same code; and large writes do not queue in front of the heartbeats and appends that
keep the cluster stable.  The cost is one extra connection per follower, opened on first use.

A forwarded write keeps the client's exactly-once tag ``(client_id, seq)``: if the answer is
lost on the way back, the client's retry (through any member) gets the original answer and
the write is applied once.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from raftkv.client.connection import ClientConnection
from raftkv.errors import ConnectionLost, HandshakeRefused, NoLeader
from raftkv.protocol.methods import MAX_REPLY_BYTES, Method

__all__ = ["LeaderLink"]


class LeaderLink:
    """The forwarding connection of one member (see the module docstring)."""

    def __init__(self, cluster_id: int, node_id: int, *, connect_timeout: float = 2.0) -> None:
        self.cluster_id = cluster_id
        self.node_id = node_id
        self.connect_timeout = connect_timeout
        self._conn: ClientConnection | None = None
        self._lock = asyncio.Lock()
        self.calls = 0
        """Calls forwarded so far."""

    async def _connection(self, addr: str) -> ClientConnection:
        async with self._lock:
            conn = self._conn
            if conn is not None and conn.alive and conn.addr == addr:
                return conn
            if conn is not None:
                self._conn = None
                await conn.close()
            try:
                conn = await ClientConnection.open(
                    addr,
                    self.connect_timeout,
                    self.cluster_id,
                    MAX_REPLY_BYTES,
                    node_id=self.node_id,
                )
            except (ConnectionLost, HandshakeRefused) as e:
                raise NoLeader(f"cannot reach the leader at {addr} to forward: {e}") from None
            self._conn = conn
            return conn

    async def call(self, leader_addr: str, method: Method, payload: Any) -> Any:
        """Send one call to the leader at ``leader_addr`` and return its answer."""
        conn = await self._connection(leader_addr)
        self.calls += 1
        return await conn.call(method, payload)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
