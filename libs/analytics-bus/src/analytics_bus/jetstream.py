"""Stream and durable consumer declared from configuration, and a resilient connection."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

import nats
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

log = structlog.get_logger("analytics.bus")

EVENTS_SUBJECT = "analytics.events.v1"
DEADLETTER_STREAM = "ANALYTICS_DEADLETTER"
DEADLETTER_SUBJECT = "analytics.deadletter.events"


@dataclass(frozen=True, slots=True)
class DeadLetterConfig:
    """Where messages the processor cannot store go, with headers saying why (analytics_bus.deadletter)."""

    stream: str = DEADLETTER_STREAM
    subject: str = DEADLETTER_SUBJECT
    # Long enough for someone to look, fix and replay; the stream is small (only failures).
    max_age_s: float = 30 * 24 * 3600.0
    # Re-copying the same original message within this window (a crash between the copy and the
    # term, several processors seeing one advisory) is dropped by JetStream.
    duplicate_window_s: float = 600.0
    replicas: int = 1


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
    # Without backoff_s, how long a delivered message may stay unacknowledged before redelivery.
    ack_wait_s: float = 60.0
    max_ack_pending: int = 20_000
    # A message delivered this often without an ack is given up by the consumer: JetStream then
    # publishes a MAX_DELIVERIES advisory, which the processor turns into a dead letter.
    max_deliver: int = 10
    # Redelivery delays after the 1st, 2nd, … unacknowledged delivery (the last one repeats). JetStream
    # also uses the first one as the ack wait: a processor holding a batch (writing or retrying it)
    # calls in_progress() every quarter of it, so only a dead processor's messages wait it out, and
    # another processor (or its restart) has them again within that time.
    backoff_s: tuple[float, ...] = (10.0, 30.0, 120.0, 300.0, 600.0)
    deadletter: DeadLetterConfig = DeadLetterConfig()

    def replicated(self, replicas: int) -> BusConfig:
        """The same streams kept on ``replicas`` JetStream servers each (1 on a single server; 3 in
        a cluster survives the loss of one). Ingest and processors must agree: each applies it."""
        return dataclasses.replace(
            self, replicas=replicas, deadletter=dataclasses.replace(self.deadletter, replicas=replicas)
        )

    @property
    def advisory_subject(self) -> str:
        """JetStream's advisory for messages of this consumer that exceeded max_deliver."""
        return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream}.{self.consumer}"

    @property
    def advisory_stream(self) -> str:
        """Stream that keeps those advisories, so none is lost while no processor is connected."""
        return f"{self.stream}_MAX_DELIVERIES"


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
    await _ensure(
        js,
        StreamConfig(
            name=config.stream,
            subjects=[config.subject],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            duplicate_window=config.duplicate_window_s,
            max_age=config.max_age_s,
            max_bytes=config.max_bytes,
            num_replicas=config.replicas,
        ),
    )


async def ensure_consumer(js: JetStreamContext, config: BusConfig) -> None:
    """Creates the durable pull consumer the processors share, or updates it to the configuration.

    Also declares the stream that captures its MAX_DELIVERIES advisories and a durable consumer on
    it, so a message given up while every processor was down still becomes a dead letter later.
    """
    if config.backoff_s and config.max_deliver <= len(config.backoff_s):
        raise ValueError("max_deliver must exceed the number of backoff steps")
    await js.add_consumer(
        config.stream,
        ConsumerConfig(
            durable_name=config.consumer,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=config.backoff_s[0] if config.backoff_s else config.ack_wait_s,
            backoff=list(config.backoff_s) or None,
            max_deliver=config.max_deliver,
            max_ack_pending=config.max_ack_pending,
            filter_subject=config.subject,
        ),
    )
    await _ensure(
        js,
        StreamConfig(
            name=config.advisory_stream,
            subjects=[config.advisory_subject],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=config.max_age_s,
            num_replicas=config.replicas,
        ),
    )
    await js.add_consumer(
        config.advisory_stream,
        ConsumerConfig(
            durable_name=config.consumer,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=30.0,
        ),
    )


async def ensure_deadletter_stream(js: JetStreamContext, config: DeadLetterConfig) -> None:
    """Creates the dead-letter stream, or updates it to the configured limits."""
    await _ensure(
        js,
        StreamConfig(
            name=config.stream,
            subjects=[config.subject],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            duplicate_window=config.duplicate_window_s,
            max_age=config.max_age_s,
            num_replicas=config.replicas,
        ),
    )


async def ensure_stream_config(js: JetStreamContext, wanted: StreamConfig) -> None:
    """Creates a stream, or updates it to ``wanted``."""
    await _ensure(js, wanted)


async def _ensure(js: JetStreamContext, wanted: StreamConfig) -> None:
    name = wanted.name or ""
    try:
        await js.stream_info(name)
    except NotFoundError:
        await js.add_stream(wanted)
        log.info("stream created", stream=name)
        return
    await js.update_stream(wanted)
