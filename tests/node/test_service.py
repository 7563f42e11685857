"""The API service decides each call whatever the wire: checked here without any front end."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from raftkv.api import (
    HashKVRequest,
    MemberListRequest,
    PutRequest,
    RangeRequest,
    StatusRequest,
)
from raftkv.errors import InvalidArgument, ReplyTooLarge
from raftkv.server.service import ApiService, CallContext, Permission
from raftkv.server.watch import WatchSpec
from raftkv.testing import LocalCluster


def _service(cluster: LocalCluster, name: str) -> ApiService:
    m = cluster.members[name]
    assert m.server is not None
    return m.server.service


async def test_a_progress_request_answers_after_every_event_up_to_its_revision(
    tmp_path: Path,
) -> None:
    async with LocalCluster(3, tmp_path) as cluster:
        leader = await cluster.wait_leader()
        svc = _service(cluster, leader.name)
        got: list[dict[str, Any]] = []
        created = asyncio.Event()

        def send(d: dict[str, Any]) -> None:
            got.append(d)
            created.set()

        async def drain() -> None:
            return None

        group = object()
        other = object()
        task = asyncio.create_task(
            svc.watch(WatchSpec(b"w", b"x"), send, drain, 1, group=group), name="watch"
        )
        await asyncio.wait_for(created.wait(), 5)
        for i in range(5):
            await svc.put(PutRequest(b"w%d" % i, b"v"), CallContext(client_id=9, seq=i + 1))
        await svc.put(PutRequest(b"elsewhere", b"v"), CallContext(client_id=9, seq=6))
        assert svc.watch_progress(other) == 0  # another caller's watches are not asked
        assert svc.watch_progress(group) == 1
        rev = leader.node.fsm.revision if leader.node else 0

        async def progress() -> dict[str, Any]:
            while True:
                for d in got:
                    if d.get("progress"):
                        return d
                await asyncio.sleep(0.01)

        p = await asyncio.wait_for(progress(), 5)
        task.cancel()
        events = [d for d in got if d.get("events")]
        assert p["revision"] == rev  # the last event was elsewhere: progress covers it too
        assert [d["revision"] for d in events] == list(range(rev - 5, rev))
        assert got.index(p) > got.index(events[-1])


async def test_the_authorizer_sees_every_key_a_call_touches(tmp_path: Path) -> None:
    async with LocalCluster(1, tmp_path) as cluster:
        svc = _service(cluster, "n1")
        seen: list[tuple[Permission, bytes, bytes]] = []

        class Deny:
            def check(self, ctx: CallContext, perm: Permission, key: bytes, end: bytes) -> None:
                seen.append((perm, key, end))
                if key == b"secret":
                    raise InvalidArgument("denied")

        svc.authorizer = Deny()
        await svc.put(PutRequest(b"open", b"v"), CallContext(client_id=1, seq=1))
        with pytest.raises(InvalidArgument):
            await svc.put(PutRequest(b"secret", b"v"), CallContext(client_id=1, seq=2))
        with pytest.raises(InvalidArgument):
            await svc.range(RangeRequest(b"secret"))
        await svc.member_list(MemberListRequest())
        await svc.hash_kv(HashKVRequest())
        assert (Permission.WRITE, b"open", b"") in seen
        assert (Permission.READ, b"secret", b"") in seen
        assert (Permission.ADMIN, b"", b"") in seen


async def test_typed_status_and_the_reply_limit(tmp_path: Path) -> None:
    async with LocalCluster(1, tmp_path) as cluster:
        svc = _service(cluster, "n1")
        st = await svc.status(StatusRequest())
        assert st.leader == st.id == st.header.member_id and st.role == "leader"
        assert st.header.raft_term == st.term >= 1
        await svc.put(PutRequest(b"big", b"x" * 2000), CallContext(client_id=1, seq=1))
        svc.max_reply_bytes = 1000
        with pytest.raises(ReplyTooLarge):
            await svc.range(RangeRequest(b"big"))
        assert (await svc.range(RangeRequest(b"big", keys_only=True))).count == 1


async def test_alarms_report_a_member_out_of_service(tmp_path: Path) -> None:
    from raftkv.api import AlarmAction, AlarmRequest, AlarmType
    from raftkv.errors import StorageError

    async with LocalCluster(3, tmp_path) as cluster:
        leader = await cluster.wait_leader()
        follower = next(m for m in cluster.members.values() if m is not leader)
        assert follower.node is not None
        svc = _service(cluster, follower.name)
        assert (await svc.alarm(AlarmRequest())).alarms == ()
        with pytest.raises(InvalidArgument):
            await svc.alarm(AlarmRequest(AlarmAction.ACTIVATE, 0, AlarmType.NOSPACE))
        assert (await svc.alarm(AlarmRequest(AlarmAction.DEACTIVATE))).alarms == ()
        follower.node.stop_serving(StorageError("injected: the disk is gone"))
        got = (await svc.alarm(AlarmRequest())).alarms
        assert [(a.member_id, a.alarm) for a in got] == [(follower.node.id, AlarmType.CORRUPT)]
        with pytest.raises(InvalidArgument, match="add it back"):
            await svc.alarm(AlarmRequest(AlarmAction.DEACTIVATE))
        assert (await _service(cluster, leader.name).alarm(AlarmRequest())).alarms == ()
