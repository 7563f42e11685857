"""Observability: Prometheus metrics (prometheus-client), ``/health``, structured logs.

Each node has its own :class:`CollectorRegistry`, so several nodes in one process (the
in-process test cluster) never mix their figures.  The HTTP endpoint is a tiny asyncio server
(no thread): ``GET /metrics`` in the Prometheus text format, ``GET /health`` as JSON with 200
when the member is healthy (storage fine, a leader known) and 503 otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from raftkv.protocol.methods import split_addr
from raftkv.server.node import Node

log = logging.getLogger("raftkv.server.metrics")


class _NodeCollector(Collector):
    """Reads the node's counters at scrape time (no bookkeeping on the hot path)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Any:
        n = self.node
        st = n.rn.status()

        def g(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"raftkv_{name}", doc, value=value)

        yield g("raft_term", "Current Raft term.", st.term)
        yield g("raft_is_leader", "1 if this member leads.", 1.0 if n.is_leader else 0.0)
        yield g("raft_has_leader", "1 if a leader is known.", 1.0 if st.leader_id else 0.0)
        yield g("raft_leader_changes_total", "Leader changes seen.", n.leader_changes)
        yield g("raft_commit_index", "Committed log index.", st.commit)
        yield g("raft_applied_index", "Applied log index.", n.applied_index)
        yield g("raft_last_index", "Last log index.", st.last_index)
        yield g("mvcc_revision", "Current store revision.", n.fsm.revision)
        yield g("mvcc_compact_revision", "Compacted revision.", n.fsm.compact_revision)
        yield g("proposals_total", "Proposals made on this member.", n.stats["proposals"])
        yield g(
            "proposals_failed_total", "Proposals that did not commit.", n.stats["proposals_failed"]
        )
        yield g("proposals_pending", "Proposals waiting to commit.", n.pending_proposals)
        yield g("applied_total", "KV entries applied.", n.stats["applied"])
        yield g(
            "disk_fsync_seconds_total",
            "Time in Ready persistence (fsync).",
            n.stats["fsync_seconds"],
        )
        yield g("disk_fsync_total", "Ready persistence transactions.", n.stats["fsync_count"])
        yield g("apply_seconds_total", "Time applying entries.", n.stats["apply_seconds"])
        yield g("db_size_bytes", "Size of the data directory.", n.db_size())
        peer = GaugeMetricFamily(
            "raftkv_peer_round_trip_seconds",
            "Last heartbeat round trip to a peer.",
            labels=["peer"],
        )
        for pid, secs in sorted(n.peer_rtt.items()):
            peer.add_metric([f"{pid:x}"], secs)
        yield peer
        rtt = getattr(getattr(n.transport, "inner", None), "stats", None)
        if rtt is not None:
            for attr in ("messages_sent", "messages_received", "frames_dropped"):
                v = getattr(rtt, attr, None)
                if isinstance(v, int | float):
                    yield g(f"peer_{attr}_total", f"Peer transport: {attr}.", v)


class Metrics:
    def __init__(self, node: Node) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_NodeCollector(node))
        self.requests = Counter(
            "raftkv_client_requests",
            "Client requests by method.",
            ["method"],
            registry=self.registry,
        )
        buckets = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.5, 1.0)
        self.fsync = Histogram(
            "raftkv_disk_fsync_duration_seconds",
            "Time to persist one Ready (one SQLite transaction + fsync).",
            buckets=buckets,
            registry=self.registry,
        )
        self.apply = Histogram(
            "raftkv_apply_duration_seconds",
            "Time to apply one Ready's committed entries.",
            buckets=buckets,
            registry=self.registry,
        )
        node.observe_fsync = self.fsync.observe
        node.observe_apply = self.apply.observe
        self.started = Gauge(
            "raftkv_start_time_seconds", "Unix time the member started.", registry=self.registry
        )
        self.started.set(time.time())

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """``/metrics`` and ``/health`` over plain HTTP/1.1 (GET only)."""

    def __init__(self, node: Node, addr: str) -> None:
        self.node = node
        self.metrics = Metrics(node)
        self.host, self.port = split_addr(addr)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            while (await asyncio.wait_for(reader.readline(), 5.0)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else ""
            if path.startswith("/metrics"):
                status, ctype, body = 200, "text/plain; version=0.0.4", self.metrics.render()
            elif path.startswith("/health"):
                ok, reason = self.node.health()
                status = 200 if ok else 503
                ctype = "application/json"
                body = json.dumps({"health": ok, "reason": reason}).encode()
            else:
                status, ctype, body = 404, "text/plain", b"not found\n"
            reason_text = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason_text}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    _SKIP = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in self._SKIP:
                out[k] = v if isinstance(v, str | int | float | bool) or v is None else str(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``"""

    _SKIP = JsonFormatter._SKIP

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in self._SKIP)
        base = (
            f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} {record.levelname.lower():7} "
            f"{record.name}: {record.getMessage()}"
        )
        text = f"{base} {extras}" if extras else base
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
