"""Erasure: everything stored about one person (a user_id, or one visitor id) of a site goes, and
every rollup keeps equal to a recomputation from the events and visits that remain.

Sessions and visitor days are per visitor, so deleting a visitor's rows leaves everyone else's as
a recomputation would make them. The counts per 15-minute bucket are sums over events and visits:
tables (Apache edition) are corrected by subtracting the erased events and visits bucket by
bucket, in the same transaction (a bucket left with nothing is deleted: the continuous aggregate
has no row for it); continuous aggregates (TSL edition) are refreshed over the buckets touched,
after the commit. The transaction holds the sessionizer's advisory locks of those visitors, so no
batch of the writer changes their rows halfway through.

Kept: the claims of the erased event ids (analytics.event_ids, ids only, forgotten after 8 days),
so a client's retry of an erased event is not stored again meanwhile; the longest visit span
(analytics.session_bounds), a bound that only steers look-ups.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from psycopg import AsyncConnection

from processor_service import rollups
from processor_service.rollups import EVENT_COUNTS, VISIT_COUNTS, VISITOR_DAYS, Mode
from processor_service.sessions import LOCK_BUCKETS, LOCK_CLASS

log = structlog.get_logger("analytics.processor")

_VISITORS_OF_USER = """
SELECT DISTINCT visitor_id FROM analytics.events
 WHERE site_id = %(site)s AND user_id = %(user)s AND visitor_id <> 0
"""
_LOCK = f"""
SELECT count(pg_advisory_xact_lock({LOCK_CLASS}, bucket))
  FROM (SELECT DISTINCT abs(hashtextextended(%(site)s::text, v) %% {LOCK_BUCKETS})::int AS bucket
          FROM unnest(%(visitors)s::bigint[]) AS v
         ORDER BY 1) AS buckets
"""  # noqa: S608 - constants only
# What the erased rows added to the counts, and the window of buckets they touched.
_EVENT_SHARE = """
SELECT time_bucket(INTERVAL '15 minutes', time) AS bucket, count(*) FILTER (WHERE kind = 1), count(*)
  FROM analytics.events
 WHERE site_id = %(site)s AND visitor_id = ANY (%(visitors)s) AND NOT is_bot
 GROUP BY 1
"""
_VISIT_SHARE = """
SELECT time_bucket(INTERVAL '15 minutes', started_at) AS bucket, count(*), count(*) FILTER (WHERE is_bounce),
       sum(pageviews), sum(ended_at - started_at)
  FROM analytics.sessions
 WHERE site_id = %(site)s AND visitor_id = ANY (%(visitors)s)
 GROUP BY 1
"""
_SUBTRACT_EVENTS = f"""
WITH share (bucket, pageviews, events) AS ({_EVENT_SHARE})
UPDATE analytics.{EVENT_COUNTS} t
   SET pageviews = t.pageviews - share.pageviews, events = t.events - share.events
  FROM share
 WHERE t.site_id = %(site)s AND t.bucket = share.bucket
"""  # noqa: S608 - constants only
_SUBTRACT_VISITS = f"""
WITH share (bucket, visits, bounces, visit_pageviews, duration) AS ({_VISIT_SHARE})
UPDATE analytics.{VISIT_COUNTS} t
   SET visits = t.visits - share.visits, bounces = t.bounces - share.bounces,
       visit_pageviews = t.visit_pageviews - share.visit_pageviews, duration = t.duration - share.duration
  FROM share
 WHERE t.site_id = %(site)s AND t.bucket = share.bucket
"""  # noqa: S608 - constants only
# Buckets left with nothing hold no row, as in the continuous aggregates (the window: the erased ones).
_EMPTY_EVENT_BUCKETS = f"""
DELETE FROM analytics.{EVENT_COUNTS}
 WHERE site_id = %(site)s AND bucket >= %(from)s AND bucket < %(to)s AND events = 0
"""  # noqa: S608 - constants only
_EMPTY_VISIT_BUCKETS = f"""
DELETE FROM analytics.{VISIT_COUNTS}
 WHERE site_id = %(site)s AND bucket >= %(from)s AND bucket < %(to)s
   AND visits = 0 AND bounces = 0 AND visit_pageviews = 0 AND duration = INTERVAL '0'
