"""Runs the processor: health over gRPC, the JetStream consumer, shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib

from analytics_bus import connect, ensure_consumer, ensure_stream
from analytics_db import create_pool, migrate, open_pool
from analytics_grpc import GrpcServer
from processor_service.consumer import Consumer
from processor_service.settings import Settings
from processor_service.writer import EventWriter

SCHEMA = "analytics"


async def serve(settings: Settings) -> None:
    server = GrpcServer("processor", settings.grpc_listen)
    server.install_signal_handlers()
    await server.start()
    pool = create_pool(settings.database_url, name="processor", max_size=4)
    nc = None
    try:
        await open_pool(pool)
        if settings.migrate_on_start:
            await migrate(settings.database_url, SCHEMA, "processor_service.migrations")
        nc = await connect(settings.nats_url, "processor")
        js = nc.jetstream()
        await ensure_stream(js, settings.bus)
        await ensure_consumer(js, settings.bus)
        consumer = Consumer(
            js,
            EventWriter(pool),
            settings.bus,
            fetch_batch=settings.fetch_batch,
            fetch_timeout_s=settings.fetch_timeout_s,
            retry_delay_s=settings.retry_delay_s,
        )
        task = asyncio.create_task(consumer.run(), name="consumer")
        await server.set_serving()
        stop = asyncio.create_task(server.wait_for_shutdown_signal())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        # Finish the batch in hand (its transaction and acks) before closing connections.
        consumer.stop()
        await server.stop()
        await task
        stop.cancel()
    finally:
        if nc is not None:
            with contextlib.suppress(Exception):  # NATS may be gone; acks already sent or lost
                await nc.drain()
        await pool.close()
