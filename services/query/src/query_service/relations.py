"""The processor's relations this service reads: its contract, named in this module only.

Schema ``analytics`` belongs to the processor (migrations in processor_service/migrations); the
reports name its relations through this module only.
"""

from __future__ import annotations

from psycopg import sql

SCHEMA = "analytics"
# One row per stored event (kind 1 page view, 2 custom event); is_bot rows are never counted.
EVENTS = sql.Identifier(SCHEMA, "events")
# One row per visit of a non-bot visitor with a visitor id: events at most 30 minutes apart.
SESSIONS = sql.Identifier(SCHEMA, "sessions")
# The longest span (ended_at - started_at) of any stored session: bounds the look-up of the visit
# an event belongs to.
SESSION_BOUNDS = sql.Identifier(SCHEMA, "session_bounds")
# Rollups (processor migration 0006; continuous aggregates or tables, the same columns either way):
# page views and events per 15-minute UTC bucket (site_id, bucket, pageviews, events)…
EVENT_COUNTS = sql.Identifier(SCHEMA, "event_counts_15m")
# …visits by the 15-minute bucket they start in (site_id, bucket, visits, bounces, visit_pageviews,
# duration: an interval summed over the visits)…
VISIT_COUNTS = sql.Identifier(SCHEMA, "visit_counts_15m")
# …and one row per visitor and UTC day with events (site_id, day, visitor_id, first_at, last_at).
VISITOR_DAYS = sql.Identifier(SCHEMA, "visitor_days")
# The processor's migration version that created what is named above.
REQUIRED_VERSION = 6

PAGEVIEW_KIND = 1
