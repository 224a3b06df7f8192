"""A lost database: queries are UNAVAILABLE and health NOT_SERVING until the database is back."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from analytics.v1 import auth_pb2, bus_pb2, query_pb2, query_pb2_grpc
from analytics_db import create_pool, migrate, open_pool
from analytics_grpc import GrpcServer
from analytics_testing.plugin import PostgresFactory
from processor_service.writer import EventWriter, rows_of
from query_service.reference import EventRow
from query_service.servicer import QueryServicer
from query_service.snapshot import DatabaseHealth, Snapshots

from .conftest import ADMIN_MD, QueryStack, to_event

pytestmark = pytest.mark.integration


async def health_is(channel: grpc.aio.Channel, wanted: int, timeout_s: float = 20) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = asyncio.get_running_loop().time() + timeout_s
    status = None
    while asyncio.get_running_loop().time() < deadline:
        status = (await stub.Check(health_pb2.HealthCheckRequest())).status
        if status == wanted:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"health stayed {status}, wanted {wanted}")


async def test_lost_database_is_unavailable_and_not_serving_until_it_returns(
    query_stack: QueryStack, postgres_factory: PostgresFactory
) -> None:
    # The query service reads a private cluster that can be stopped; auth keeps the shared one.
    private = postgres_factory()
    url = private.create_database("lost")
    await migrate(url, "analytics", "processor_service.migrations")
    pool = create_pool(url, name="query-lost", max_size=2)
    await open_pool(pool)
    site = (
        await query_stack.auth.CreateSite(auth_pb2.CreateSiteRequest(name="s"), metadata=ADMIN_MD)
    ).site_id
    row = EventRow(time=datetime(2024, 3, 10, 9, tzinfo=UTC), event_id=uuid.uuid4(), visitor_id=1)
    await EventWriter(pool).write(rows_of([bus_pb2.EventBatch(events=[to_event(site, row)])]))

    server = GrpcServer("query", "127.0.0.1:0", grace_s=1)
    health = DatabaseHealth(url, server.set_not_serving, server.set_serving, probe_interval_s=0.2)
    server.add(
        query_pb2_grpc.add_QueryServiceServicer_to_server,
        QueryServicer(Snapshots(pool, health, 5_000), query_stack.auth_client),
        "analytics.v1.QueryService",
    )
    port = await server.start()
    await server.set_serving()
    watcher = asyncio.create_task(health.watch())
    question = query_pb2.QueryRequest(
        site_id=site,
        date_range=query_pb2.DateRange(start="2024-03-10", end="2024-03-10"),
        metrics=["visitors"],
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = query_pb2_grpc.QueryServiceStub(channel)
            assert list((await stub.Query(question, metadata=ADMIN_MD)).results[0].metrics) == [1]

            private.stop()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Query(question, metadata=ADMIN_MD, timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
            await health_is(channel, health_pb2.HealthCheckResponse.NOT_SERVING)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Query(question, metadata=ADMIN_MD, timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

            private.start()
            await health_is(channel, health_pb2.HealthCheckResponse.SERVING)
            assert list((await stub.Query(question, metadata=ADMIN_MD)).results[0].metrics) == [1]
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await server.stop()
        await pool.close()
