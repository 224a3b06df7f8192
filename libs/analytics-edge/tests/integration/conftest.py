"""Real grpc.aio fake upstreams behind the real Envoy edge, rendered from the repository's route table."""

from __future__ import annotations

import asyncio
import socket
import tomllib
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2_grpc
from grpc_status import rpc_status

from analytics.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
)
from analytics_edge.launcher import DEFAULT_TABLE
from analytics_testing.stack import EDGE_UPSTREAMS, Edge

MAX_BODY = tomllib.loads(DEFAULT_TABLE.read_text())["http"]["max_body_bytes"]


@dataclass
class Call:
    method: str
    request: Any
    metadata: dict[str, str | bytes]


@dataclass
class Abort:
    """What the next upstream call should fail with."""

    code: grpc.StatusCode
    message: str
    violations: list[tuple[str, str]] = field(default_factory=list)
    retry_after: str | None = None


@dataclass
class Upstream:
    """Records what the servicers received and lets a test make them fail."""

    address: str
    calls: list[Call] = field(default_factory=list)
    abort: Abort | None = None
    delay_s: float = 0.0

    @property
    def last(self) -> Call:
        return self.calls[-1]

    def fail_next(
        self,
        code: grpc.StatusCode,
        message: str,
        violations: list[tuple[str, str]] | None = None,
        retry_after: str | None = None,
    ) -> None:
        self.abort = Abort(code, message, violations or [], retry_after)

    async def record(self, method: str, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.calls.append(Call(method, request, dict(context.invocation_metadata() or ())))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.abort is None:
            return
        abort, self.abort = self.abort, None
        trailing: tuple[tuple[str, str], ...] = ()
        if abort.retry_after is not None:
            trailing = (("retry-after", abort.retry_after),)
        if not abort.violations:
            await context.abort(abort.code, abort.message, trailing)
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=name, description=text)
                for name, text in abort.violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        status = rpc_status.to_status(
            status_pb2.Status(code=abort.code.value[0], message=abort.message, details=[detail])
        )
        await context.abort(status.code, status.details, (*status.trailing_metadata, *trailing))


