"""``raftkv benchmark lease-keepalive``: keep-alive throughput and latency.

Grants ``leases`` leases, then C logical clients over K connections renew them round-robin
(request ``i`` renews lease ``i mod leases``), one keep-alive at a time each, ``total`` in all,
and report like ``benchmark put`` (keep-alives/s, latency percentiles).  Keep-alives are served
by the leader from its lease clock (a renewal is proposed through the log only when the
budget recorded there runs low), so this measures the leader's client path more than Raft.
Afterwards every lease is checked to be alive and then revoked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from raftkv.bench.load import Progress, connections, drive
from raftkv.bench.report import Stats
from raftkv.client import Client
from raftkv.errors import InvalidArgument, RaftKVError


@dataclass(frozen=True, slots=True)
class LeaseBenchResult:
    stats: Stats
    leases: int
    alive_after: int
    """Leases that a time-to-live query found alive after the run (must be all of them)."""
    revoked: int


async def run_lease_keepalive(
    endpoints: Sequence[str],
    *,
    leases: int = 100,
    ttl: int = 60,
    clients: int = 10,
    conns: int = 1,
    total: int = 10_000,
    progress: Progress | None = None,
) -> LeaseBenchResult:
    """Grant ``leases`` leases with ``ttl`` seconds, renew them ``total`` times from
    ``clients`` logical clients over ``conns`` connections, check and revoke them."""
    if leases < 1:
        raise InvalidArgument("--leases must be at least 1")
    if ttl < 1:
        raise InvalidArgument("--ttl must be at least 1")
    async with connections(endpoints, conns) as cs:
        ids: list[int] = []
        for i in range(0, leases, 64):  # grant in bounded batches
            resps = await asyncio.gather(
                *(cs[j % len(cs)].lease_grant(ttl) for j in range(i, min(leases, i + 64)))
            )
            ids.extend(r.id for r in resps)

        async def op(c: Client, i: int) -> object:
            return await c.lease_keep_alive_once(ids[i % leases])

        try:
            stats = await drive(cs, clients, total, op, progress)
            alive = 0
            for lid in ids:
                with contextlib.suppress(RaftKVError):
                    ttl_resp = await cs[0].lease_time_to_live(lid)
                    alive += ttl_resp.ttl > 0
        finally:
            revoked = 0
            for lid in ids:
                with contextlib.suppress(RaftKVError):
                    await cs[0].lease_revoke(lid)
                    revoked += 1
    return LeaseBenchResult(stats, leases, alive, revoked)
