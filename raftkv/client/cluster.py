"""The cluster and maintenance calls of :class:`~raftkv.client.Client`: status, health,
hashes, membership, leadership, alarms, defragmentation and snapshots."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TypeVar

from raftkv import api
from raftkv.client.router import ADMIN, READ, Router
from raftkv.client.snapshot import save_snapshot
from raftkv.client.values import (
    EndpointHealth,
    EndpointStatus,
    HashKVResponse,
    Member,
    MemberAddResponse,
    SnapshotInfo,
    decode,
    endpoint_status,
)
from raftkv.errors import NotLeader, TransientError
from raftkv.protocol import codec
from raftkv.protocol.methods import Method

__all__ = ["ClusterCalls"]

T = TypeVar("T")


class ClusterCalls:
    """Mixed into :class:`~raftkv.client.Client` (which provides the router)."""

    _router: Router

    # --- cluster and maintenance -----------------------------------------------------------

    async def status(
        self, endpoint: str | None = None, *, hash: bool = False, timeout: float | None = None
    ) -> EndpointStatus:
        """The status of ``endpoint`` (default: any reachable member).  ``hash=True`` also
        computes the content hash, which walks the member's whole store (about 2 s at a
        million keys): ask for it when comparing members, not to probe liveness."""
        req = api.StatusRequest(with_hash=hash)
        addr, st = await self._admin(Method.STATUS, req, api.StatusResponse, endpoint, timeout)
        return endpoint_status(addr, st)

    async def health(
        self, endpoint: str | None = None, *, timeout: float | None = None
    ) -> EndpointHealth:
        """Whether ``endpoint`` has a leader and serves a linearizable read.  An unreachable
        endpoint is reported unhealthy rather than raised."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            addr, h = await self._admin(
                Method.HEALTH, api.HealthRequest(), api.HealthResponse, endpoint, timeout
            )
        except (TransientError, NotLeader) as e:
            return EndpointHealth(endpoint or "", False, loop.time() - t0, str(e))
        return EndpointHealth(addr, h.health, loop.time() - t0, h.reason)

    async def hash_kv(
        self, revision: int = 0, endpoint: str | None = None, *, timeout: float | None = None
    ) -> HashKVResponse:
        """The hash of ``endpoint``'s MVCC history up to ``revision`` (0: the latest),
        to compare members (default: any reachable member)."""
        req = api.HashKVRequest(revision)
        addr, h = await self._admin(Method.HASH_KV, req, api.HashKVResponse, endpoint, timeout)
        return HashKVResponse(addr, h.hash, h.revision, h.compact_revision)

    async def member_list(self, *, timeout: float | None = None) -> tuple[Member, ...]:
        """The members of the cluster, learners included."""
        req = codec.to_plain(api.MemberListRequest())
        plain = await self._router.call(Method.MEMBER_LIST, req, READ, timeout=timeout)
        return decode(api.MemberListResponse, plain).members

    async def sync_endpoints(self, *, timeout: float | None = None) -> tuple[str, ...]:
        """Replace the endpoints with the client addresses of the current voting members
        (etcd's ``Client.Sync``); returns them.  Members that have not published a client
        address yet are left out; an empty answer changes nothing.  The endpoint in use stays
        in use if it is still a member."""
        members = await self.member_list(timeout=timeout)
        eps = [m.client_addr for m in members if m.client_addr and not m.is_learner]
        if eps:
            self._router.set_endpoints(eps)
        return self._router.endpoints

    async def member_add(
        self,
        name: str,
        peer_addr: str,
        client_addr: str = "",
        learner: bool = False,
        *,
        timeout: float | None = None,
    ) -> MemberAddResponse:
        """Add a member called ``name`` at ``peer_addr`` (``learner``: as a
        non-voting learner).  Not idempotent: resent only when surely not applied, so after
        a Timeout or ConnectionLost look at :meth:`member_list` before trying again."""
        payload = codec.to_plain(api.MemberAddRequest(name, peer_addr, client_addr, learner))
        plain = await self._router.call(Method.MEMBER_ADD, payload, ADMIN, timeout=timeout)
        return decode(MemberAddResponse, plain)

    async def member_remove(self, id: int, *, timeout: float | None = None) -> tuple[Member, ...]:
        """Remove member ``id``; returns the remaining members.  Not idempotent
        (see :meth:`member_add`)."""
        payload = codec.to_plain(api.MemberRemoveRequest(id))
        plain = await self._router.call(Method.MEMBER_REMOVE, payload, ADMIN, timeout=timeout)
        return decode(api.MembersResponse, plain).members

    async def member_promote(self, id: int, *, timeout: float | None = None) -> tuple[Member, ...]:
        """Promote learner ``id`` to a voter once it has caught up; returns the
        members.  Not idempotent (see :meth:`member_add`)."""
        payload = codec.to_plain(api.MemberPromoteRequest(id))
        plain = await self._router.call(Method.MEMBER_PROMOTE, payload, ADMIN, timeout=timeout)
        return decode(api.MembersResponse, plain).members

    async def member_update(
        self, id: int, peer_addr: str, *, timeout: float | None = None
    ) -> tuple[Member, ...]:
        """Change member ``id``'s advertised peer address; returns the members.  Safe to
        repeat (the same address again changes nothing)."""
        payload = codec.to_plain(api.MemberUpdateRequest(id, peer_addr))
        plain = await self._router.call(Method.MEMBER_UPDATE, payload, ADMIN, timeout=timeout)
        return decode(api.MembersResponse, plain).members

    async def alarm_list(
        self, endpoint: str | None = None, *, timeout: float | None = None
    ) -> tuple[api.AlarmMember, ...]:
        """The alarms ``endpoint`` (default: any member) has raised: raftkv raises CORRUPT on
        a member that lost acknowledged state or whose storage failed (it has no space
        quota, so never NOSPACE)."""
        _, r = await self._admin(
            Method.ALARM, api.AlarmRequest(), api.AlarmResponse, endpoint, timeout
        )
        return r.alarms

    async def alarm_disarm(
        self, endpoint: str | None = None, *, timeout: float | None = None
    ) -> tuple[api.AlarmMember, ...]:
        """Clear ``endpoint``'s alarms; returns those cleared.  A CORRUPT alarm is refused
        (InvalidArgument with the recovery steps): it takes replacing the member."""
        req = api.AlarmRequest(api.AlarmAction.DEACTIVATE)
        _, r = await self._admin(Method.ALARM, req, api.AlarmResponse, endpoint, timeout)
        return r.alarms

    async def defragment(
        self, endpoint: str, *, timeout: float | None = None
    ) -> api.DefragmentResponse:
        """Give ``endpoint``'s free store pages back to the file system (after a compaction
        this shrinks its data file); returns the sizes before and after."""
        budget = timeout if timeout is not None else max(self._router.config.timeouts.command, 60.0)
        _, r = await self._admin(
            Method.DEFRAGMENT, api.DefragmentRequest(), api.DefragmentResponse, endpoint, budget
        )
        return r

    async def move_leader(self, id: int, *, timeout: float | None = None) -> int:
        """Transfer leadership to member ``id``; returns the new leader's id."""
        payload = codec.to_plain(api.MoveLeaderRequest(id))
        plain = await self._router.call(Method.MOVE_LEADER, payload, ADMIN, timeout=timeout)
        leader = decode(api.MoveLeaderResponse, plain).leader
        if leader == id:
            # Leadership moved: forget the old leader so the next write finds the new one.
            self._router.leader_addr = None
        return leader

    async def snapshot_save(
        self, path: str | os.PathLike[str], *, timeout: float | None = None
    ) -> SnapshotInfo:
        """Stream a snapshot of one member's state into ``path`` (written to a temporary file,
        checked against the server's SHA-256, fsynced, then renamed)."""
        budget = timeout if timeout is not None else max(self._router.config.timeouts.command, 60.0)
        return await save_snapshot(self._router, Path(path), budget)

    # --- the request machinery -------------------------------------------------------------

    async def _admin(
        self,
        method: Method,
        req: object,
        resp_cls: type[T],
        endpoint: str | None,
        timeout: float | None,
    ) -> tuple[str, T]:
        """A maintenance call to ``endpoint`` (or any member); returns who answered, and
        the answer."""
        payload = codec.to_plain(req)
        if endpoint is None:
            addr_box: list[str] = []
            res = await self._router.call(method, payload, READ, timeout=timeout, used=addr_box)
            return addr_box[-1], decode(resp_cls, res)
        res = await self._router.call(method, payload, READ, timeout=timeout, endpoint=endpoint)
        return endpoint, decode(resp_cls, res)
