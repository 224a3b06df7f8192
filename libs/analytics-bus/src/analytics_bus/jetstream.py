"""Stream and durable consumer declared from configuration, and a resilient connection."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import nats
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

log = structlog.get_logger("analytics.bus")

EVENTS_SUBJECT = "analytics.events.v1"


@dataclass(frozen=True, slots=True)
class BusConfig:
    """Where events travel: one stream, one subject, one durable consumer shared by processors."""

    stream: str = "ANALYTICS_EVENTS"
    subject: str = EVENTS_SUBJECT
    consumer: str = "processor"
    # Publishing the same Nats-Msg-Id again within this window is dropped by JetStream.
    duplicate_window_s: float = 120.0
    # Unprocessed events older than this are discarded; a week covers any realistic outage.
    max_age_s: float = 7 * 24 * 3600.0
    max_bytes: int = -1
    replicas: int = 1
    ack_wait_s: float = 60.0
    max_ack_pending: int = 20_000


async def connect(url: str, name: str, *, timeout_s: float = 60.0) -> Client:
    """Connects and keeps reconnecting for ever afterwards; waits up to ``timeout_s`` at first."""

    async def on_disconnected() -> None:
        log.warning("nats disconnected", client=name)

    async def on_reconnected() -> None:
        log.info("nats reconnected", client=name)

    async def on_error(error: Exception) -> None:
        log.warning("nats error", client=name, error=str(error) or type(error).__name__)

    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            return await nats.connect(
                url,
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=2,
                allow_reconnect=True,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                error_cb=on_error,
            )
        except Exception as error:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.info("waiting for nats", client=name, error=str(error) or type(error).__name__)
            await asyncio.sleep(0.5)


async def ensure_stream(js: JetStreamContext, config: BusConfig) -> None:
    """Creates the stream, or updates it to the configured limits."""
    wanted = StreamConfig(
        name=config.stream,
        subjects=[config.subject],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        duplicate_window=config.duplicate_window_s,
        max_age=config.max_age_s,
        max_bytes=config.max_bytes,
        num_replicas=config.replicas,
    )
    try:
        await js.stream_info(config.stream)
    except NotFoundError:
        await js.add_stream(wanted)
        log.info("stream created", stream=config.stream)
        return
    await js.update_stream(wanted)


async def ensure_consumer(js: JetStreamContext, config: BusConfig) -> None:
    """Creates the durable pull consumer the processors share (idempotent)."""
    await js.add_consumer(
        config.stream,
        ConsumerConfig(
            durable_name=config.consumer,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=config.ack_wait_s,
            max_ack_pending=config.max_ack_pending,
            filter_subject=config.subject,
        ),
    )
