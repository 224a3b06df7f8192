"""Ingest's Prometheus metrics: events accepted and rejected, rate limiting, the group commit."""

from __future__ import annotations

import grpc
from prometheus_client import Counter, Histogram

from analytics_observability.metrics import LATENCY_BUCKETS

EVENTS_ACCEPTED = Counter(
    "analytics_ingest_events_accepted_total", "Events acknowledged by JetStream and answered OK."
)
EVENTS_REJECTED = Counter(
    "analytics_ingest_events_rejected_total",
    "Events of requests answered with an error, by reason (a request's events share its reason).",
    ("reason",),
)
RATE_LIMITED = Counter(
    "analytics_ingest_rate_limited_requests_total",
    "Requests refused with RESOURCE_EXHAUSTED because their API key was over its rate limit.",
)
BATCH_EVENTS = Histogram(
    "analytics_ingest_group_commit_events",
    "Events per JetStream message (one group commit).",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
BATCH_BYTES = Histogram(
    "analytics_ingest_group_commit_bytes",
    "Bytes per JetStream message (one group commit).",
    buckets=(256, 1024, 4096, 16384, 65536, 131072, 262144, 524288, 1048576, 4194304, 8388608),
)
PUBLISH_SECONDS = Histogram(
    "analytics_ingest_publish_seconds",
    "From a group commit's publish to JetStream's acknowledgement (or its failure), in seconds.",
    buckets=LATENCY_BUCKETS,
)
PUBLISH_FAILURES = Counter(
    "analytics_ingest_publish_failures_total",
    "Group commits JetStream did not acknowledge (their callers got UNAVAILABLE).",
)

# Rejection reasons by status; any other status counts under its own name in lower case.
_REASONS = {
    grpc.StatusCode.INVALID_ARGUMENT: "invalid",
    grpc.StatusCode.UNAUTHENTICATED: "unauthenticated",
    grpc.StatusCode.PERMISSION_DENIED: "forbidden",
    grpc.StatusCode.NOT_FOUND: "unknown_site",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "rate_limited",
    grpc.StatusCode.UNAVAILABLE: "not_acknowledged",
}


def rejected(code: grpc.StatusCode, events: int) -> None:
    """Counts a request refused with ``code``, and its events."""
    EVENTS_REJECTED.labels(_REASONS.get(code, code.name.lower())).inc(events)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        RATE_LIMITED.inc()
