"""Service registration and discovery on leases and watches, plus client-side balancers.

An instance is the key ``/services/<name>/<instance id>`` with a JSON value
(``{"id", "address", "metadata"}``) attached to the lease of its own :class:`Session`: while
the process keeps its session alive it is listed; when it dies the lease expires and the key
is deleted, which every :class:`Discovery` sees as a delete event.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import json
import random
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

from raftkv.api import EventType, KeyValue
from raftkv.client import Client, Watcher
from raftkv.errors import InvalidArgument, RemoteProtocolError
from raftkv.recipes.session import Session

SERVICES_PREFIX = b"/services/"


def service_prefix(name: str) -> bytes:
    if not name or "/" in name:
        raise InvalidArgument(f"bad service name {name!r}")
    return SERVICES_PREFIX + name.encode() + b"/"


@dataclass(frozen=True, slots=True)
class ServiceInstance:
    """One registered instance of a service, as discovered."""

    name: str
    id: str
    address: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        doc = {"id": self.id, "address": self.address, "metadata": dict(self.metadata)}
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_kv(cls, name: str, kv: KeyValue) -> ServiceInstance:
        try:
            d = json.loads(kv.value)
            return cls(name, str(d["id"]), str(d["address"]), dict(d.get("metadata") or {}))
        except (ValueError, KeyError, TypeError) as e:
            raise RemoteProtocolError(f"malformed service entry {kv.key!r}: {e}") from None


class Instance:
    """A registration kept alive by its own session.  ``close()`` (or leaving the async
    context) deregisters it at once; if the process dies it vanishes after ``ttl``."""

    def __init__(self, info: ServiceInstance, session: Session) -> None:
        self.info = info
        self.session = session

    @property
    def key(self) -> bytes:
        return service_prefix(self.info.name) + self.info.id.encode()

    async def close(self) -> None:
        await self.session.close()

    async def __aenter__(self) -> Instance:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class ServiceRegistry:
    def __init__(self, client: Client) -> None:
        self.client = client

    async def register(
        self,
        name: str,
        address: str,
        metadata: Mapping[str, str] | None = None,
        ttl: int = 10,
        instance_id: str | None = None,
    ) -> Instance:
        """Register ``address`` under ``name``; kept alive until :meth:`deregister`."""
        info = ServiceInstance(name, instance_id or secrets.token_hex(8), address, metadata or {})
        session = Session(self.client, ttl)
        await session.start()
        inst = Instance(info, session)
        try:
            await self.client.put(inst.key, info.to_json(), lease=session.lease_id)
        except BaseException:
            await session.close()
            raise
        return inst

    async def deregister(self, instance: Instance) -> None:
        await instance.close()

    async def list(self, name: str) -> list[ServiceInstance]:
        """One read of the current instances (no watch)."""
        resp = await self.client.get(service_prefix(name), prefix=True)
        return [ServiceInstance.from_kv(name, kv) for kv in resp.kvs]

    async def discover(self, name: str) -> Discovery:
        d = Discovery(self.client, name)
        await d.start()
        return d


class Discovery:
    """A local cache of one service's instances kept current by a watch: an initial read,
    then a watch from the next revision (the client's watch resumes after reconnects, so no
    change is lost).  ``version`` grows on every change; ``changed`` is set on each change."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name
        self._prefix = service_prefix(name)
        self._cache: dict[bytes, ServiceInstance] = {}
        self.version = 0
        self.revision = 0
        self._cond = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None

    async def start(self) -> None:
        resp = await self.client.get(self._prefix, prefix=True)
        self._cache = {kv.key: ServiceInstance.from_kv(self.name, kv) for kv in resp.kvs}
        self.revision = resp.header.revision
        watcher = self.client.watch(self._prefix, prefix=True, start_revision=self.revision + 1)
        await watcher.start()
        self._task = asyncio.create_task(self._follow(watcher), name=f"discovery-{self.name}")

    async def _follow(self, watcher: Watcher) -> None:
        try:
            async with watcher:
                async for wr in watcher:
                    for ev in wr.events:
                        if ev.type == EventType.PUT:
                            with contextlib.suppress(RemoteProtocolError):
                                self._cache[ev.kv.key] = ServiceInstance.from_kv(self.name, ev.kv)
                        else:
                            self._cache.pop(ev.kv.key, None)
                    self.revision = wr.revision
                    if wr.events:
                        async with self._cond:
                            self.version += 1
                            self._cond.notify_all()
        except Exception as e:  # surfaced through .error; the cache stays as last known
            self.error = e

    def instances(self) -> list[ServiceInstance]:
        """The instances known now, ordered by id."""
        return sorted(self._cache.values(), key=lambda i: i.id)

    async def wait_for(
        self, predicate: Callable[[list[ServiceInstance]], bool], timeout: float | None = None
    ) -> list[ServiceInstance]:
        """Wait until ``predicate(instances())`` holds (checked at each change)."""
        async with asyncio.timeout(timeout), self._cond:
            await self._cond.wait_for(lambda: predicate(self.instances()))
        return self.instances()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def __aenter__(self) -> Discovery:
        if self._task is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


# --- load balancing ------------------------------------------------------------------------


class InstanceSource(Protocol):
    def instances(self) -> Sequence[ServiceInstance]: ...


class RoundRobin:
    """Each call the next instance, in id order."""

    def __init__(self, source: InstanceSource) -> None:
        self.source = source
        self._n = 0

    def pick(self) -> ServiceInstance | None:
        insts = self.source.instances()
        if not insts:
            return None
        inst = insts[self._n % len(insts)]
        self._n += 1
        return inst


class PickFirst:
    """Always the first instance (lowest id): all traffic to one, fail over to the next."""

    def __init__(self, source: InstanceSource) -> None:
        self.source = source

    def pick(self) -> ServiceInstance | None:
        insts = self.source.instances()
        return insts[0] if insts else None


class Random:
    """A uniformly random instance; pass a seeded ``rng`` for reproducible picks."""

    def __init__(self, source: InstanceSource, rng: random.Random | None = None) -> None:
        self.source = source
        self.rng = rng or random.Random()

    def pick(self) -> ServiceInstance | None:
        insts = self.source.instances()
        return self.rng.choice(insts) if insts else None


def _hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class ConsistentHash:
    """A hash ring with ``vnodes`` virtual nodes per instance (Karger et al.): a key goes to
    the first virtual node clockwise from its hash.  Adding or removing one of N instances
    moves about 1/N of the keys, and only to or from that instance.  The ring is rebuilt
    when the set of instance ids changes."""

    def __init__(self, source: InstanceSource, vnodes: int = 100) -> None:
        if vnodes < 1:
            raise InvalidArgument("vnodes must be at least 1")
        self.source = source
        self.vnodes = vnodes
        self._sig: tuple[tuple[str, str], ...] | None = None
        self._hashes: list[int] = []
        self._owners: list[ServiceInstance] = []

    def _ring(self) -> None:
        insts = self.source.instances()
        sig = tuple((i.id, i.address) for i in insts)
        if sig == self._sig:
            return
        points = sorted(
            (_hash64(f"{inst.id}#{v}".encode()), inst.id, inst)
            for inst in insts
            for v in range(self.vnodes)
        )
        self._sig = sig
        self._hashes = [p[0] for p in points]
        self._owners = [p[2] for p in points]

    def pick(self, key: bytes | str) -> ServiceInstance | None:
        self._ring()
        if not self._hashes:
            return None
        h = _hash64(key.encode() if isinstance(key, str) else key)
        i = bisect.bisect_right(self._hashes, h) % len(self._hashes)
        return self._owners[i]
