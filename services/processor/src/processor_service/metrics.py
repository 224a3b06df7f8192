"""The processor's Prometheus metrics: batches, rows, duplicates, lag, dead letters, commit time."""

from __future__ import annotations

import asyncio

import structlog
from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge, Histogram

from analytics_bus import BusConfig
from analytics_observability.metrics import LATENCY_BUCKETS

log = structlog.get_logger("analytics.processor")

BATCHES = Counter(
    "analytics_processor_batches_total", "Transactions committed (each stores one fetch's messages)."
)
MESSAGES = Counter("analytics_processor_messages_total", "JetStream messages stored and acknowledged.")
ROWS_INSERTED = Counter("analytics_processor_rows_inserted_total", "Events stored for the first time.")
DUPLICATES_SKIPPED = Counter(
    "analytics_processor_duplicates_skipped_total",
    "Events not stored because their id was already stored (redeliveries and client retries).",
)
DEAD_LETTERS = Counter(
    "analytics_processor_dead_letters_total",
    "Messages moved to the dead-letter stream, by reason.",
    ("reason",),
)
WRITE_RETRIES = Counter(
    "analytics_processor_write_retries_total",
    "Transactions retried after a database error (outages and lock contention).",
)
COMMIT_SECONDS = Histogram(
    "analytics_processor_commit_seconds",
    "Time of one write transaction (events, sessions, rollups) up to its commit, in seconds.",
    buckets=LATENCY_BUCKETS,
)
CONSUMER_LAG = Gauge(
    "analytics_processor_consumer_lag_messages",
    "Messages in the stream not yet delivered to the durable consumer (every processor's backlog).",
)
CONSUMER_ACK_PENDING = Gauge(
    "analytics_processor_consumer_ack_pending_messages",
    "Messages delivered to processors and not yet acknowledged (being written, or waiting to be "
    "redelivered).",
)


async def read_consumer_state(js: JetStreamContext, bus: BusConfig) -> None:
    """Sets the lag gauges from the durable consumer, as JetStream counts it: the same figures
    whichever processor is scraped, and current even while no batch is fetched."""
    info = await js.consumer_info(bus.stream, bus.consumer)
    CONSUMER_LAG.set(info.num_pending or 0)
    CONSUMER_ACK_PENDING.set(info.num_ack_pending or 0)


async def watch_consumer_state(js: JetStreamContext, bus: BusConfig, interval_s: float) -> None:
    """read_consumer_state every ``interval_s`` until cancelled; while NATS does not answer, the
    gauges keep their last values."""
    while True:
        try:
            await read_consumer_state(js, bus)
        except Exception as error:
            log.debug("consumer state unavailable", error=str(error) or type(error).__name__)
        await asyncio.sleep(interval_s)
