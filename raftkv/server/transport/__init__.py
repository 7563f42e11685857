"""TCP transport between Raft peers (length-prefixed msgpack frames, see
:mod:`raftkv.protocol.wire`)."""

from raftkv.server.transport.peer import Faults, LinkFault, PeerTransport, TransportStats

__all__ = ["Faults", "LinkFault", "PeerTransport", "TransportStats"]
