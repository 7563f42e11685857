"""etcd's Watch stream over the gRPC front end, driven with the generated stubs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from raftkv.server.etcd.proto import kv_pb2, rpc_pb2, rpc_pb2_grpc
from tests.etcd.conftest import EtcdCluster

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def channel(etcd: EtcdCluster) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(etcd.addr(etcd.follower_name())) as ch:
        yield ch


def _create(**kw: object) -> rpc_pb2.WatchRequest:
    return rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(**kw))  # type: ignore[arg-type]


async def _read(stream: grpc.aio.StreamStreamCall) -> rpc_pb2.WatchResponse:
    resp = await asyncio.wait_for(stream.read(), 10.0)
    assert isinstance(resp, rpc_pb2.WatchResponse)
    return resp


async def test_watch_prefix_with_prev_kv_then_cancel(channel: grpc.aio.Channel) -> None:
    kv = rpc_pb2_grpc.KVStub(channel)
    stream = rpc_pb2_grpc.WatchStub(channel).Watch()
    await stream.write(_create(key=b"w/", range_end=b"w0", prev_kv=True))
    created = await _read(stream)
    assert created.created and created.watch_id == 0 and created.header.member_id != 0
    p1 = await kv.Put(rpc_pb2.PutRequest(key=b"w/a", value=b"1"))
    await kv.Put(rpc_pb2.PutRequest(key=b"other", value=b"x"))
    await kv.Put(rpc_pb2.PutRequest(key=b"w/a", value=b"2"))
    await kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"w/a"))
    first, second, third = [await _read(stream) for _ in range(3)]
    assert [e.kv.value for e in first.events] == [b"1"]
    assert first.header.revision == p1.header.revision
    ev = second.events[0]
    assert ev.type == kv_pb2.Event.PUT and ev.prev_kv.value == b"1" and ev.kv.version == 2
    dl = third.events[0]
    assert dl.type == kv_pb2.Event.DELETE and dl.kv.key == b"w/a" and dl.prev_kv.value == b"2"

    await stream.write(rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=0)))
    cancelled = await _read(stream)
    assert cancelled.canceled and cancelled.watch_id == 0
    await stream.done_writing()
    assert await asyncio.wait_for(stream.read(), 10.0) == grpc.aio.EOF


async def test_history_filters_and_two_watches_on_one_stream(channel: grpc.aio.Channel) -> None:
    kv = rpc_pb2_grpc.KVStub(channel)
    p = await kv.Put(rpc_pb2.PutRequest(key=b"h", value=b"1"))
    await kv.Put(rpc_pb2.PutRequest(key=b"h", value=b"2"))
    d = await kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"h"))
    stream = rpc_pb2_grpc.WatchStub(channel).Watch()
    await stream.write(_create(key=b"h", start_revision=p.header.revision))
    await stream.write(
        _create(
            key=b"h",
            start_revision=p.header.revision,
            filters=[rpc_pb2.WatchCreateRequest.NOPUT],
        )
    )
    got: dict[int, list[rpc_pb2.WatchResponse]] = {0: [], 1: []}
    for _ in range(6):  # two created notices, three history revisions, one delete
        r = await _read(stream)
        got[r.watch_id].append(r)
    all_events = [e for r in got[0] for e in r.events]
    assert [e.kv.value for e in all_events] == [b"1", b"2", b""]
    assert got[1][0].created and got[0][0].created
    deletes = [e for r in got[1] for e in r.events]
    assert [e.type for e in deletes] == [kv_pb2.Event.DELETE]
    assert deletes[0].kv.mod_revision == d.header.revision
    stream.cancel()


async def test_progress_notify_and_progress_request(channel: grpc.aio.Channel) -> None:
    kv = rpc_pb2_grpc.KVStub(channel)
    put = await kv.Put(rpc_pb2.PutRequest(key=b"p", value=b"1"))
    stream = rpc_pb2_grpc.WatchStub(channel).Watch()
    await stream.write(_create(key=b"quiet", progress_notify=True))
    assert (await _read(stream)).created
    note = await _read(stream)  # the fixture's members notify every 0.5 s
    assert note.watch_id == 0 and not note.events and not note.canceled
    assert note.header.revision >= put.header.revision

    await stream.write(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
    while True:
        r = await _read(stream)
        if r.watch_id == -1:
            break
    assert r.header.revision >= put.header.revision and not r.events
    stream.cancel()


async def test_watch_from_a_compacted_revision_is_cancelled(channel: grpc.aio.Channel) -> None:
    kv = rpc_pb2_grpc.KVStub(channel)
    first = await kv.Put(rpc_pb2.PutRequest(key=b"c", value=b"1"))
    last = await kv.Put(rpc_pb2.PutRequest(key=b"c", value=b"2"))
    await kv.Compact(rpc_pb2.CompactionRequest(revision=last.header.revision))
    stream = rpc_pb2_grpc.WatchStub(channel).Watch()
    await stream.write(_create(key=b"c", start_revision=first.header.revision))
    created = await _read(stream)
    assert created.created
    cancelled = await _read(stream)
    assert cancelled.canceled and cancelled.compact_revision == last.header.revision
    assert cancelled.cancel_reason == "etcdserver: mvcc: required revision has been compacted"
    stream.cancel()


@pytest.mark.slow
async def test_a_quiet_stream_pinging_every_two_seconds_is_not_sent_goaway(
    etcd: EtcdCluster,
) -> None:
    """etcd's clients ping quiet streams (etcdctl: --keepalive-time); gRPC servers answer too
    frequent pings with GOAWAY ("too_many_pings") unless told otherwise."""
    options = [
        ("grpc.keepalive_time_ms", 2_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    addr = etcd.addr(etcd.leader_name())
    async with grpc.aio.insecure_channel(addr, options=options) as ch:
        stream = rpc_pb2_grpc.WatchStub(ch).Watch()
        await stream.write(_create(key=b"idle"))
        assert (await _read(stream)).created
        await asyncio.sleep(9.0)  # four or five pings on a stream with nothing to say
        await rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"idle", value=b"still here"))
        r = await _read(stream)
        assert [e.kv.value for e in r.events] == [b"still here"]
        stream.cancel()
