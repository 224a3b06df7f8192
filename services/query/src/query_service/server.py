"""Runs the query service until SIGTERM."""

from __future__ import annotations

import asyncio

import structlog

from analytics.v1 import query_pb2_grpc
from analytics_db import applied_version, create_pool, open_pool
from analytics_grpc import GrpcServer
from analytics_grpc.auth_client import AuthClient
from query_service.servicer import QueryServicer
from query_service.settings import Settings

log = structlog.get_logger("analytics.query")

# The processor owns schema analytics; these are the migrations whose relations this code reads.
REQUIRED_ANALYTICS_VERSION = 1


async def _wait_for_schema(pool: object, required: int) -> None:
    while True:
        async with pool.connection() as conn:  # type: ignore[attr-defined]
            if await applied_version(conn, "analytics") >= required:
                return
        log.info("waiting for the processor to migrate schema analytics", required=required)
        await asyncio.sleep(1)


async def serve(settings: Settings) -> None:
    pool = create_pool(
        settings.database_url,
        name="query",
        max_size=10,
    )
    auth = AuthClient(settings.auth_addr, ttl_s=settings.auth_cache_ttl_s)
    server = GrpcServer("query", settings.grpc_listen)
    server.add(
        query_pb2_grpc.add_QueryServiceServicer_to_server,
        QueryServicer(pool, auth, settings.statement_timeout_ms),
        "analytics.v1.QueryService",
    )
    server.install_signal_handlers()
    await server.start()
    try:
        await open_pool(pool)
        await _wait_for_schema(pool, REQUIRED_ANALYTICS_VERSION)
        await server.set_serving()
        await server.wait_for_shutdown_signal()
        await server.stop()
    finally:
        await auth.close()
        await pool.close()
