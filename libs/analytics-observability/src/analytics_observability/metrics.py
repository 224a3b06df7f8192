"""Prometheus metrics: the families every gRPC server shares and the HTTP endpoint that serves them.

Per-RPC families follow the names of go-grpc-prometheus (``grpc_server_started_total``,
``grpc_server_handled_total``, ``grpc_server_handling_seconds``), so stock dashboards and alerts
read them unchanged. Each service declares its own families next to the code that moves them; they
all live in the process's default registry, which the endpoint serves together with the process
collector (CPU, memory, open files).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Histogram, start_http_server

__all__ = [
    "RPC_HANDLED",
    "RPC_SECONDS",
    "RPC_STARTED",
    "MetricsServer",
    "RpcMetrics",
    "observe_report",
]

# Latency buckets from 0.5 ms to 30 s: a health check, an event, a 90-day report.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

_RPC_LABELS = ("grpc_service", "grpc_method", "grpc_type")
RPC_STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", _RPC_LABELS)
RPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by gRPC status code (errors are the codes other than OK).",
    (*_RPC_LABELS, "grpc_code"),
)
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from an RPC's start to its last response, in seconds.",
    _RPC_LABELS,
    buckets=LATENCY_BUCKETS,
)

REPORT_SECONDS = Histogram(
    "analytics_query_report_seconds",
    "Time a report spends in the database and in Python, in seconds, by report.",
    ("report",),
    buckets=LATENCY_BUCKETS,
)


class RpcMetrics:
    """The per-RPC children of one method, resolved once (label look-ups cost more than an inc)."""

    __slots__ = ("_handled", "_labels", "_seconds", "_started")

    def __init__(self, full_method: str, rpc_type: str) -> None:
        service, _, method = full_method.lstrip("/").rpartition("/")
        self._labels = (service, method, rpc_type)
        self._started = RPC_STARTED.labels(*self._labels)
        self._seconds = RPC_SECONDS.labels(*self._labels)
        self._handled: dict[str, Counter] = {}

    def started(self) -> None:
        self._started.inc()

    def handled(self, code: str, duration_s: float) -> None:
        counter = self._handled.get(code)
        if counter is None:
            counter = self._handled[code] = RPC_HANDLED.labels(*self._labels, code)
        counter.inc()
        self._seconds.observe(duration_s)


@contextlib.contextmanager
def observe_report(report: str) -> Iterator[None]:
    """Times one report (``analytics_query_report_seconds{report=…}``), whether it answers or fails."""
    started = time.perf_counter()
    try:
        yield
    finally:
        REPORT_SECONDS.labels(report).observe(time.perf_counter() - started)


class MetricsServer:
    """Serves ``/metrics`` in the Prometheus text format from a thread of its own, so a scrape never
    waits on the service's event loop (nor slows it down beyond rendering the text)."""

    def __init__(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        self._host = host.strip("[]")
        self._port = int(port)
        self._server: WSGIServer | None = None
        self._thread: Thread | None = None
        self.port = 0

    def start(self) -> int:
        self._server, self._thread = start_http_server(self._port, self._host)
        self.port = int(self._server.server_port)
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
