"""Client load generators: ``raftkv benchmark put|range|txn``.

C logical clients share K connections (K :class:`raftkv.client.client.Client` objects; logical
client ``i`` uses connection ``i % K``), as etcd's benchmark tool spreads ``--clients`` over
``--conns``.  Every logical client issues one request at a time and times it from the call to
the answer, so the figures include the client library, the wire, the server, Raft (one
fsynced round on a quorum) and the state machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from raftkv.api import Compare, CompareResult, CompareTarget, PutRequest
from raftkv.bench.report import Recorder, Stats
from raftkv.client import Client
from raftkv.errors import InvalidArgument, RaftKVError

Progress = Callable[[int], None]
"""Called with the number of requests answered since the previous call."""

PROGRESS_INTERVAL = 0.2


@dataclass(frozen=True, slots=True)
class KeySpec:
    """How a benchmark names its keys: ``prefix`` + a zero-padded decimal index, ``key_size``
    bytes in total (etcd's benchmark writes a varint into a fixed-size buffer instead; decimal
    keeps the keys readable with ``raftkv get``)."""

    prefix: bytes
    key_size: int
    space: int

    def __post_init__(self) -> None:
        digits = self.key_size - len(self.prefix)
        if self.space < 1:
            raise InvalidArgument("key space must hold at least one key")
        if digits < len(str(self.space - 1)):
            raise InvalidArgument(
                f"key size {self.key_size} is too small for prefix {self.prefix!r} "
                f"and a key space of {self.space}"
            )

    def key(self, i: int) -> bytes:
        return self.prefix + str(i % self.space).zfill(self.key_size - len(self.prefix)).encode()


@dataclass(frozen=True, slots=True)
class BenchResult:
    """A finished run: its statistics and the keys it acknowledged writing (empty for reads)."""

    stats: Stats
    written: frozenset[bytes]
    value: bytes


@contextlib.asynccontextmanager
async def connections(
    endpoints: Sequence[str], conns: int, command_timeout: float = 5.0
) -> AsyncIterator[list[Client]]:
    """``conns`` connected clients, closed on exit."""
    if conns < 1:
        raise InvalidArgument("--conns must be at least 1")
    async with contextlib.AsyncExitStack() as stack:
        out = [
            await stack.enter_async_context(
                Client(list(endpoints), command_timeout=command_timeout)
            )
            for _ in range(conns)
        ]
        yield out


async def _ticker(rec: Recorder, progress: Progress | None) -> None:
    seen = 0
    while True:
        await asyncio.sleep(PROGRESS_INTERVAL)
        done = rec.done
        if progress is not None and done > seen:
            progress(done - seen)
        seen = done


async def drive(
    clients: list[Client],
    logical: int,
    total: int,
    op: Callable[[Client, int], Awaitable[object]],
    progress: Progress | None = None,
    on_ok: Callable[[int, object], None] | None = None,
) -> Stats:
    """Run ``op(client, i)`` for i in 0..total-1 on ``logical`` concurrent logical clients and
    return the statistics; ``on_ok(i, answer)`` is called for every acknowledged request."""
    if logical < 1:
        raise InvalidArgument("--clients must be at least 1")
    rec = Recorder()
    next_i = 0

    async def worker(c: Client) -> None:
        nonlocal next_i
        while next_i < total:
            i = next_i
            next_i += 1
            st = time.perf_counter()
            try:
                res = await op(c, i)
            except RaftKVError as e:
                rec.error(e)
                continue
            rec.ok(time.perf_counter() - st)
            if on_ok is not None:
                on_ok(i, res)

    tick = asyncio.create_task(_ticker(rec, progress))
    try:
        await asyncio.gather(*(worker(clients[j % len(clients)]) for j in range(logical)))
    finally:
        rec.finish()
        tick.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick
    if progress is not None:
        progress(0)
    return rec.stats()


async def run_put(
    endpoints: Sequence[str],
    *,
    clients: int = 1,
    conns: int = 1,
    total: int = 10_000,
    key_size: int = 8,
    val_size: int = 256,
    key_space: int = 0,
    sequential_keys: bool = False,
    prefix: bytes = b"",
    progress: Progress | None = None,
) -> BenchResult:
    """``benchmark put``: ``total`` puts of ``val_size`` random bytes.  Keys are the request
    number (``--sequential-keys``) or a random index, modulo the key space (0: ``total``, so
    sequential keys are all distinct)."""
    spec = KeySpec(prefix, key_size, key_space or total)
    rng = random.Random()
    indices = (
        list(range(total)) if sequential_keys else [rng.randrange(spec.space) for _ in range(total)]
    )
    value = os.urandom(val_size)
    written: set[bytes] = set()

    async def op(c: Client, i: int) -> object:
        return await c.put(spec.key(indices[i]), value)

    async with connections(endpoints, conns) as cs:
        stats = await drive(
            cs, clients, total, op, progress, on_ok=lambda i, _: written.add(spec.key(indices[i]))
        )
    return BenchResult(stats, frozenset(written), value)


async def run_range(
    endpoints: Sequence[str],
    *,
    key: bytes,
    range_end: bytes | None = None,
    serializable: bool = False,
    clients: int = 1,
    conns: int = 1,
    total: int = 10_000,
    progress: Progress | None = None,
) -> BenchResult:
    """``benchmark range``: ``total`` linearizable (default) or serializable gets of
    ``key`` (or ``[key, range_end)``)."""

    async def op(c: Client, i: int) -> object:
        return await c.get(key, range_end=range_end, serializable=serializable)

    async with connections(endpoints, conns) as cs:
        stats = await drive(cs, clients, total, op, progress)
    return BenchResult(stats, frozenset(), b"")


async def run_txn(
    endpoints: Sequence[str],
    *,
    clients: int = 1,
    conns: int = 1,
    total: int = 10_000,
    key_size: int = 8,
    val_size: int = 256,
    ops_per_txn: int = 1,
    prefix: bytes = b"",
    progress: Progress | None = None,
) -> BenchResult:
    """``benchmark txn``: ``total`` txns, each putting ``ops_per_txn`` distinct keys when
    none of them exists yet (etcd's ``txn-put``-like load with a compare on the first key)."""
    spec = KeySpec(prefix, key_size, total * ops_per_txn)
    value = os.urandom(val_size)
    written: set[bytes] = set()

    def keys(i: int) -> list[bytes]:
        return [spec.key(i * ops_per_txn + j) for j in range(ops_per_txn)]

    def committed(i: int, resp: object) -> None:
        if getattr(resp, "succeeded", False):
            written.update(keys(i))

    async def op(c: Client, i: int) -> object:
        ks = keys(i)
        cmp = Compare(key=ks[0], target=CompareTarget.VERSION, result=CompareResult.EQUAL, value=0)
        return await c.txn([cmp], [PutRequest(key=k, value=value) for k in ks], [])

    async with connections(endpoints, conns) as cs:
        stats = await drive(cs, clients, total, op, progress, on_ok=committed)
    return BenchResult(stats, frozenset(written), value)


async def read_back(endpoints: Sequence[str], keys: frozenset[bytes], prefix: bytes) -> int:
    """How many of ``keys`` a linearizable read under ``prefix`` finds (for verification)."""
    from raftkv.api import prefix_end

    async with Client(list(endpoints)) as c:
        resp = await c.get(prefix, range_end=prefix_end(prefix), keys_only=True)
    found = {kv.key for kv in resp.kvs}
    return len(keys & found)
