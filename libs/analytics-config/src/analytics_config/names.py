"""Environment variables that more than one service reads, each name declared once.

A service's own settings (group commit, fetch sizes, HTTP limits, …) are declared in its own
settings module; the names here are the ones a deployment sets alike on several services.
"""

from __future__ import annotations

GRPC_LISTEN = "ANALYTICS_GRPC_LISTEN"
# SO_REUSEPORT on the gRPC port, for several processes of one service on one host. Off by default:
# two processes that share a port by accident would silently split its connections.
GRPC_REUSE_PORT = "ANALYTICS_GRPC_REUSE_PORT"
LOG_LEVEL = "ANALYTICS_LOG_LEVEL"
# host:port of the Prometheus /metrics endpoint; unset: none. Each process needs a port of its own.
METRICS_LISTEN = "ANALYTICS_METRICS_LISTEN"
DATABASE_URL = "ANALYTICS_DATABASE_URL"
NATS_URL = "ANALYTICS_NATS_URL"
# JetStream servers that keep each stream (ingest and processor declare the streams alike).
STREAM_REPLICAS = "ANALYTICS_STREAM_REPLICAS"
MIGRATE_ON_START = "ANALYTICS_MIGRATE_ON_START"
AUTH_ADDR = "ANALYTICS_AUTH_ADDR"
AUTH_CACHE_TTL_S = "ANALYTICS_AUTH_CACHE_TTL_S"
INGEST_ADDR = "ANALYTICS_INGEST_ADDR"
QUERY_ADDR = "ANALYTICS_QUERY_ADDR"
PROCESSOR_ADDR = "ANALYTICS_PROCESSOR_ADDR"
# The query service's WebSocket listener (live dashboards), which the edge routes /ws to.
QUERY_WS_ADDR = "ANALYTICS_QUERY_WS_ADDR"
ADMIN_TOKEN = "ANALYTICS_ADMIN_TOKEN"  # noqa: S105 - the variable's name, not a secret
INTERNAL_TOKEN = "ANALYTICS_INTERNAL_TOKEN"  # noqa: S105 - the variable's name, not a secret
EVENT_LOOP = "ANALYTICS_EVENT_LOOP"
