"""``raftkv benchmark watch``: event delivery latency with many watchers on one prefix.

W watchers watch one prefix, spread over K client connections (the server allows 1,000
watches per connection; connection ``j`` is pinned to endpoint ``j mod members``, so the
watches are spread over every member as etcd clients spread over a cluster).  One or more
writers put ``total`` keys under the prefix at a fixed rate (etcd's ``benchmark watch-latency``
has the same knobs: ``--watchers``, ``--streams``, ``--put-rate``, ``--put-total``).

For every delivery (watcher x put) the latency is measured from the put's send and from its
acknowledgement to the moment the watcher's iterator yields the event.  The event can beat
the acknowledgement (a member applies and notifies watchers while the answer is still on its
way), so latencies from the acknowledgement may be negative.  Watchers and writers share this
process's event loop: with 10,000 watchers the client's own decoding is part of the figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from raftkv.api import prefix_end
from raftkv.bench.procs import format_rss
from raftkv.bench.report import percentile
from raftkv.client import Client, Watcher
from raftkv.errors import InvalidArgument, RaftKVError

MAX_WATCHES_PER_CONN = 1_000
"""The server's default limit (``WatchHub.max_watches_per_conn``)."""

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Dist:
    """p50/p90/p99/max of a list of latencies (seconds)."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Dist:
        v = sorted(values)
        return cls(
            len(v), percentile(v, 50), percentile(v, 90), percentile(v, 99), v[-1] if v else 0.0
        )

    def line(self) -> str:
        return (
            f"p50 {self.p50 * 1000:.2f} ms, p90 {self.p90 * 1000:.2f} ms, "
            f"p99 {self.p99 * 1000:.2f} ms, max {self.max * 1000:.2f} ms"
        )


@dataclass(frozen=True, slots=True)
class WatchBenchResult:
    watchers: int
    conns: int
    writers: int
    puts: int
    """Puts acknowledged."""
    put_errors: int
    expected: int
    """Deliveries expected: watchers x acknowledged puts."""
    delivered: int
    """Deliveries of acknowledged puts received (each watcher, each put, counted once)."""
    duplicates: int
    out_of_order: int
    create_seconds: float
    """Time to create every watch (all confirmed by the server)."""
    write_seconds: float
    drain_seconds: float
    """From the last acknowledged put to the last delivery (or the drain timeout)."""
    from_send: Dist
    from_ack: Dist
    rss_before: Mapping[str, int | None]
    rss_after: Mapping[str, int | None]
    client_cpu: float
    """CPU seconds this (watching and writing) process used while the puts ran and drained."""
    member_cpu: Mapping[str, float | None]
    """CPU seconds each member used over the same span (empty when not known)."""

    @property
    def complete(self) -> bool:
        return (
            self.delivered == self.expected
            and self.duplicates == 0
            and self.out_of_order == 0
            and self.put_errors == 0
        )

    def lines(self) -> list[str]:
        out = [
            f"watch: {self.watchers} watchers on one prefix over {self.conns} connections, "
            f"{self.writers} writer(s)",
            f"watches created in {self.create_seconds:.2f} s",
            f"puts: {self.puts} acknowledged in {self.write_seconds:.2f} s, "
            f"{self.put_errors} failed",
            f"deliveries: {self.delivered} of {self.expected}, {self.duplicates} duplicates, "
            f"{self.out_of_order} out of order "
            f"({self.delivered / self.write_seconds if self.write_seconds else 0:,.0f}/s)",
            f"latency from put sent:  {self.from_send.line()}",
            f"latency from put acked: {self.from_ack.line()}",
        ]
        cpu = [f"this client {self.client_cpu:.1f} s"] + [
            f"{n} {v:.1f} s" for n, v in self.member_cpu.items() if v is not None
        ]
        out.append(
            f"CPU used while writing and draining ({self.write_seconds + self.drain_seconds:.1f}"
            f" s): {', '.join(cpu)}"
        )
        if any(v is not None for v in self.rss_before.values()):
            out.append(f"member RSS before watches: {format_rss(self.rss_before)}")
            out.append(f"member RSS after the run:  {format_rss(self.rss_after)}")
        return out


async def run_watch(
    endpoints: Sequence[str],
    *,
    watchers: int = 10_000,
    conns: int = 20,
    writers: int = 1,
    total: int = 100,
    rate: float = 10.0,
    val_size: int = 100,
    prefix: bytes = b"/watchbench/",
    drain_timeout: float = 60.0,
    rss: Callable[[], Mapping[str, int | None]] | None = None,
    cpu: Callable[[], Mapping[str, float | None]] | None = None,
    progress: Progress | None = None,
) -> WatchBenchResult:
    """Open ``watchers`` watches on ``prefix`` over ``conns`` connections, then put ``total``
    keys under it from ``writers`` concurrent writers at ``rate`` puts/s in all (0: as fast as
    the writers go), wait until every watcher has seen every acknowledged put (or
    ``drain_timeout``), and report delivery latency.  ``rss()`` (member memory) is sampled
    before the watches open and after the run, ``cpu()`` (member CPU seconds) before and after
    the writes and drain; ``progress(n)`` is called as puts are acknowledged."""
    if watchers < 1 or conns < 1 or writers < 1 or total < 1:
        raise InvalidArgument("--watchers, --conns, --writers and --total must be at least 1")
    if -(-watchers // conns) > MAX_WATCHES_PER_CONN:
        raise InvalidArgument(
            f"{watchers} watchers over {conns} connections exceeds the server's "
            f"{MAX_WATCHES_PER_CONN} watches per connection; raise --conns"
        )
    rss_before = dict(rss()) if rss is not None else {}
    eps = list(endpoints)
    value = os.urandom(val_size)
    sent: dict[int, float] = {}  # key index -> send time
    acked: dict[int, float] = {}  # key index -> ack time
    # key index -> receive times, one per watcher that saw it; keys carry their index
    received: dict[int, list[float]] = {}
    seen: list[int] = [-1] * watchers  # last key index each watcher saw (writers go in order)
    counts = [0] * watchers
    duplicates = 0
    out_of_order = 0
    put_errors = 0
    all_done = asyncio.Event()
    writing_done = asyncio.Event()
    expected_now = 0  # acknowledged puts, known once the writers are done
    finished = [False] * watchers
    n_finished = 0

    def key(i: int) -> bytes:
        return prefix + b"%010d" % i

    def index_of(k: bytes) -> int:
        return int(k[len(prefix) :])

    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                # Pin connection j to one member, so the watches spread over the cluster.
                Client(eps[j % len(eps) :] + eps[: j % len(eps)], command_timeout=30.0)
            )
            for j in range(conns)
        ]
        t0 = time.perf_counter()
        ws: list[Watcher] = []
        for w in range(watchers):
            ws.append(clients[w % conns].watch(prefix, prefix=True))
        await asyncio.gather(*(w.start() for w in ws))
        create_seconds = time.perf_counter() - t0
        for watch in ws:
            stack.callback(watch.cancel)

        async def consume(w: int, watcher: Watcher) -> None:
            nonlocal duplicates, out_of_order
            async for resp in watcher:
                now = time.perf_counter()
                for ev in resp.events:
                    i = index_of(ev.kv.key)
                    if i == seen[w]:
                        duplicates += 1
                        continue
                    if writers == 1 and i < seen[w]:
                        out_of_order += 1
                    seen[w] = max(seen[w], i)
                    received.setdefault(i, []).append(now)
                    counts[w] += 1
                if writing_done.is_set():
                    mark(w)

        def mark(w: int) -> None:
            nonlocal n_finished
            if not finished[w] and counts[w] >= expected_now:
                finished[w] = True
                n_finished += 1
                if n_finished == watchers:
                    all_done.set()

        tasks = [asyncio.create_task(consume(w, ws[w])) for w in range(watchers)]
        next_i = 0
        interval = writers / rate if rate > 0 else 0.0
        w_start = time.perf_counter()
        cpu_start = cpu() if cpu is not None else {}
        client_cpu_start = time.process_time()

        async def writer(c: Client) -> None:
            nonlocal next_i, put_errors
            due = time.perf_counter()
            while next_i < total:
                i = next_i
                next_i += 1
                if interval:
                    due += interval
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                sent[i] = time.perf_counter()
                try:
                    await c.put(key(i), value)
                except RaftKVError:
                    put_errors += 1
                    continue
                acked[i] = time.perf_counter()
                if progress is not None:
                    progress(1)

        wclients = [
            await stack.enter_async_context(Client(eps, command_timeout=5.0))
            for _ in range(writers)
        ]
        try:
            await asyncio.gather(*(writer(c) for c in wclients))
            write_seconds = time.perf_counter() - w_start
            expected_now = len(acked)
            writing_done.set()
            for w in range(watchers):
                mark(w)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_timeout):
                    await all_done.wait()
            drain_seconds = time.perf_counter() - w_start - write_seconds
            client_cpu = time.process_time() - client_cpu_start
            cpu_end = cpu() if cpu is not None else {}
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        rss_after = dict(rss()) if rss is not None else {}
        # Clean up the keys (the watches are cancelled first, on the stack).
        for watch in ws:
            watch.cancel()
        with contextlib.suppress(RaftKVError):
            await wclients[0].delete(prefix, range_end=prefix_end(prefix))

    from_send: list[float] = []
    from_ack: list[float] = []
    delivered = 0
    for i, times in received.items():
        if i not in acked:
            continue  # a failed put that still committed: not counted
        delivered += len(times)
        s, a = sent[i], acked[i]
        from_send.extend(t - s for t in times)
        from_ack.extend(t - a for t in times)
    return WatchBenchResult(
        watchers=watchers,
        conns=conns,
        writers=writers,
        puts=len(acked),
        put_errors=put_errors,
        expected=watchers * len(acked),
        delivered=delivered,
        duplicates=duplicates,
        out_of_order=out_of_order,
        create_seconds=create_seconds,
        write_seconds=write_seconds,
        drain_seconds=drain_seconds,
        from_send=Dist.of(from_send),
        from_ack=Dist.of(from_ack),
        rss_before=rss_before,
        rss_after=rss_after,
        client_cpu=client_cpu,
        member_cpu={
            n: (e - b if (e is not None and (b := cpu_start.get(n)) is not None) else None)
            for n, e in cpu_end.items()
        },
    )
