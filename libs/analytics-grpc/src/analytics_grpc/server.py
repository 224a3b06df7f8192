"""GrpcServer: grpc.aio server with stock health, reflection, interceptors, metrics and graceful shutdown."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from analytics_config import grpc_runtime
from analytics_config.event_loop import running_loop_name
from analytics_grpc.interceptors import ObservabilityInterceptor
from analytics_observability.metrics import MetricsServer

log = structlog.get_logger("analytics.server")

# The health entry that answers SERVING for as long as the process's event loop does, whatever its
# dependencies: Kubernetes' liveness probe asks it, so a NATS or database outage (readiness, the
# overall entry "", goes NOT_SERVING) takes a pod out of rotation without restarting it.
LIVENESS_SERVICE = "liveness"

# Generous message size: a batch of 1000 events with properties can pass a few MiB.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Request metadata a call may carry: twice what Envoy accepts as request headers (60 KiB).
MAX_METADATA_BYTES = 2 * 60 * 1024


class GrpcServer:
    """Owns a grpc.aio server whose health turns SERVING only when the service says so.

    Usage: add services, ``await start()``, connect dependencies, ``set_serving()``, then
    ``await wait_for_shutdown_signal()`` and ``await stop()``.
    """

    def __init__(
        self,
        name: str,
        listen: str,
        *,
        grace_s: float = 10.0,
        reuse_port: bool = False,
        extra_interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        metrics_listen: str | None = None,
    ) -> None:
        self.name = name
        # Prometheus /metrics (host:port); None: no endpoint (tests that run servers in-process).
        self.metrics = MetricsServer(metrics_listen) if metrics_listen else None
        self.listen = listen
        self.grace_s = grace_s
        self._services: list[str] = []
        self._stopping = asyncio.Event()
        self.server = grpc.aio.server(
            interceptors=[ObservabilityInterceptor(), *extra_interceptors],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 1 if reuse_port else 0),
                # Envoy forwards request headers of up to 60 KiB, and the original path again in
                # x-envoy-original-path; gRPC's default 8 KiB soft limit refused such calls at
                # random (RESOURCE_EXHAUSTED, a 429 for a long query string).
                ("grpc.max_metadata_size", MAX_METADATA_BYTES),
                ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ],
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = 0

    def add(self, register: Callable[[Any, grpc.aio.Server], None], servicer: Any, full_name: str) -> None:
        register(servicer, self.server)
        self._services.append(full_name)

    async def start(self) -> int:
        reflection.enable_server_reflection(
            [
                *self._services,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        self.port = self.server.add_insecure_port(self.listen)
        if self.port == 0:
            raise RuntimeError(f"{self.name}: cannot listen on {self.listen}")
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        if self.metrics is not None:
            try:
                metrics_port = self.metrics.start()
            except OSError as error:
                raise RuntimeError(f"{self.name}: cannot serve metrics: {error}") from None
            log.info("metrics", service=self.name, port=metrics_port, path="/metrics")
        await self.server.start()
        log.info("listening", service=self.name, listen=self.listen, port=self.port)
        return self.port

    async def set_serving(self) -> None:
        await self._set_all(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving", service=self.name, loop=running_loop_name(), grpc_experiments=grpc_runtime.in_effect()
        )

    async def set_not_serving(self) -> None:
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)

    async def set_available(self, available: bool) -> None:
        """While serving, a dependency came or went: health follows it (no start-up line). Ignored
        once shutdown has begun, so a late change cannot report SERVING again."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if available
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self._set_all(status)

    async def _set_all(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        for name in ("", *self._services):
            await self.health.set(name, status)

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)

    def request_stop(self) -> None:
        self._stopping.set()

    async def wait_for_shutdown_signal(self) -> None:
        await self._stopping.wait()

    async def stop(self) -> None:
        """Health NOT_SERVING first so balancers stop sending, then let in-flight RPCs finish."""
        log.info("stopping", service=self.name, grace_s=self.grace_s)
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.grace_s)
        if self.metrics is not None:
            self.metrics.stop()
        log.info("stopped", service=self.name)
