"""Where a call goes and what happens when an attempt fails: endpoint choice, leader
affinity, one circuit breaker per endpoint, the connections and their keep-alive probes, and
the one retry loop (:meth:`Router.run`) that every unary call and every watch goes through.

*Whether* a failed attempt is retried is decided by :func:`should_retry` from the error's
own class attributes (:mod:`raftkv.errors`: ``retryable``, ``retry_unapplied``,
``retry_elsewhere``) and the call's :class:`Policy`, nothing else.  This module decides only
*how*: ``NotLeader`` redirects to the leader it names (at most ``max_redirects`` times), an
error with ``retry_elsewhere`` moves on to another endpoint, and every retry that is not a
redirect waits first (exponential backoff with full jitter; ``TooManyRequests`` for at least
its ``retry_after``).  An error with ``member_unhealthy`` counts against the endpoint's
breaker; any other answer, even an application error, counts as a success.  Everything
happens inside one deadline that ends in :class:`~raftkv.errors.Timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final, TypeVar

from raftkv.api import MemberListRequest, MemberListResponse, StatusRequest
from raftkv.client.config import ClientConfig
from raftkv.client.connection import ClientConnection
from raftkv.errors import (
    ConnectionLost,
    InvalidArgument,
    NotLeader,
    RaftKVError,
    Timeout,
    TooManyRequests,
)
from raftkv.protocol import codec
from raftkv.protocol.methods import Method

__all__ = [
    "ADMIN",
    "READ",
    "SERIAL",
    "WRITE",
    "Attempt",
    "BreakerState",
    "CircuitBreaker",
    "Policy",
    "Router",
    "call_timeout",
    "should_retry",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Policy:
    """How one kind of call is routed and retried."""

    leader: bool
    """Send to the leader (writes, lease clocks, membership)."""
    idempotent: bool
    """Safe to resend after it may have reached a server (reads, exactly-once writes)."""
    spread: bool = False
    """Any healthy member will do: round robin over them (serializable reads)."""


READ: Final = Policy(leader=False, idempotent=True)
"""Reads, leases' reads, status: any member, resent freely."""
SERIAL: Final = Policy(leader=False, idempotent=True, spread=True)
"""Serializable reads: round robin over the members whose breakers admit calls."""
WRITE: Final = Policy(leader=True, idempotent=True)
"""Exactly-once writes and lease clocks: the leader, resent freely (same client id and seq)."""
ADMIN: Final = Policy(leader=True, idempotent=False)
"""Membership changes and ``move_leader``: the leader, resent only when surely not applied."""


def should_retry(err: RaftKVError, policy: Policy, *, sent: bool, pinned: bool) -> bool:
    """May a call with ``policy`` that failed with ``err`` be tried again?

    Only the error's class attributes decide: it must be ``retryable``; a call that is not
    idempotent is resent only if the request was surely not applied (never ``sent``, or the
    error is ``retry_unapplied``); a call ``pinned`` to one endpoint is not retried when the
    error says the retry must go elsewhere (``retry_elsewhere``)."""
    if not err.retryable:
        return False
    if not policy.idempotent and sent and not err.retry_unapplied:
        return False
    return not (pinned and err.retry_elsewhere)


class BreakerState(IntEnum):
    """The state of one endpoint's :class:`CircuitBreaker`."""

    CLOSED = 0
    """Calls go through; consecutive failures are counted."""
    OPEN = 1
    """The endpoint is skipped until the cool-down has passed."""
    HALF_OPEN = 2
    """Cool-down over: calls go through; one success closes, one failure re-opens."""


