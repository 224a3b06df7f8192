"""Runs the query service until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from psycopg_pool import AsyncConnectionPool

from analytics.v1 import people_pb2_grpc, product_pb2_grpc, query_pb2_grpc
from analytics_bus import connect
from analytics_bus.revocations import follow_revocations
from analytics_bus.sites import follow_site_deletions
from analytics_db import applied_version, create_pool, migrate, open_pool
from analytics_grpc import GrpcServer
from analytics_grpc.auth_client import AuthClient
from query_service import relations
from query_service.live.runtime import LiveRuntime
from query_service.people import PeopleServicer
from query_service.product.definitions import SCHEMA as DEFINITIONS_SCHEMA
from query_service.product.definitions import delete_site_definitions
from query_service.product.servicer import ProductServicer
from query_service.servicer import QueryServicer
from query_service.settings import Settings
from query_service.snapshot import DatabaseHealth, Snapshots

log = structlog.get_logger("analytics.query")


async def _wait_for_schema(pool: AsyncConnectionPool, required: int) -> None:
    while True:
        async with pool.connection() as conn:
            if await applied_version(conn, relations.SCHEMA) >= required:
                return
        log.info("waiting for the processor to migrate schema analytics", required=required)
        await asyncio.sleep(1)


async def serve(settings: Settings) -> None:
    nc = await connect(settings.nats_url, "query")
    pool = create_pool(settings.database_url, name="query", max_size=10)
    auth = AuthClient(settings.auth_addr, ttl_s=settings.auth_cache_ttl_s)
    await follow_revocations(nc, auth.revoke)
    server = GrpcServer(
        "query",
        settings.grpc_listen,
        reuse_port=settings.grpc_reuse_port,
        metrics_listen=settings.metrics_listen,
    )
    health = DatabaseHealth(settings.database_url, server.set_not_serving, server.set_serving)
    snapshots = Snapshots(pool, health, settings.statement_timeout_ms)
    server.add(
        query_pb2_grpc.add_QueryServiceServicer_to_server,
        QueryServicer(snapshots, auth),
        "analytics.v1.QueryService",
    )
    server.add(
        product_pb2_grpc.add_ProductServiceServicer_to_server,
        ProductServicer(snapshots, auth),
        "analytics.v1.ProductService",
    )
    server.add(
        people_pb2_grpc.add_PeopleServiceServicer_to_server,
        PeopleServicer(snapshots, auth),
        "analytics.v1.PeopleService",
    )
    live = LiveRuntime(settings, nc, snapshots, auth)
    live.add_to(server)
    server.install_signal_handlers()
    await server.start()
    await live.listen()
    watcher: asyncio.Task[None] | None = None
    deletions: asyncio.Task[None] | None = None
    try:
        # Waiting for the database and the schema ends as soon as SIGTERM arrives.
        ready = asyncio.ensure_future(_ready(pool, settings))
        stop = asyncio.ensure_future(server.wait_for_shutdown_signal())
        await asyncio.wait({ready, stop}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            stop.cancel()
            ready.result()
            await server.set_serving()
            live.serve()
            watcher = asyncio.create_task(health.watch())
            # A deleted site's goals, funnels and alert rule go when auth announces the deletion.
            deletions = asyncio.create_task(
                follow_site_deletions(
                    nc.jetstream(), settings.sites_bus, "query", lambda site_id: _forget_site(pool, site_id)
                ),
                name="site-deletions",
            )
            await server.wait_for_shutdown_signal()
        else:
            ready.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ready
        await live.end_streams()
        await server.stop()
    finally:
        await live.close()
        for task in (watcher, deletions):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await auth.close()
        await pool.close()
        with contextlib.suppress(Exception):  # NATS may already be gone; nothing is left to send
            await nc.drain()


async def _forget_site(pool: AsyncConnectionPool, site_id: str) -> None:
    async with pool.connection() as conn:
        removed = await delete_site_definitions(conn, site_id)
    log.info("deleted site's definitions removed", site_id=site_id, rows=removed)


async def _ready(pool: AsyncConnectionPool, settings: Settings) -> None:
    await open_pool(pool)
    if settings.migrate_on_start:
        # The service's own definitions (goals, funnels, alert rules); schema analytics is the processor's.
        await migrate(settings.database_url, DEFINITIONS_SCHEMA, "query_service.migrations")
    await _wait_for_schema(pool, relations.REQUIRED_VERSION)
