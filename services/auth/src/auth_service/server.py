"""Runs the auth service until SIGTERM."""

from __future__ import annotations

import contextlib
from functools import partial

from analytics.v1 import auth_pb2_grpc
from analytics_bus import connect
from analytics_bus.revocations import announce_revocation
from analytics_bus.sites import ensure_sites_stream, publish_site_deleted
from analytics_db import create_pool, migrate, open_pool
from analytics_grpc import GrpcServer
from auth_service.servicer import AuthServicer
from auth_service.settings import Settings
from auth_service.store import AuthStore

SCHEMA = "auth"


async def serve(settings: Settings) -> None:
    nc = await connect(settings.nats_url, "auth")
    js = nc.jetstream()
    sites_bus = settings.sites_bus
    pool = create_pool(settings.database_url, name="auth", max_size=10)
    server = GrpcServer("auth", settings.grpc_listen, metrics_listen=settings.metrics_listen)
    server.add(
        auth_pb2_grpc.add_AuthServiceServicer_to_server,
        AuthServicer(
            AuthStore(pool),
            settings.admin_token,
            settings.internal_token,
            announce_revocation=partial(announce_revocation, nc),
            announce_site_deleted=partial(publish_site_deleted, js, sites_bus),
        ),
        "analytics.v1.AuthService",
    )
    server.install_signal_handlers()
    await server.start()
    try:
        await open_pool(pool)
        if settings.migrate_on_start:
            await migrate(settings.database_url, SCHEMA, "auth_service.migrations")
        await ensure_sites_stream(js, sites_bus)
        await server.set_serving()
        await server.wait_for_shutdown_signal()
        await server.stop()
    finally:
        await pool.close()
        with contextlib.suppress(Exception):  # NATS may already be gone; nothing is left to send
            await nc.drain()
