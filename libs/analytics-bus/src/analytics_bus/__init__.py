"""JetStream declarations and helpers shared by the ingest service and the processor."""

from analytics_bus.jetstream import (
    DEADLETTER_STREAM,
    DEADLETTER_SUBJECT,
    EVENTS_SUBJECT,
    BusConfig,
    DeadLetterConfig,
    connect,
    ensure_consumer,
    ensure_deadletter_stream,
    ensure_stream,
)
from analytics_bus.live import LIVE_PREFIX, live_subject

__all__ = [
    "DEADLETTER_STREAM",
    "DEADLETTER_SUBJECT",
    "EVENTS_SUBJECT",
    "LIVE_PREFIX",
    "BusConfig",
    "DeadLetterConfig",
    "connect",
    "ensure_consumer",
    "ensure_deadletter_stream",
    "ensure_stream",
    "live_subject",
]
