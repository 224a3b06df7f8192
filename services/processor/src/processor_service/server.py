"""Runs the processor: the JetStream consumer, dead letters, the admin RPCs, shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial

import structlog
from nats.js import JetStreamContext
from psycopg_pool import AsyncConnectionPool

from analytics.v1 import privacy_pb2_grpc, processor_pb2_grpc
from analytics_bus import connect, ensure_consumer, ensure_deadletter_stream, ensure_stream
from analytics_bus.revocations import follow_revocations
from analytics_bus.sites import follow_site_deletions
from analytics_db import create_pool, migrate, open_pool
from analytics_grpc import GrpcServer
from analytics_grpc.auth_client import AuthClient
from processor_service import event_ids, metrics, retention, site_data
from processor_service.admin import ProcessorServicer
from processor_service.advisories import MaxDeliveriesWatcher
from processor_service.consumer import Consumer
from processor_service.live import LivePublisher
from processor_service.privacy import PrivacyServicer
from processor_service.settings import Settings
from processor_service.writer import EventWriter

SCHEMA = "analytics"
# How often a processor forgets expired event ids (analytics.event_ids); the window is days long.
EXPIRE_EVERY_S = 600.0
# How often the consumer's backlog is read for /metrics (one small JetStream request).
CONSUMER_STATE_EVERY_S = 5.0

log = structlog.get_logger("analytics.processor")


class ServingHealth:
    """Health follows the database: NOT_SERVING while writes fail, SERVING once one commits."""

    def __init__(self, server: GrpcServer) -> None:
        self._server = server
        self._up = True

    async def database_down(self, error: str) -> None:
        if self._up:
            self._up = False
            log.error("database unreachable: health NOT_SERVING until a write commits", error=error)
            await self._server.set_not_serving()

    async def database_up(self) -> None:
        if not self._up:
            self._up = True
            log.info("database reachable again: health SERVING")
            await self._server.set_serving()


def _background(
    pool: AsyncConnectionPool, js: JetStreamContext, settings: Settings, *, tsl: bool
) -> list[asyncio.Task[None]]:
    """The processor's periodic and bus-driven upkeep, cancelled at shutdown."""
    # Forgets claimed event ids past their window (every replica may: deletes do not collide).
    tasks = [asyncio.create_task(event_ids.expire_forever(pool, EXPIRE_EVERY_S), name="event-ids")]
    tasks.append(
        asyncio.create_task(
            metrics.watch_consumer_state(js, settings.bus, CONSUMER_STATE_EVERY_S), name="consumer-state"
        )
    )
    if settings.raw_retention is not None and not tsl:  # TSL: TimescaleDB's own policy job
        tasks.append(
            asyncio.create_task(retention.drop_forever(pool, settings.raw_retention), name="retention")
        )
    # Deletes a deleted site's rows when auth says so, and sweeps late arrivals of such sites.
    tasks.append(
        asyncio.create_task(
            follow_site_deletions(js, settings.sites_bus, "processor", partial(site_data.deleted, pool)),
            name="site-deletions",
        )
    )
    tasks.append(asyncio.create_task(site_data.sweep_forever(pool), name="deleted-sites-sweep"))
    return tasks


async def serve(settings: Settings) -> None:
    # Replicas on one host may share the admin port (ANALYTICS_GRPC_REUSE_PORT): any of them can list
    # and replay dead letters, which live in JetStream; they share the work through one consumer.
    server = GrpcServer(
        "processor",
        settings.grpc_listen,
        reuse_port=settings.grpc_reuse_port,
        metrics_listen=settings.metrics_listen,
    )
    auth = AuthClient(settings.auth_addr, ttl_s=settings.auth_cache_ttl_s)
    admin = ProcessorServicer(auth, settings.bus)
    server.add(
        processor_pb2_grpc.add_ProcessorServiceServicer_to_server, admin, "analytics.v1.ProcessorService"
    )
    privacy = PrivacyServicer(auth)
    server.add(privacy_pb2_grpc.add_PrivacyServiceServicer_to_server, privacy, "analytics.v1.PrivacyService")
    server.install_signal_handlers()
    await server.start()
    # One connection per batch in flight, plus one for a batch being retried while another starts.
    pool = create_pool(settings.database_url, name="processor", max_size=settings.max_inflight + 1)
    nc = None
    try:
        await open_pool(pool)
        if settings.migrate_on_start:
            await migrate(settings.database_url, SCHEMA, "processor_service.migrations")
        async with pool.connection() as conn:
            tsl = await retention.is_tsl(conn)
            await retention.configure(conn, settings.raw_retention)
        privacy.attach(pool)
        nc = await connect(settings.nats_url, "processor")
        await follow_revocations(nc, auth.revoke)
        js = nc.jetstream()
        await ensure_stream(js, settings.bus)
        await ensure_deadletter_stream(js, settings.bus.deadletter)
        await ensure_consumer(js, settings.bus)
        admin.attach(js)
        consumer = Consumer(
            nc,
            EventWriter(pool, sessions=settings.sessions),
            settings.bus,
            fetch_batch=settings.fetch_batch,
            fetch_timeout_s=settings.fetch_timeout_s,
            fetch_linger_s=settings.fetch_linger_s,
            max_inflight=settings.max_inflight,
            retry_delay_s=settings.retry_delay_s,
            retry_max_delay_s=settings.retry_max_delay_s,
            health=ServingHealth(server),
            live=LivePublisher(nc),
        )
        watcher = MaxDeliveriesWatcher(js, settings.bus)
        tasks = {
            asyncio.create_task(consumer.run(), name="consumer"),
            asyncio.create_task(watcher.run(), name="max-deliveries"),
        }
        background = _background(pool, js, settings, tsl=tsl)
        await server.set_serving()
        stop = asyncio.create_task(server.wait_for_shutdown_signal())
        await asyncio.wait({*tasks, stop}, return_when=asyncio.FIRST_COMPLETED)
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Health NOT_SERVING and in-flight RPCs finished, then the batches in hand: committed and
        # acked, or (database still down) released for redelivery.
        consumer.stop()
        watcher.stop()
        await server.stop()
        stop.cancel()
        for task in tasks:
            await task  # re-raises a crash of the consumer or the watcher: the process exits non-zero
    finally:
        if nc is not None:
            with contextlib.suppress(Exception):  # NATS may be gone; acks already sent or lost
                await nc.drain()
        await auth.close()
        await pool.close()
