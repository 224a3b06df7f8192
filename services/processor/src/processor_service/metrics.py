"""The processor's Prometheus metrics: batches, rows, duplicates, lag, dead letters, commit time."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from analytics_observability.metrics import LATENCY_BUCKETS

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
    "Messages in the stream not yet delivered to the durable consumer, as of the latest fetch.",
)
