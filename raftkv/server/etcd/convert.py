"""Protobuf (etcd 3.4's messages) <-> :mod:`raftkv.api` values: the one place they meet.

Requests come in as etcd's messages and become api values (``*_request``); api responses go
out as etcd's messages (``*_response``).  Nothing here decides what a call means; that is
:class:`raftkv.server.service.ApiService`'s.
"""

from __future__ import annotations

from typing import Any

from raftkv import api
from raftkv.errors import InvalidArgument
from raftkv.server.etcd.proto import kv_pb2, rpc_pb2

_INT64 = (1 << 63) - 1
_UINT32 = (1 << 32) - 1

# --- values -----------------------------------------------------------------------------------


def header(h: api.ResponseHeader) -> rpc_pb2.ResponseHeader:
    return rpc_pb2.ResponseHeader(
        cluster_id=h.cluster_id, member_id=h.member_id, revision=h.revision, raft_term=h.raft_term
    )


def key_value(kv: api.KeyValue) -> kv_pb2.KeyValue:
    return kv_pb2.KeyValue(
        key=kv.key,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        value=kv.value,
        lease=kv.lease,
    )


def event(ev: api.Event) -> kv_pb2.Event:
    out = kv_pb2.Event(type=ev.type.name, kv=key_value(ev.kv))
    if ev.prev_kv is not None:
        out.prev_kv.CopyFrom(key_value(ev.prev_kv))
    return out


# --- KV requests ------------------------------------------------------------------------------


def _enum(cls: Any, v: int, what: str) -> Any:
    try:
        return cls(v)
    except ValueError:
        raise InvalidArgument(f"unknown {what} {v}") from None


def range_request(r: rpc_pb2.RangeRequest) -> api.RangeRequest:
    return api.RangeRequest(
        key=r.key,
        range_end=r.range_end,
        limit=r.limit,
        revision=r.revision,
        sort_order=_enum(api.SortOrder, r.sort_order, "sort order"),
        sort_target=_enum(api.SortTarget, r.sort_target, "sort target"),
        serializable=r.serializable,
        keys_only=r.keys_only,
        count_only=r.count_only,
        min_mod_revision=r.min_mod_revision,
        max_mod_revision=r.max_mod_revision,
        min_create_revision=r.min_create_revision,
        max_create_revision=r.max_create_revision,
    )


def put_request(r: rpc_pb2.PutRequest) -> api.PutRequest:
    return api.PutRequest(
        key=r.key,
        value=r.value,
        lease=r.lease,
        prev_kv=r.prev_kv,
        ignore_value=r.ignore_value,
        ignore_lease=r.ignore_lease,
    )


def delete_range_request(r: rpc_pb2.DeleteRangeRequest) -> api.DeleteRangeRequest:
    return api.DeleteRangeRequest(key=r.key, range_end=r.range_end, prev_kv=r.prev_kv)


def compare(c: rpc_pb2.Compare) -> api.Compare:
    target = _enum(api.CompareTarget, c.target, "compare target")
    result = _enum(api.CompareResult, c.result, "compare result")
    value: bytes | int
    if target == api.CompareTarget.VALUE:
        value = c.value
    elif target == api.CompareTarget.VERSION:
        value = c.version
    elif target == api.CompareTarget.CREATE:
        value = c.create_revision
    elif target == api.CompareTarget.MOD:
        value = c.mod_revision
    else:
        value = c.lease
    return api.Compare(key=c.key, target=target, result=result, value=value, range_end=c.range_end)


def request_op(op: rpc_pb2.RequestOp) -> api.RequestOp:
    which = op.WhichOneof("request")
    if which == "request_range":
        return range_request(op.request_range)
    if which == "request_put":
        return put_request(op.request_put)
    if which == "request_delete_range":
        return delete_range_request(op.request_delete_range)
    if which == "request_txn":
        return txn_request(op.request_txn)
    raise InvalidArgument("a txn operation names no request")


def txn_request(t: rpc_pb2.TxnRequest) -> api.TxnRequest:
    return api.TxnRequest(
        compare=tuple(compare(c) for c in t.compare),
        success=tuple(request_op(o) for o in t.success),
        failure=tuple(request_op(o) for o in t.failure),
    )


def compaction_request(r: rpc_pb2.CompactionRequest) -> api.CompactionRequest:
    return api.CompactionRequest(revision=r.revision, physical=r.physical)


# --- KV responses -----------------------------------------------------------------------------


def range_response(r: api.RangeResponse) -> rpc_pb2.RangeResponse:
    return rpc_pb2.RangeResponse(
        header=header(r.header), kvs=[key_value(kv) for kv in r.kvs], more=r.more, count=r.count
    )


def put_response(r: api.PutResponse) -> rpc_pb2.PutResponse:
    out = rpc_pb2.PutResponse(header=header(r.header))
    if r.prev_kv is not None:
        out.prev_kv.CopyFrom(key_value(r.prev_kv))
    return out


def delete_range_response(r: api.DeleteRangeResponse) -> rpc_pb2.DeleteRangeResponse:
    return rpc_pb2.DeleteRangeResponse(
        header=header(r.header), deleted=r.deleted, prev_kvs=[key_value(kv) for kv in r.prev_kvs]
    )


