"""Prometheus families of the live views, served with the rest on the process's /metrics.

The same figures as ``GET /api/status`` (this replica's), as counters and gauges a scraper can
rate and sum across replicas.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

SUBSCRIBERS = Gauge("analytics_live_subscribers", "Live streams and dashboards open on this replica.")
DROPPED_EVENTS = Counter(
    "analytics_live_dropped_events_total",
    "Events a slow live subscriber lost (its oldest, dropped to make room).",
)
ALERTS = Counter("analytics_live_alerts_total", "Traffic alerts raised by this replica's evaluation.")
WEBHOOKS = Counter(
    "analytics_live_webhook_deliveries_total",
    "Alert webhook deliveries, by outcome (delivered, or failed after every attempt or skipped).",
    ("outcome",),
)
