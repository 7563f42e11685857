"""Server-side admission control: token buckets per client connection and per node.

A request is admitted only if both its connection's bucket and the node's bucket hold a
token; otherwise it is answered at once with :class:`~raftkv.errors.TooManyRequests` whose
``retry_after`` is the time until the emptier bucket refills one token.  Refusing early and
cheaply, before any work is queued, is what keeps an overloaded member's memory bounded: the
client backs off (it honours ``retry_after``) instead of piling up requests.

The clock is injected (``clock() -> seconds``), so the buckets are tested without sleeping.
Off by default: a rate of 0 (or None) means unlimited.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from raftkv.errors import InvalidArgument, TooManyRequests

Clock = Callable[[], float]

_EPSILON = 1e-9
"""Refill arithmetic in floats must not refuse a request for a rounding error."""


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` stored; starts full.

    # Invariant: 0 <= tokens <= burst
    """

    __slots__ = ("_clock", "_last", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise InvalidArgument("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self._clock = clock
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        if now > self._last:
            self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
        self._last = now

    def wait_time(self, n: float = 1.0) -> float:
        """Seconds until ``n`` tokens are available (0 if they are now); takes nothing."""
        self._refill()
        short = n - self.tokens
        return 0.0 if short <= _EPSILON else short / self.rate

    def take(self, n: float = 1.0) -> None:
        """Remove ``n`` tokens; call only after :meth:`wait_time` returned 0."""
        self.tokens -= n


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    """``raftkv serve --rate-limit-per-conn R --rate-limit-per-node R --burst B``."""

    per_conn: float = 0.0
    """Requests per second per client connection; 0 = unlimited."""
    per_node: float = 0.0
    """Requests per second for the whole member; 0 = unlimited."""
    burst: int = 0
    """Bucket size; 0 = one second's worth of the rate (at least 1)."""

    @property
    def enabled(self) -> bool:
        return self.per_conn > 0 or self.per_node > 0

    def burst_for(self, rate: float) -> float:
        return float(self.burst) if self.burst > 0 else max(1.0, float(math.ceil(rate)))


class AdmissionControl:
    """The node's bucket plus a factory for per-connection buckets."""

    def __init__(self, cfg: AdmissionConfig, clock: Clock = time.monotonic) -> None:
        if cfg.per_conn < 0 or cfg.per_node < 0 or cfg.burst < 0:
            raise InvalidArgument("rate limits and burst must not be negative")
        self.cfg = cfg
        self._clock = clock
        self.node_bucket = (
            TokenBucket(cfg.per_node, cfg.burst_for(cfg.per_node), clock) if cfg.per_node else None
        )
        self.refused = 0
        """Requests answered TooManyRequests so far (for metrics and tests)."""

    def conn_bucket(self) -> TokenBucket | None:
        """A fresh bucket for a new connection (None when per-connection limits are off)."""
        c = self.cfg
        return TokenBucket(c.per_conn, c.burst_for(c.per_conn), self._clock) if c.per_conn else None

    def admit(self, conn_bucket: TokenBucket | None) -> None:
        """Take one token from each bucket, or raise TooManyRequests(retry_after) taking none
        (a refused request must not spend the connection's allowance)."""
        buckets = [b for b in (conn_bucket, self.node_bucket) if b is not None]
        wait = max((b.wait_time() for b in buckets), default=0.0)
        if wait > 0:
            self.refused += 1
            raise TooManyRequests(retry_after=wait)
        for b in buckets:
            b.take()