class FakeIngest(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    async def Track(self, request: ingest_pb2.TrackRequest, context: Any) -> ingest_pb2.TrackResponse:
        await self.upstream.record("Track", request, context)
        return ingest_pb2.TrackResponse(event_id=request.event.event_id or "generated")

    async def TrackBatch(
        self, request: ingest_pb2.TrackBatchRequest, context: Any
    ) -> ingest_pb2.TrackBatchResponse:
        await self.upstream.record("TrackBatch", request, context)
        ids = [event.event_id or f"generated-{index}" for index, event in enumerate(request.events)]
        return ingest_pb2.TrackBatchResponse(accepted=len(request.events), event_ids=ids)

    async def GetHealth(
        self, request: ingest_pb2.GetHealthRequest, context: Any
    ) -> ingest_pb2.GetHealthResponse:
        await self.upstream.record("GetHealth", request, context)
        return ingest_pb2.GetHealthResponse(status="ok")


class FakeQuery(query_pb2_grpc.QueryServiceServicer):
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    async def GetDailyStats(
        self, request: query_pb2.GetDailyStatsRequest, context: Any
    ) -> query_pb2.GetDailyStatsResponse:
        await self.upstream.record("GetDailyStats", request, context)
        return query_pb2.GetDailyStatsResponse(
            site_id=request.site_id,
            date=request.date,
            total_views=request.limit,
            top_paths=[query_pb2.PathCount(path="/", views=3)],
        )

    async def QueryPlausible(
        self, request: query_pb2.QueryPlausibleRequest, context: Any
    ) -> query_pb2.QueryPlausibleResponse:
        await self.upstream.record("QueryPlausible", request, context)
        return query_pb2.QueryPlausibleResponse()

    async def Query(self, request: query_pb2.QueryRequest, context: Any) -> query_pb2.QueryResponse:
        await self.upstream.record("Query", request, context)
        return query_pb2.QueryResponse()


class FakeAuth(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    async def CreateSite(
        self, request: auth_pb2.CreateSiteRequest, context: Any
    ) -> auth_pb2.CreateSiteResponse:
        await self.upstream.record("CreateSite", request, context)
        return auth_pb2.CreateSiteResponse(
            site_id="site-1", api_key="secret", site=auth_pb2.Site(name=request.name)
        )

    async def CreateApiKey(
        self, request: auth_pb2.CreateApiKeyRequest, context: Any
    ) -> auth_pb2.CreateApiKeyResponse:
        await self.upstream.record("CreateApiKey", request, context)
        key = auth_pb2.ApiKey(key_id="key-2", site_id=request.site_id, scopes=request.scopes)
        return auth_pb2.CreateApiKeyResponse(api_key="secret-2", key=key)

    async def RevokeApiKey(
        self, request: auth_pb2.RevokeApiKeyRequest, context: Any
    ) -> auth_pb2.RevokeApiKeyResponse:
        await self.upstream.record("RevokeApiKey", request, context)
        return auth_pb2.RevokeApiKeyResponse(key=auth_pb2.ApiKey(key_id=request.key_id))

    async def Authenticate(
        self, request: auth_pb2.AuthenticateRequest, context: Any
    ) -> auth_pb2.AuthenticateResponse:
        await self.upstream.record("Authenticate", request, context)
        return auth_pb2.AuthenticateResponse()


@pytest.fixture(scope="session")
async def upstream_server() -> AsyncIterator[Upstream]:
    # The keepalive policy of the real services (analytics_grpc.server): Envoy pings idle upstreams.
    server = grpc.aio.server(
        options=[
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    upstream = Upstream(f"127.0.0.1:{port}")
    ingest_pb2_grpc.add_IngestServiceServicer_to_server(FakeIngest(upstream), server)
    query_pb2_grpc.add_QueryServiceServicer_to_server(FakeQuery(upstream), server)
    auth_pb2_grpc.add_AuthServiceServicer_to_server(FakeAuth(upstream), server)
    # Envoy health-checks its upstreams with the stock service, as it does the real ones.
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    await server.start()
    yield upstream
    await server.stop(None)


@pytest.fixture
def upstream(upstream_server: Upstream) -> Upstream:
    upstream_server.calls.clear()
    upstream_server.abort = None
    upstream_server.delay_s = 0.0
    return upstream_server


@pytest.fixture(scope="session")
def start_edge(
    upstream_server: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., AbstractAsyncContextManager[Edge]]:
    """Starts an Envoy edge for the length of an async with: every upstream is the fake server
    unless ``upstreams`` says otherwise; ``table`` replaces the route table (TOML text)."""

    @asynccontextmanager
    async def start(
        upstreams: Mapping[str, str] | None = None, table: str | None = None
    ) -> AsyncIterator[Edge]:
        directory = tmp_path_factory.mktemp("edge")
        table_path = None
        if table is not None:
            table_path = directory / "edge.toml"
            table_path.write_text(table)
        addresses = {name: upstream_server.address for name in EDGE_UPSTREAMS} | dict(upstreams or {})
        # In a thread: the fake upstreams run on this event loop and must answer Envoy meanwhile.
        edge = await asyncio.to_thread(Edge(directory, addresses, table_path).start)
        try:
            yield edge
        finally:
            await asyncio.to_thread(edge.stop)

    return start


@pytest.fixture(scope="session")
async def edge_process(start_edge: Callable[..., AbstractAsyncContextManager[Edge]]) -> AsyncIterator[Edge]:
    async with start_edge() as edge:
        yield edge


@pytest.fixture(scope="session")
def edge(edge_process: Edge) -> str:
    return edge_process.url


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def max_body() -> int:
    return int(MAX_BODY)


@pytest.fixture
def unused_address() -> str:
    """host:port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return f"127.0.0.1:{port}"