def response_op(r: api.ResponseOp) -> rpc_pb2.ResponseOp:
    if isinstance(r, api.RangeResponse):
        return rpc_pb2.ResponseOp(response_range=range_response(r))
    if isinstance(r, api.PutResponse):
        return rpc_pb2.ResponseOp(response_put=put_response(r))
    if isinstance(r, api.DeleteRangeResponse):
        return rpc_pb2.ResponseOp(response_delete_range=delete_range_response(r))
    return rpc_pb2.ResponseOp(response_txn=txn_response(r))


def txn_response(r: api.TxnResponse) -> rpc_pb2.TxnResponse:
    return rpc_pb2.TxnResponse(
        header=header(r.header),
        succeeded=r.succeeded,
        responses=[response_op(x) for x in r.responses],
    )


def compaction_response(r: api.CompactionResponse) -> rpc_pb2.CompactionResponse:
    return rpc_pb2.CompactionResponse(header=header(r.header))


# --- leases -----------------------------------------------------------------------------------


def lease_grant_request(r: rpc_pb2.LeaseGrantRequest) -> api.LeaseGrantRequest:
    return api.LeaseGrantRequest(ttl=r.TTL, id=r.ID)


def lease_grant_response(r: api.LeaseGrantResponse) -> rpc_pb2.LeaseGrantResponse:
    return rpc_pb2.LeaseGrantResponse(header=header(r.header), ID=r.id, TTL=r.ttl)


def lease_revoke_response(r: api.LeaseRevokeResponse) -> rpc_pb2.LeaseRevokeResponse:
    return rpc_pb2.LeaseRevokeResponse(header=header(r.header))


def lease_keep_alive_response(r: api.LeaseKeepAliveResponse) -> rpc_pb2.LeaseKeepAliveResponse:
    return rpc_pb2.LeaseKeepAliveResponse(header=header(r.header), ID=r.id, TTL=r.ttl)


def lease_time_to_live_response(
    r: api.LeaseTimeToLiveResponse,
) -> rpc_pb2.LeaseTimeToLiveResponse:
    return rpc_pb2.LeaseTimeToLiveResponse(
        header=header(r.header), ID=r.id, TTL=r.ttl, grantedTTL=r.granted_ttl, keys=list(r.keys)
    )


def lease_leases_response(r: api.LeaseLeasesResponse) -> rpc_pb2.LeaseLeasesResponse:
    return rpc_pb2.LeaseLeasesResponse(
        header=header(r.header), leases=[rpc_pb2.LeaseStatus(ID=i) for i in r.leases]
    )


# --- cluster ----------------------------------------------------------------------------------


def url(addr: str) -> str:
    """``host:port`` as etcd's URL form (``http://host:port``)."""
    return addr if "://" in addr else f"http://{addr}"


def addr(u: str) -> str:
    """etcd's URL form back to ``host:port``."""
    rest = u.split("://", 1)[-1]
    return rest.rstrip("/")


def member(m: api.Member, client_urls: list[str]) -> rpc_pb2.Member:
    return rpc_pb2.Member(
        ID=m.id,
        name=m.name,
        peerURLs=[url(m.peer_addr)] if m.peer_addr else [],
        clientURLs=client_urls,
        isLearner=m.is_learner,
    )


def member_add_request(r: rpc_pb2.MemberAddRequest) -> api.MemberAddRequest:
    """etcd names a member when it starts; raftkv names it at add: its peer address."""
    if len(r.peerURLs) != 1:
        raise InvalidArgument("etcdserver: given member URLs are invalid")
    peer = addr(r.peerURLs[0])
    if not peer:
        raise InvalidArgument("etcdserver: given member URLs are invalid")
    return api.MemberAddRequest(name=peer, peer_addr=peer, is_learner=r.isLearner)


def member_update_request(r: rpc_pb2.MemberUpdateRequest) -> api.MemberUpdateRequest:
    """raftkv keeps one peer address per member: the first URL."""
    peer = addr(r.peerURLs[0]) if len(r.peerURLs) == 1 else ""
    if not peer:
        raise InvalidArgument("etcdserver: given member URLs are invalid")
    return api.MemberUpdateRequest(r.ID, peer)


# --- maintenance ------------------------------------------------------------------------------


def status_response(s: api.StatusResponse) -> rpc_pb2.StatusResponse:
    return rpc_pb2.StatusResponse(
        header=header(s.header),
        version=s.version,
        dbSize=min(s.db_size, _INT64),
        leader=s.leader,
        raftIndex=s.raft_index,
        raftTerm=s.term,
        raftAppliedIndex=s.raft_applied_index,
        errors=[],
        dbSizeInUse=min(s.db_size, _INT64),
        isLearner=s.is_learner,
    )


def hash_kv_response(r: api.HashKVResponse) -> rpc_pb2.HashKVResponse:
    """etcd's hash is 32 bits: the low 32 bits of raftkv's 64-bit hash."""
    return rpc_pb2.HashKVResponse(
        header=header(r.header), hash=r.hash & _UINT32, compact_revision=r.compact_revision
    )
