"""Runs the query service until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from psycopg_pool import AsyncConnectionPool

from analytics.v1 import query_pb2_grpc
from analytics_bus import connect
from analytics_bus.revocations import follow_revocations
from analytics_db import applied_version, create_pool, open_pool
from analytics_grpc import GrpcServer
from analytics_grpc.auth_client import AuthClient
from query_service import relations
from query_service.live.runtime import LiveRuntime
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
    server = GrpcServer("query", settings.grpc_listen, reuse_port=settings.grpc_reuse_port)
    health = DatabaseHealth(settings.database_url, server.set_not_serving, server.set_serving)
    snapshots = Snapshots(pool, health, settings.statement_timeout_ms)
    server.add(
        query_pb2_grpc.add_QueryServiceServicer_to_server,
        QueryServicer(snapshots, auth),
        "analytics.v1.QueryService",
    )
    live = LiveRuntime(settings, nc, snapshots, auth)
    live.add_to(server)
    server.install_signal_handlers()
    await server.start()
    await live.listen()
    watcher: asyncio.Task[None] | None = None
    try:
        # Waiting for the database and the schema ends as soon as SIGTERM arrives.
        ready = asyncio.ensure_future(_ready(pool))
        stop = asyncio.ensure_future(server.wait_for_shutdown_signal())
        await asyncio.wait({ready, stop}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            stop.cancel()
            ready.result()
            await server.set_serving()
            live.serve()
            watcher = asyncio.create_task(health.watch())
            await server.wait_for_shutdown_signal()
        else:
            ready.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ready
        await live.end_streams()
        await server.stop()
    finally:
        await live.close()
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await auth.close()
        await pool.close()
        with contextlib.suppress(Exception):  # NATS may already be gone; nothing is left to send
            await nc.drain()


async def _ready(pool: AsyncConnectionPool) -> None:
    await open_pool(pool)
    await _wait_for_schema(pool, relations.REQUIRED_VERSION)
