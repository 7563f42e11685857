"""What client and server agree on: the msgpack codec of the api values (:mod:`.codec`),
length-prefixed frames and the handshake (:mod:`.wire`), and the method table
(:mod:`.methods`).  Sans-IO; imports no server or client code."""
