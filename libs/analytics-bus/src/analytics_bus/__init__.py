"""JetStream declarations and helpers shared by the ingest service and the processor."""

from analytics_bus.jetstream import (
    EVENTS_SUBJECT,
    BusConfig,
    connect,
    ensure_consumer,
    ensure_stream,
)

__all__ = ["EVENTS_SUBJECT", "BusConfig", "connect", "ensure_consumer", "ensure_stream"]
