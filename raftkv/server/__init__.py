"""A member: the node that drives the Raft core (:mod:`.node`), its storage and peer
transport, the msgpack client front end (:mod:`.native`), the watch hub, admission, metrics and
maintenance."""
