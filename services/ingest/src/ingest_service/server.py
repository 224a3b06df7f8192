"""Runs the ingest service until SIGTERM, then drains in-flight requests and the publisher."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import structlog

from analytics.v1 import event_api_pb2_grpc, ingest_pb2_grpc, live_pb2_grpc
from analytics_bus import connect, ensure_stream
from analytics_bus.health import BusHealth
from analytics_bus.revocations import follow_revocations
from analytics_grpc import GrpcServer
from analytics_grpc.auth_client import AuthClient
from ingest_service.enrich import useragent
from ingest_service.enrich.client import ClientResolver
from ingest_service.event_api import EventApiServicer
from ingest_service.identity import IdentitySecretCache
from ingest_service.publisher import GroupCommitPublisher
from ingest_service.ratelimit import RateLimiter
from ingest_service.salts import SaltCache
from ingest_service.seed import SeedEventServicer
from ingest_service.servicer import IngestServicer
from ingest_service.settings import Settings

log = structlog.get_logger("analytics.ingest")
DRAIN_TIMEOUT_S = 5.0


async def serve(settings: Settings) -> None:
    nc = await connect(settings.nats_url, "ingest")
    js = nc.jetstream()
    await ensure_stream(js, settings.bus)
    server = GrpcServer(
        "ingest",
        settings.grpc_listen,
        reuse_port=settings.grpc_reuse_port,
        metrics_listen=settings.metrics_listen,
    )

    # Load balancers and Kubernetes take an ingest that cannot queue events out of rotation.
    bus = BusHealth(
        nc,
        interval_s=settings.bus_probe_interval_s,
        timeout_s=settings.bus_probe_timeout_s,
        on_change=server.set_available,
    )
    publisher = GroupCommitPublisher(
        js,
        settings.bus.subject,
        max_batch_bytes=settings.group_commit_max_bytes,
        max_delay_s=settings.group_commit_max_delay_s,
        ack_timeout_s=settings.publish_timeout_s,
        health=bus,
    )
    auth = AuthClient(settings.auth_addr, ttl_s=settings.auth_cache_ttl_s)
    await follow_revocations(nc, auth.revoke)
    servicer = IngestServicer(
        auth,
        publisher,
        settings.limits,
        lambda: bus.up,
        salts=SaltCache(auth.channel, settings.internal_token),
        identity_secrets=IdentitySecretCache(auth.channel, settings.internal_token),
        clients=ClientResolver(settings.trusted_proxies, settings.country_header),
        rate_limiter=RateLimiter(settings.default_rate_limit_per_s, settings.default_rate_limit_burst),
    )
    server.add(ingest_pb2_grpc.add_IngestServiceServicer_to_server, servicer, "analytics.v1.IngestService")
    server.add(
        event_api_pb2_grpc.add_EventApiServiceServicer_to_server,
        EventApiServicer(servicer, auth),
        "analytics.v1.EventApiService",
    )
    query = grpc.aio.insecure_channel(settings.query_addr)
    server.add(
        live_pb2_grpc.add_SeedEventServiceServicer_to_server,
        SeedEventServicer(servicer, auth, query),
        "analytics.v1.SeedEventService",
    )
    server.install_signal_handlers()
    useragent.prepare()
    try:
        await server.start()
        await server.set_serving()
        bus.start()
        await server.wait_for_shutdown_signal()
        # In-flight requests finish (their events get their PubAck) before the connection drains.
        await server.stop()
        await publisher.close()
        log.info("shutdown: queued events published")
    finally:
        await bus.close()
        await query.close()
        await auth.close()
        # NATS may already be gone (everything stops at once under make run): the queued events were
        # published above, so a drain that cannot reach the server is cut short, never waited on.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.drain(), DRAIN_TIMEOUT_S)
        with contextlib.suppress(Exception):
            await nc.close()
        # Each step's line shows where a slow exit spends its time.
        log.info("shutdown: connections closed")
