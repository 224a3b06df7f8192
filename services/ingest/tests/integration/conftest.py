"""Fixtures: ingest and a real auth service on port 0 with real stubs, a private JetStream stream,
and one test clock both services read, so that tests can cross midnight."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import nats
import pytest
from nats.js import JetStreamContext

from analytics.v1 import auth_pb2, auth_pb2_grpc, bus_pb2, event_api_pb2_grpc, events_pb2, ingest_pb2_grpc
from analytics_bus import BusConfig, ensure_stream
from analytics_db import create_pool, migrate, open_pool
from analytics_grpc import GrpcServer
from analytics_grpc.auth_client import AuthClient
from auth_service.servicer import AuthServicer
from auth_service.store import AuthStore
from ingest_service.enrich.client import ClientResolver
from ingest_service.event_api import EventApiServicer
from ingest_service.identity import IdentitySecretCache
from ingest_service.publisher import GroupCommitPublisher
from ingest_service.ratelimit import RateLimiter
from ingest_service.salts import SaltCache
from ingest_service.servicer import IngestServicer
from ingest_service.validation import Limits

ADMIN = "test-admin-token-0123456789abcdef"
INTERNAL = "test-internal-token-0123456789abcdef"
ADMIN_MD = (("authorization", f"Bearer {ADMIN}"),)


class TestClock:
    """The time the auth and ingest services read: the real one until a test sets it."""

    __test__ = False

    def __init__(self) -> None:
        self.at: datetime | None = None

    def __call__(self) -> datetime:
        return self.at or datetime.now(UTC)


@dataclass
class Harness:
    ingest: ingest_pb2_grpc.IngestServiceStub
    auth: auth_pb2_grpc.AuthServiceStub
    js: JetStreamContext
    bus: BusConfig
    publisher: GroupCommitPublisher
    clock: TestClock
    auth_address: str
    # Seed 002's event route (ingest_service.event_api), on the same server.
    event_api: event_api_pb2_grpc.EventApiServiceStub | None = None

    async def stored_messages(self) -> int:
        info = await self.js.stream_info(self.bus.stream)
        return int(info.state.messages)

    async def stored_events(self) -> list[bus_pb2.EnrichedEvent]:
        events: list[bus_pb2.EnrichedEvent] = []
        info = await self.js.stream_info(self.bus.stream)
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            message = await self.js.get_msg(self.bus.stream, seq)
            events.extend(bus_pb2.EventBatch.FromString(message.data or b"").events)
        return events

    async def new_site(self) -> auth_pb2.CreateSiteResponse:
        return await self.auth.CreateSite(auth_pb2.CreateSiteRequest(name="site"), metadata=ADMIN_MD)


@pytest.fixture
async def harness(database_url: str, nats_url: str) -> AsyncIterator[Harness]:
    await migrate(database_url, "auth", "auth_service.migrations")
    pool = create_pool(database_url, name="auth-test", max_size=4)
    await open_pool(pool)
    clock = TestClock()
    auth_server = GrpcServer("auth", "127.0.0.1:0", grace_s=1)
    auth_server.add(
        auth_pb2_grpc.add_AuthServiceServicer_to_server,
        AuthServicer(AuthStore(pool), ADMIN, INTERNAL, clock=clock),
        "analytics.v1.AuthService",
    )
    auth_port = await auth_server.start()

    suffix = uuid.uuid4().hex[:8]
    bus = BusConfig(stream=f"INGEST_{suffix}", subject=f"ingest.{suffix}")
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js, bus)
    publisher = GroupCommitPublisher(js, bus.subject, max_delay_s=0.005, ack_timeout_s=2)
    auth_client = AuthClient(f"127.0.0.1:{auth_port}", ttl_s=0)
    ingest_server = GrpcServer("ingest", "127.0.0.1:0", grace_s=1)
    ingest = IngestServicer(
        auth_client,
        publisher,
        Limits(),
        lambda: nc.is_connected,
        salts=SaltCache(auth_client.channel, INTERNAL),
        # Generous: a test holds one site's first fetch open on purpose while others go on.
        identity_secrets=IdentitySecretCache(auth_client.channel, INTERNAL, timeout_s=30),
        clients=ClientResolver(["127.0.0.0/8"], "cf-ipcountry"),
        rate_limiter=RateLimiter(default_rate=1000, default_burst=1000),
        clock=clock,
    )
    ingest_server.add(
        ingest_pb2_grpc.add_IngestServiceServicer_to_server, ingest, "analytics.v1.IngestService"
    )
    ingest_server.add(
        event_api_pb2_grpc.add_EventApiServiceServicer_to_server,
        EventApiServicer(ingest, auth_client),
        "analytics.v1.EventApiService",
    )
    ingest_port = await ingest_server.start()
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{ingest_port}") as ingest_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{auth_port}") as auth_channel,
    ):
        yield Harness(
            ingest_pb2_grpc.IngestServiceStub(ingest_channel),
            auth_pb2_grpc.AuthServiceStub(auth_channel),
            js,
            bus,
            publisher,
            clock,
            f"127.0.0.1:{auth_port}",
            event_api_pb2_grpc.EventApiServiceStub(ingest_channel),
        )
    await ingest_server.stop()
    await publisher.close()
    await auth_client.close()
    await nc.close()
    await auth_server.stop()
    await pool.close()


def pageview(site_id: str, path: str = "/", **extra: object) -> events_pb2.Event:
    return events_pb2.Event(site_id=site_id, event_type="pageview", path=path, **extra)  # type: ignore[arg-type]