class CircuitBreaker:
    """One endpoint's breaker: closed -> open after ``threshold`` consecutive failures;
    open -> half-open once ``cooldown`` seconds have passed (checked on :meth:`allow`);
    half-open -> closed on a success, or back to open on a failure.  ``clock`` is injected
    (monotonic seconds) so every transition is testable without sleeping.

    Half-open admits every call rather than exactly one probe: the client has one connection
    per endpoint, so concurrent callers share the outcome of the same dial anyway.
    """

    __slots__ = ("_clock", "cooldown", "failures", "opened_at", "state", "threshold")

    def __init__(
        self, threshold: int = 3, cooldown: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if threshold < 1 or cooldown < 0:
            raise InvalidArgument("breaker threshold must be >= 1 and cooldown >= 0")
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self.state = BreakerState.CLOSED
        self.failures = 0
        """Consecutive failures (reset by a success)."""
        self.opened_at = 0.0

    def allow(self) -> bool:
        """May a call go to this endpoint now?  (Moves open -> half-open after the cool-down.)"""
        if self.state == BreakerState.OPEN and self._clock() - self.opened_at >= self.cooldown:
            self.state = BreakerState.HALF_OPEN
        return self.state != BreakerState.OPEN

    def record_success(self) -> None:
        """The endpoint answered."""
        self.state = BreakerState.CLOSED
        self.failures = 0

    def record_failure(self) -> None:
        """The endpoint did not answer (or answered as a member cut off from the leader)."""
        self.failures += 1
        if self.state == BreakerState.HALF_OPEN or self.failures >= self.threshold:
            self.state = BreakerState.OPEN
            self.opened_at = self._clock()


def call_timeout(method: Method, budget: float, last: RaftKVError | None) -> Timeout:
    """The Timeout a call ends with when its budget is spent (naming its last error)."""
    why = f" (last error: {type(last).__name__}: {last})" if last is not None else ""
    return Timeout(f"{method} did not complete within {budget:g}s{why}")


Attempt = Callable[[ClientConnection], Awaitable[T]]
"""One attempt of a call on one connection (run under the attempt's deadline)."""


class Router:
    """The endpoints of one client, their connections and breakers, and the retry loop."""

    def __init__(
        self,
        endpoints: Sequence[str],
        config: ClientConfig,
        rng: random.Random,
        clock: Callable[[], float],
        on_dialled: Callable[[], None] | None = None,
    ) -> None:
        self.endpoints: tuple[str, ...] = tuple(dict.fromkeys(endpoints))
        self.config = config
        self.rng = rng
        self._clock = clock
        self._on_dialled = on_dialled
        self.conns: dict[str, ClientConnection] = {}
        self._dials: dict[str, asyncio.Task[ClientConnection]] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self.keepalive_task: asyncio.Task[None] | None = None
        self.pin = 0
        self.rr = 0
        self.leader_addr: str | None = None
        self.addr_of: dict[int, str] = {}
        """Member id -> the endpoint that answered as that member (from response headers):
        resolves a NotLeader hint that comes without the leader's address."""
        self._resolving: dict[int, asyncio.Task[None]] = {}
        """Leader ids whose client address is being looked up (member list)."""
        self.closed = False

    # --- endpoints and breakers -------------------------------------------------------------

    def breaker(self, endpoint: str) -> CircuitBreaker:
        """The circuit breaker of ``endpoint`` (made on first use)."""
        b = self._breakers.get(endpoint)
        if b is None:
            r = self.config.retries
            b = CircuitBreaker(r.breaker_threshold, r.breaker_cooldown, self._clock)
            self._breakers[endpoint] = b
        return b

    def set_endpoints(self, eps: Sequence[str]) -> None:
        """Replace the endpoints; the one in use stays in use if it is still listed."""
        current = self.endpoints[self.pin % len(self.endpoints)]
        new = tuple(dict.fromkeys(eps))
        if new == self.endpoints:
            return
        self.endpoints = new
        self.pin = new.index(current) if current in new else 0
        self.rr %= len(new)
        if self.leader_addr is not None and self.leader_addr not in new:
            self.leader_addr = None

    def pick(self, policy: Policy) -> str:
        """The endpoint for the next attempt: the leader if the call wants it and its breaker
        admits calls; else (round robin for ``spread`` calls, the current endpoint otherwise)
        the first endpoint whose breaker is not open.  If every breaker is open, try the
        current endpoint anyway: failing fast would only fail every call."""
        if policy.leader and self.leader_addr is not None:
            if self.breaker(self.leader_addr).allow():
                return self.leader_addr
            self.leader_addr = None
        n = len(self.endpoints)
        start = self.rr if policy.spread else self.pin
        for i in range(n):
            addr = self.endpoints[(start + i) % n]
            if self.breaker(addr).allow():
                if policy.spread:
                    self.rr = (start + i + 1) % n
                else:
                    self.pin = (start + i) % n
                return addr
        return self.endpoints[self.pin % n]

    def ok(self, addr: str) -> None:
        """``addr`` answered (anything, even an application error): it is alive."""
        self.breaker(addr).record_success()

    def failed(self, addr: str) -> None:
        """``addr`` failed to answer: count it against its breaker and move on from it."""
        self.breaker(addr).record_failure()
        if addr == self.leader_addr:
            self.leader_addr = None
        if self.endpoints[self.pin % len(self.endpoints)] == addr:
            self.pin = (self.pin + 1) % len(self.endpoints)

    def learn(self, addr: str, result: Any) -> tuple[int, int]:
        """Note which member answered at ``addr``: plain responses are ``[tag, header, ...]``
        with ``header = [tag, cluster_id, member_id, revision, raft_term, leader_id]``.
        Returns (the answering member's id, the leader it knows), 0 where unknown."""
        mid: Any = 0
        lid: Any = 0
        if isinstance(result, list) and len(result) > 1 and isinstance(result[1], list):
            header = result[1]
            mid = header[2] if len(header) > 2 else 0
            lid = header[5] if len(header) > 5 else 0
        if type(mid) is not int or type(lid) is not int:
            return 0, 0
        if mid:
            self.addr_of[mid] = addr
        return mid, lid

    def follow_leader(self, addr: str, mid: int, lid: int) -> None:
        """Leader affinity after a call only the leader decides was answered at ``addr`` by
        member ``mid`` knowing leader ``lid``: the leader's endpoint becomes the target of the
        next such calls.  A follower that forwarded the call names the leader; its client
        address is looked up (member list) in the background the first time."""
        if not self.config.leader_affinity:
            return
        if not lid or lid == mid:  # the leader answered (or no header says otherwise)
            self.leader_addr = addr
            return
        known = self.addr_of.get(lid)
        if known is not None:
            self.leader_addr = known
        elif lid not in self._resolving and not self.closed:
            self._resolving[lid] = asyncio.create_task(
                self._resolve_leader(addr, lid), name="raftkv-client-find-leader"
            )

    async def _resolve_leader(self, addr: str, lid: int) -> None:
        try:
            conn = await self.connect(addr, self.config.timeouts.dial)
            async with asyncio.timeout(self.config.timeouts.command):
                plain = await conn.call(Method.MEMBER_LIST, codec.to_plain(MemberListRequest()))
            members = codec.from_plain(MemberListResponse, plain).members
            found = next((m.client_addr for m in members if m.id == lid and m.client_addr), "")
            if found:
                self.addr_of.setdefault(lid, found)
                if self.leader_addr is None:
                    self.leader_addr = found
        except (RaftKVError, TimeoutError):
            pass  # the next forwarded answer tries again
        finally:
            self._resolving.pop(lid, None)

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter."""
        r = self.config.retries
        return self.rng.uniform(0, min(r.backoff_cap, r.backoff_base * (2**attempt)))

    # --- connections ------------------------------------------------------------------------

    async def connect(self, addr: str, timeout: float) -> ClientConnection:
        """The live connection to ``addr``, dialled if need be (concurrent callers share one
        dial).  ConnectionLost if the client is closed or ``addr`` is unreachable."""
        if self.closed:
            raise ConnectionLost("client is closed")
        conn = self.conns.get(addr)
        if conn is not None and conn.alive:
            return conn
        task = self._dials.get(addr)
        if task is None:
            cfg = self.config
            task = asyncio.create_task(
                ClientConnection.open(addr, timeout, cfg.cluster_id, cfg.limits.max_frame),
                name=f"raftkv-dial-{addr}",
            )
            self._dials[addr] = task
            task.add_done_callback(functools.partial(self._dialled, addr))
        return await asyncio.shield(task)

    def _dialled(self, addr: str, task: asyncio.Task[ClientConnection]) -> None:
        if self._dials.get(addr) is task:
            del self._dials[addr]
        if task.cancelled() or task.exception() is not None:
            return
        conn = task.result()
        if self.closed:
            conn.abort()
            return
        old = self.conns.get(addr)
        self.conns[addr] = conn
        if old is not None and old is not conn:
            old.abort()
        interval = self.config.timeouts.keepalive_interval
        if interval is not None and self.keepalive_task is None:
            self.keepalive_task = asyncio.create_task(
                self._keepalive_loop(interval), name="raftkv-client-keepalive"
            )
        if self._on_dialled is not None:
            self._on_dialled()

    async def close(self) -> None:
        """Stop the keep-alive, cancel dials, close every connection."""
        self.closed = True
        for task in list(self._resolving.values()):
            task.cancel()
        if self.keepalive_task is not None:
            self.keepalive_task.cancel()
            with contextlib.suppress(BaseException):
                await self.keepalive_task
            self.keepalive_task = None
        for t in list(self._dials.values()):
            t.cancel()
        for t in list(self._dials.values()):
            with contextlib.suppress(BaseException):
                await t
        self._dials.clear()
        conns = list(self.conns.values())
        self.conns.clear()
        for c in conns:
            await c.close()

    async def _keepalive_loop(self, interval: float) -> None:
        """Probe every connection that has been quiet for ``interval`` seconds."""
        loop = asyncio.get_running_loop()
        while not self.closed:
            await asyncio.sleep(interval / 2)
            now = loop.time()
            quiet = [c for c in self.conns.values() if c.alive and now - c.last_seen >= interval]
            if quiet:
                await asyncio.gather(*(self.probe(c) for c in quiet))

    async def probe(self, conn: ClientConnection) -> None:
        """A cheap STATUS; any answer (even an error) proves the peer alive.  No answer within
        ``keepalive_timeout`` closes the connection (its pending calls fail with
        ConnectionLost and fail over) and counts against the endpoint's breaker."""
        limit = self.config.timeouts.keepalive_timeout
        try:
            async with asyncio.timeout(limit):
                await conn.call(Method.STATUS, codec.to_plain(StatusRequest()))
        except ConnectionLost:
            pass
        except RaftKVError:
            return  # an answer (a member's Timeout is one too)
        except TimeoutError:
            conn.lost(f"{conn.addr} did not answer a keep-alive in {limit:g}s")
        else:
            return
        if not self.closed:
            self.failed(conn.addr)

    # --- the retry loop ---------------------------------------------------------------------

    async def call(
        self,
        method: Method,
        payload: Any,
        policy: Policy,
        *,
        timeout: float | None = None,
        endpoint: str | None = None,
        used: list[str] | None = None,
    ) -> Any:
        """One unary request through :meth:`run`."""

        async def attempt(conn: ClientConnection) -> Any:
            return await conn.call(method, payload)

        return await self.run(
            method, attempt, policy, timeout=timeout, endpoint=endpoint, used=used
        )

    async def run(
        self,
        method: Method,
        attempt: Attempt[T],
        policy: Policy,
        *,
        timeout: float | None = None,
        endpoint: str | None = None,
        used: list[str] | None = None,
    ) -> T:
        """Run ``attempt`` with redirects, failover and backoff inside one deadline
        (``timeout``, default the configured command timeout); ends in Timeout when it is
        spent.  ``endpoint`` pins the call to that member (no failover, no redirect);
        ``used`` receives the endpoint that answered."""
        loop = asyncio.get_running_loop()
        t = self.config.timeouts
        budget = t.command if timeout is None else timeout
        deadline = loop.time() + budget
        per_attempt = t.attempt if t.attempt is not None else budget / 2
        tries = 0
        redirects = 0
        last: RaftKVError | None = None
        target = endpoint
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise call_timeout(method, budget, last)
            addr = target or self.pick(policy)
            target = endpoint
            sent = False
            if endpoint is not None and not self.breaker(addr).allow():
                r = self.config.retries
                raise ConnectionLost(
                    f"circuit breaker open for {addr}: it failed {r.breaker_threshold} times "
                    f"in a row (retry after {r.breaker_cooldown:g}s)"
                )
            try:
                conn = await self.connect(addr, min(t.dial, remaining))
                sent = True
                async with asyncio.timeout(min(per_attempt, remaining)):
                    result = await attempt(conn)
                self.ok(addr)
                mid, lid = self.learn(addr, result)
                if policy.leader and endpoint is None:
                    self.follow_leader(addr, mid, lid)
                if used is not None:
                    used.append(addr)
                return result
            except RaftKVError as e:
                last = e
                if self.closed and e.retry_elsewhere:
                    raise ConnectionLost("client is closed") from None
                if e.member_unhealthy:
                    self.failed(addr)
                elif sent:
                    self.ok(addr)  # an answer, even an application error: the endpoint is alive
                if not should_retry(e, policy, sent=sent, pinned=endpoint is not None):
                    raise
                if isinstance(e, NotLeader):
                    lead = e.leader_addr or self.addr_of.get(e.leader_hint, "")
                    if lead and lead != addr and redirects < self.config.retries.max_redirects:
                        redirects += 1
                        self.leader_addr = lead
                        target = lead
                        continue  # a redirect goes at once
                    if self.leader_addr == addr:
                        self.leader_addr = None
                    self.pin = (self.pin + 1) % len(self.endpoints)
            except TimeoutError:
                # The attempt used its time without an answer: fail over at once.
                last = Timeout(f"{addr} did not answer {method} in time")
                self.failed(addr)
                if endpoint is not None or not should_retry(last, policy, sent=True, pinned=False):
                    raise call_timeout(method, budget, last) from None
                continue
            # back off before the next attempt
            pause = self.backoff(tries)
            if isinstance(last, TooManyRequests):
                # Honour retry_after, plus jitter so refused clients do not return in step.
                ra = last.retry_after
                pause = max(pause, ra + self.rng.uniform(0, ra))
            tries += 1
            remaining = deadline - loop.time()
            if pause >= remaining:
                raise call_timeout(method, budget, last)
            await asyncio.sleep(pause)
