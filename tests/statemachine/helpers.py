"""Small helpers to drive a KVStateMachine in tests: one call per applied command."""

from __future__ import annotations

from raftkv import api
from raftkv.errors import RaftKVError
from raftkv.protocol import codec
from raftkv.state.fsm import ApplyResult, KVStateMachine


class Driver:
    """Applies requests to a state machine as committed entries with increasing indexes,
    through the real byte path (codec.encode_command -> fsm.apply)."""

    def __init__(self, fsm: KVStateMachine | None = None) -> None:
        self.fsm = fsm or KVStateMachine()
        self.index = self.fsm.applied_index

    def apply(
        self,
        req: api.Request,
        *,
        client_id: int = 0,
        seq: int = 0,
        now: float = 0.0,
        term: int = 1,
    ) -> ApplyResult:
        self.index += 1
        data = codec.encode_command(api.Command(req, client_id, seq, now))
        return self.fsm.apply(self.index, data, term)

    def ok(self, req: api.Request, **kw: float) -> api.Response:
        """Apply and return the response; fail the test on an error result."""
        r = self.apply(req, **kw)  # type: ignore[arg-type]
        assert r.error is None, r.error
        assert r.response is not None
        return r.response

    def err(self, req: api.Request, **kw: float) -> RaftKVError:
        r = self.apply(req, **kw)  # type: ignore[arg-type]
        assert r.error is not None, r.response
        return r.error

    def put(self, key: bytes, value: bytes = b"v", lease: int = 0) -> api.PutResponse:
        resp = self.ok(api.PutRequest(key, value, lease))
        assert isinstance(resp, api.PutResponse)
        return resp

    def get(self, key: bytes, end: bytes = b"", rev: int = 0) -> list[api.KeyValue]:
        return list(self.fsm.range(api.RangeRequest(key, end, revision=rev)).kvs)
