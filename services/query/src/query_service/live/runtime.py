"""The live side of a query process: the hub, the LiveService servicer, the HTTP server of the
WebSocket dashboards and the Server-Sent Events streams, and the alert evaluator, started and
stopped together."""

from __future__ import annotations

import asyncio
import functools

from aiohttp import web
from nats.aio.client import Client

from analytics.v1 import live_pb2_grpc
from analytics_grpc import GrpcServer
from analytics_grpc.auth_client import AuthClient
from query_service.live import alerts
from query_service.live.hub import LiveHub
from query_service.live.servicer import LiveServicer, changed_sessions, report, summary
from query_service.live.sse import ROUTE, LiveEventStream
from query_service.live.websocket import LiveSocket
from query_service.settings import Settings
from query_service.snapshot import Snapshots

LISTEN_BACKLOG = 4096


class LiveRuntime:
    def __init__(self, settings: Settings, nc: Client, snapshots: Snapshots, auth: AuthClient) -> None:
        self._settings = settings
        self.hub = LiveHub(
            nc,
            functools.partial(summary, snapshots),
            queue_size=settings.live_queue_size,
            queue_events=settings.live_queue_events,
            summary_interval_s=settings.live_summary_interval_s,
        )
        self.sockets = LiveSocket(
            self.hub,
            auth,
            functools.partial(report, snapshots),
            functools.partial(changed_sessions, snapshots),
            activity_interval_s=settings.live_summary_interval_s,
        )
        self.webhooks = alerts.Webhooks(settings.alert_webhooks)
        self.evaluator = alerts.AlertEvaluator(
            settings.database_url,
            nc,
            settings.alert_rule,
            self.webhooks,
            interval_s=settings.alert_interval_s,
        )
        self.servicer = LiveServicer(
            snapshots,
            auth,
            self.hub,
            heartbeat_s=settings.live_heartbeat_s,
            dashboards=self.sockets.dashboards,
            alert_counts=lambda: (self.evaluator.raised, self.webhooks.delivered, self.webhooks.failed),
            alert_defaults=settings.alert_rule,
            alert_webhooks=settings.alert_webhooks,
        )
        self.events = LiveEventStream(self.hub, auth, heartbeat_s=settings.live_heartbeat_s)
        app = self.sockets.application()
        app.router.add_get(ROUTE, self.events.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._alerting: asyncio.Task[None] | None = None

    def add_to(self, server: GrpcServer) -> None:
        server.add(live_pb2_grpc.add_LiveServiceServicer_to_server, self.servicer, "analytics.v1.LiveService")

    async def listen(self) -> None:
        """Opens the WebSocket port (it answers 503 on /health until serving)."""
        await self._runner.setup()
        host, _, port = self._settings.ws_listen.rpartition(":")
        site = web.TCPSite(
            self._runner,
            host.strip("[]"),
            int(port),
            reuse_port=self._settings.grpc_reuse_port,
            # The edge opens one connection per SSE subscriber: a thousand dashboards reconnecting
            # at once would overflow aiohttp's default backlog of 128 (refused, answered 503).
            backlog=LISTEN_BACKLOG,
        )
        await site.start()

    def serve(self) -> None:
        self.sockets.set_serving(True)
        self._alerting = asyncio.create_task(self.evaluator.run(), name="alerts")

    async def end_streams(self) -> None:
        """Live streams never end by themselves: end them so the server's grace drains the rest."""
        self.sockets.set_serving(False)
        await self.hub.close()

    async def close(self) -> None:
        if self._alerting is not None:
            await alerts.stop(self._alerting, self.webhooks)
        await self._runner.cleanup()
