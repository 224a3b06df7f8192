"""Runs the gateway on a TCP port until SIGTERM or SIGINT, then shuts down gracefully."""

from __future__ import annotations

import asyncio
import signal

import structlog
from aiohttp import web

from analytics_config import grpc_runtime
from analytics_config.event_loop import running_loop_name

from .app import Gateway, build_endpoints, create_app
from .routes import http_routes, load_descriptor_set
from .settings import Settings
from .upstream import Upstreams

__all__ = ["GatewayServer", "serve"]

_log = structlog.stdlib.get_logger("gateway_service")


MAX_HEADER_BYTES = 60 * 1024


class GatewayServer:
    """The gateway bound to settings.http_host:http_port (0 picks a free port)."""

    def __init__(self, settings: Settings, descriptor_set: bytes | None = None) -> None:
        self.settings = settings
        # Descriptors and routes are resolved here, once: requests never look anything up by name.
        self._pool, files = load_descriptor_set(descriptor_set)
        self._routes = http_routes(self._pool, files)
        self._upstreams: Upstreams | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        settings = self.settings
        self._upstreams = Upstreams(settings.upstreams)
        endpoints = build_endpoints(self._routes, self._pool, self._upstreams, settings)
        app = create_app(Gateway(settings, self._pool, endpoints), settings)
        # In-flight requests may take up to the upstream deadline; let them finish on shutdown.
        # Envoy accepts request lines and headers up to 60 KiB; aiohttp's default is 8 KiB.
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=settings.upstream_timeout_s + 1.0,
            max_line_size=MAX_HEADER_BYTES,
            max_field_size=MAX_HEADER_BYTES,
        )
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, settings.http_host, settings.http_port, reuse_port=settings.reuse_port or None
        )
        await site.start()
        addresses = self._runner.addresses
        self.port = addresses[0][1] if addresses else settings.http_port
        _log.info(
            "gateway_started",
            host=settings.http_host,
            port=self.port,
            routes=len(endpoints),
            loop=running_loop_name(),
            grpc_experiments=grpc_runtime.in_effect(),
        )

    @property
    def url(self) -> str:
        return f"http://{self.settings.http_host}:{self.port}"

    async def stop(self) -> None:
        """Stops accepting, waits for in-flight requests, then closes the upstream channels."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._upstreams is not None:
            await self._upstreams.close(grace=1.0)
            self._upstreams = None
        _log.info("gateway_stopped")


async def serve(settings: Settings) -> None:
    """Serves until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = GatewayServer(settings)
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop()
