"""Latency bookkeeping and the text report of the client benchmarks.

The report has the shape of etcd's benchmark tool (``Summary``, ``Response time histogram``,
``Latency distribution``), so figures from ``raftkv benchmark put`` and etcd's tools can be
read side by side.  Statistics follow etcd's definitions: requests/s is successful requests
over the wall time of the whole run, stddev is the population standard deviation of the
successful requests' latencies, and a failed request counts only in the error distribution.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field

PERCENTILES: tuple[float, ...] = (10, 25, 50, 75, 90, 95, 99, 99.9)
HISTOGRAM_BUCKETS = 10
HISTOGRAM_WIDTH = 40


def percentile(sorted_lats: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of an ascending list (0.0 when empty)."""
    n = len(sorted_lats)
    if n == 0:
        return 0.0
    idx = math.ceil(p * (n + 1) / 100.0) - 1
    return sorted_lats[min(max(idx, 0), n - 1)]


@dataclass(frozen=True, slots=True)
class Stats:
    """The summary of one benchmark run; latencies are in seconds."""

    requests: int
    """Successful requests."""
    errors: dict[str, int]
    """Failed requests by error text."""
    seconds: float
    """Wall time from the first request to the last answer."""
    average: float
    fastest: float
    slowest: float
    stddev: float
    percentiles: dict[float, float]
    histogram: tuple[tuple[float, int], ...]
    """``(upper bound, count)`` of each bucket, fastest to slowest."""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def p(self, pct: float) -> float:
        return self.percentiles[pct]

    def render(self, title: str = "") -> str:
        """The etcd-benchmark-style text report."""
        lines: list[str] = []
        if title:
            lines.append(title)
        lines += [
            "",
            "Summary:",
            f"  Total:\t{self.seconds:.4f} secs.",
            f"  Requests:\t{self.requests}.",
            f"  Slowest:\t{self.slowest:.4f} secs.",
            f"  Fastest:\t{self.fastest:.4f} secs.",
            f"  Average:\t{self.average:.4f} secs.",
            f"  Stddev:\t{self.stddev:.4f} secs.",
            f"  Requests/sec:\t{self.rps:.4f}",
            "",
            "Response time histogram:",
        ]
        top = max((c for _, c in self.histogram), default=0)
        for bound, count in self.histogram:
            bar = "∎" * (count * HISTOGRAM_WIDTH // top if top else 0)
            lines.append(f"  {bound:.4f} [{count}]\t|{bar}")
        lines += ["", "Latency distribution:"]
        for pct in PERCENTILES:
            lines.append(f"  {pct:g}% in {self.percentiles[pct] * 1000:.3f} ms.")
        if self.errors:
            lines += ["", "Error distribution:"]
            for text, n in sorted(self.errors.items(), key=lambda kv: -kv[1]):
                lines.append(f"  [{n}]\t{text}")
        return "\n".join(lines) + "\n"


def _histogram(lats: list[float]) -> tuple[tuple[float, int], ...]:
    """Ten equal-width buckets between fastest and slowest, plus one at the slowest."""
    if not lats:
        return ()
    lo, hi = lats[0], lats[-1]
    width = (hi - lo) / HISTOGRAM_BUCKETS
    bounds = [lo + width * i for i in range(HISTOGRAM_BUCKETS)] + [hi]
    counts = [0] * len(bounds)
    b = 0
    for lat in lats:  # ascending, so the bucket index only moves forward
        while lat > bounds[b] and b < len(bounds) - 1:
            b += 1
        counts[b] += 1
    return tuple(zip(bounds, counts, strict=True))


@dataclass(slots=True)
class Recorder:
    """Collects request latencies while a benchmark runs (single event loop, no locking)."""

    started: float = field(default_factory=time.perf_counter)
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    finished: float | None = None

    @property
    def done(self) -> int:
        """Requests answered so far, successful or not."""
        return len(self.latencies) + sum(self.errors.values())

    def ok(self, seconds: float) -> None:
        self.latencies.append(seconds)

    def error(self, exc: BaseException) -> None:
        self.errors[f"{type(exc).__name__}: {exc}"] += 1

    def finish(self) -> None:
        self.finished = time.perf_counter()

    def stats(self) -> Stats:
        end = self.finished if self.finished is not None else time.perf_counter()
        lats = sorted(self.latencies)
        n = len(lats)
        avg = sum(lats) / n if n else 0.0
        std = math.sqrt(sum((x - avg) ** 2 for x in lats) / n) if n else 0.0
        return Stats(
            requests=n,
            errors=dict(self.errors),
            seconds=end - self.started,
            average=avg,
            fastest=lats[0] if n else 0.0,
            slowest=lats[-1] if n else 0.0,
            stddev=std,
            percentiles={p: percentile(lats, p) for p in PERCENTILES},
            histogram=_histogram(lats),
        )
