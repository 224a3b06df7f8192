"""The processor's relations this service reads: its contract, named in this module only.

Schema ``analytics`` belongs to the processor (migrations in processor_service/migrations). When
the processor adds rollups or continuous aggregates, their names join this list and the reports
switch relation here and in their own SQL, nowhere else.
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
# The processor's migration version that created what is named above.
REQUIRED_VERSION = 2

PAGEVIEW_KIND = 1
