"""Fixtures: a migrated database, real auth and query servers on port 0 with real stubs, and the
processor's writer to store events exactly as production does (sessions included)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc
import pytest
from psycopg_pool import AsyncConnectionPool

from analytics.v1 import auth_pb2, auth_pb2_grpc, bus_pb2, product_pb2_grpc, query_pb2_grpc
from analytics_db import create_pool, migrate, open_pool
from analytics_grpc import GrpcServer
from analytics_grpc.auth_client import AuthClient
from auth_service.servicer import AuthServicer
from auth_service.store import AuthStore
from processor_service.writer import EventWriter, rows_of
from query_service.product.servicer import ProductServicer
from query_service.reference import EventRow
from query_service.servicer import QueryServicer
from query_service.snapshot import DatabaseHealth, Snapshots

ADMIN = "query-test-admin-token-0123456789"
ADMIN_MD = (("authorization", f"Bearer {ADMIN}"),)


def to_event(site_id: str, row: EventRow) -> bus_pb2.EnrichedEvent:
    """The bus message ingest would publish for a stored row."""
    event = bus_pb2.EnrichedEvent(
        event_id=row.event_id.bytes,
        site_id=uuid.UUID(site_id).bytes,
        kind=row.kind,
        name=row.name,
        path=row.path,
        url=row.url,
        referrer=row.referrer,
        referrer_host=row.referrer_host,
        referrer_source=row.referrer_source,
        utm_source=row.utm_source,
        utm_medium=row.utm_medium,
        utm_campaign=row.utm_campaign,
        utm_content=row.utm_content,
        utm_term=row.utm_term,
        visitor_id=row.visitor_id,
        country=row.country,
        browser=row.browser,
        os=row.os,
        device=row.device,
        is_bot=row.is_bot,
        properties=row.properties,
        user_id=row.user_id or "",
    )
    event.occurred_at.FromDatetime(row.time)
    event.received_at.FromDatetime(row.time)
    return event


@dataclass
class QueryStack:
    """The query service in front of a real auth service and database."""

    query: query_pb2_grpc.QueryServiceStub
    product: product_pb2_grpc.ProductServiceStub
    auth: auth_pb2_grpc.AuthServiceStub
    pool: AsyncConnectionPool
    writer: EventWriter
    health: DatabaseHealth
    query_server: GrpcServer
    auth_client: AuthClient

    @contextlib.asynccontextmanager
    async def other_query_server(
        self, statement_timeout_ms: int
    ) -> AsyncIterator[query_pb2_grpc.QueryServiceStub]:
        """Another query server on the same database, with its own statement timeout."""
        server = GrpcServer("query", "127.0.0.1:0", grace_s=1)
        snapshots = Snapshots(self.pool, self.health, statement_timeout_ms)
        server.add(
            query_pb2_grpc.add_QueryServiceServicer_to_server,
            QueryServicer(snapshots, self.auth_client),
            "analytics.v1.QueryService",
        )
        port = await server.start()
        await server.set_serving()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield query_pb2_grpc.QueryServiceStub(channel)
        finally:
            await server.stop()

    async def site(self, timezone: str = "UTC", domain: str = "") -> tuple[str, str]:
        """A new site: (site_id, its first key, which may ingest and read)."""
        made = await self.auth.CreateSite(
            auth_pb2.CreateSiteRequest(name="site", timezone=timezone, domain=domain), metadata=ADMIN_MD
        )
        return made.site_id, made.api_key

    async def write(self, site_id: str, rows: Sequence[EventRow], batch: int = 500) -> None:
        """Stores rows through the processor's writer, in batches as the bus would deliver them."""
        for start in range(0, len(rows), batch):
            events = [to_event(site_id, row) for row in rows[start : start + batch]]
            await self.writer.write(rows_of([bus_pb2.EventBatch(events=events)]))


@pytest.fixture
async def query_stack(database_url: str) -> AsyncIterator[QueryStack]:
    await migrate(database_url, "auth", "auth_service.migrations")
    await migrate(database_url, "analytics", "processor_service.migrations")
    await migrate(database_url, "query", "query_service.migrations")
    pool = create_pool(database_url, name="query-test", max_size=6)
    await open_pool(pool)
    auth_server = GrpcServer("auth", "127.0.0.1:0", grace_s=1)
    auth_server.add(
        auth_pb2_grpc.add_AuthServiceServicer_to_server,
        AuthServicer(AuthStore(pool), ADMIN, "internal-0123456789abcdef"),
        "analytics.v1.AuthService",
    )
    auth_port = await auth_server.start()
    await auth_server.set_serving()
    auth_client = AuthClient(f"127.0.0.1:{auth_port}", ttl_s=0)
    server = GrpcServer("query", "127.0.0.1:0", grace_s=1)
    health = DatabaseHealth(database_url, server.set_not_serving, server.set_serving, probe_interval_s=0.2)
    snapshots = Snapshots(pool, health, 10_000)
    server.add(
        query_pb2_grpc.add_QueryServiceServicer_to_server,
        QueryServicer(snapshots, auth_client),
        "analytics.v1.QueryService",
    )
    server.add(
        product_pb2_grpc.add_ProductServiceServicer_to_server,
        ProductServicer(snapshots, auth_client),
        "analytics.v1.ProductService",
    )
    port = await server.start()
    await server.set_serving()
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{auth_port}") as auth_channel,
    ):
        yield QueryStack(
            query=query_pb2_grpc.QueryServiceStub(channel),
            product=product_pb2_grpc.ProductServiceStub(channel),
            auth=auth_pb2_grpc.AuthServiceStub(auth_channel),
            pool=pool,
            writer=EventWriter(pool),
            health=health,
            query_server=server,
            auth_client=auth_client,
        )
    await server.stop()
    await auth_server.stop()
    await auth_client.close()
    await pool.close()