"""  # noqa: S608 - constants only
_WINDOW = """
SELECT min(bucket), max(bucket) + INTERVAL '15 minutes', count(*) FROM ({share}) s
"""
_DELETE_VISITOR_DAYS = f"""
DELETE FROM analytics.{VISITOR_DAYS} WHERE site_id = %(site)s AND visitor_id = ANY (%(visitors)s)
"""  # noqa: S608 - constants only
_DELETE_SESSIONS = (
    "DELETE FROM analytics.sessions WHERE site_id = %(site)s AND visitor_id = ANY (%(visitors)s)"
)
_DELETE_EVENTS = """
DELETE FROM analytics.events
 WHERE site_id = %(site)s AND (visitor_id = ANY (%(visitors)s) OR user_id = %(user)s)
"""


@dataclass(frozen=True, slots=True)
class Erased:
    """What an erasure removed."""

    visitors: int
    events: int
    sessions: int
    visitor_days: int
    event_buckets: int
    visit_buckets: int


async def _window(conn: AsyncConnection[Any], share: str, params: dict[str, Any]) -> tuple[Any, Any, int]:
    cur = await conn.execute(_WINDOW.format(share=share), params)
    row = await cur.fetchone()
    assert row is not None
    return row[0], row[1], int(row[2])


async def erase(
    conn: AsyncConnection[Any], site_id: str, *, user_id: str = "", visitor_id: int = 0
) -> Erased:
    """Erases one person's data of a site (a user_id, or a visitor id). ``conn`` must not be in a
    transaction; it is left in autocommit off."""
    mode = await rollups.detect(conn)
    await conn.commit()
    # NULL never equals a stored user_id: erasing by visitor id deletes by visitor id alone.
    params: dict[str, Any] = {"site": site_id, "user": user_id or None}
    refresh: list[tuple[str, datetime, datetime]] = []
    async with conn.transaction():
        if user_id:
            cur = await conn.execute(_VISITORS_OF_USER, params)
            visitors = sorted(int(row[0]) for row in await cur.fetchall())
        else:
            visitors = [visitor_id]
        params["visitors"] = visitors
        await conn.execute(_LOCK, params)
        if user_id:  # a batch committed before the lock may have added a visitor id of the user
            cur = await conn.execute(_VISITORS_OF_USER, params)
            visitors = sorted({*visitors, *(int(row[0]) for row in await cur.fetchall())})
            params["visitors"] = visitors
            await conn.execute(_LOCK, params)
        first_event, end_event, event_buckets = await _window(conn, _EVENT_SHARE, params)
        first_visit, end_visit, visit_buckets = await _window(conn, _VISIT_SHARE, params)
        if mode is Mode.TABLES:
            await conn.execute(_SUBTRACT_EVENTS, params)
            await conn.execute(_SUBTRACT_VISITS, params)
        cur = await conn.execute(_DELETE_VISITOR_DAYS, params)
        visitor_days = cur.rowcount
        cur = await conn.execute(_DELETE_SESSIONS, params)
        sessions = cur.rowcount
        cur = await conn.execute(_DELETE_EVENTS, params)
        events = cur.rowcount
        if mode is Mode.TABLES and first_event is not None:
            await conn.execute(_EMPTY_EVENT_BUCKETS, {**params, "from": first_event, "to": end_event})
        if mode is Mode.TABLES and first_visit is not None:
            await conn.execute(_EMPTY_VISIT_BUCKETS, {**params, "from": first_visit, "to": end_visit})
    if mode is Mode.CONTINUOUS:
        if first_event is not None:
            refresh.append((EVENT_COUNTS, first_event, end_event))
        if first_visit is not None:
            refresh.append((VISIT_COUNTS, first_visit, end_visit))
        await refresh_windows(conn, refresh)
    return Erased(
        visitors=len(visitors) if events or sessions else 0,
        events=events,
        sessions=sessions,
        visitor_days=visitor_days,
        event_buckets=event_buckets,
        visit_buckets=visit_buckets,
    )


async def refresh_windows(conn: AsyncConnection[Any], windows: list[tuple[str, datetime, datetime]]) -> None:
    """Recomputes continuous aggregates over windows of whole buckets, outside any transaction."""
    if not windows:
        return
    await conn.set_autocommit(True)
    try:
        for name, start, end in windows:
            await conn.execute(
                "CALL refresh_continuous_aggregate(%s, %s, %s, force => true)",
                (f"analytics.{name}", start, end),
            )
    finally:
        await conn.set_autocommit(False)
