"""Seed 000's summary and active sessions, read from the database in the caller's snapshot."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from psycopg import AsyncConnection, sql

from query_service import relations
from query_service.reports.stats import max_session_span

# A visit is active while its last event is at most this old: the processor's session gap.
ACTIVE_FOR = timedelta(minutes=30)
TOP_PAGES = 50
JOURNEY_PAGES = 100


@dataclass(frozen=True, slots=True)
class Today:
    events: int
    pages: dict[str, int]


@dataclass(frozen=True, slots=True)
class Session:
    session_id: uuid.UUID
    current_page: str
    journey: list[str]
    duration_s: float
    country: str
    device: str
    last_activity: datetime


def _narrowed(column_page: str, column_country: str, page: str, country: str) -> sql.Composable:
    parts: list[sql.Composable] = []
    if page:
        parts.append(sql.SQL("{} = %(page)s").format(sql.SQL(column_page)))
    if country:
        parts.append(sql.SQL("{} = %(country)s").format(sql.SQL(column_country)))
    return sql.SQL("").join(sql.SQL(" AND ") + part for part in parts)


_TODAY = sql.SQL("""
SELECT count(*), count(*) FILTER (WHERE kind = %(pageview)s)
FROM {events}
WHERE site_id = %(site)s AND time >= %(start)s AND time <= %(now)s AND NOT is_bot{narrowed}
""")
_TODAY_PAGES = sql.SQL("""
SELECT path, count(*) AS views
FROM {events}
WHERE site_id = %(site)s AND time >= %(start)s AND time <= %(now)s AND NOT is_bot
  AND kind = %(pageview)s{narrowed}
GROUP BY path ORDER BY views DESC, path COLLATE "C" LIMIT %(limit)s
""")


async def today(
    conn: AsyncConnection[Any],
    site_id: str,
    now: datetime,
    zone: ZoneInfo,
    *,
    page: str = "",
    country: str = "",
) -> Today:
    """Events since local midnight, and page views per page (the TOP_PAGES most viewed)."""
    local = now.astimezone(zone)
    start = datetime.combine(local.date(), datetime.min.time(), zone)
    params = {
        "site": site_id,
        "start": start,
        "now": now,
        "pageview": relations.PAGEVIEW_KIND,
        "page": page,
        "country": country,
        "limit": TOP_PAGES,
    }
    narrowed = _narrowed("path", "country", page, country)
    cur = await conn.execute(_TODAY.format(events=relations.EVENTS, narrowed=narrowed), params)
    row = await cur.fetchone()
    cur = await conn.execute(_TODAY_PAGES.format(events=relations.EVENTS, narrowed=narrowed), params)
    pages = {str(path): int(views) for path, views in await cur.fetchall()}
    return Today(int(row[0]) if row else 0, pages)


_ACTIVE = sql.SQL("""
FROM {sessions} s
WHERE s.site_id = %(site)s AND s.started_at >= %(earliest)s AND s.ended_at > %(since)s{narrowed}
""")
_SESSIONS = sql.SQL("""
SELECT s.session_id, s.exit_path, s.started_at, s.ended_at, s.country, s.device,
       ARRAY(SELECT j.path FROM (
           SELECT e.path, e.time, e.event_id FROM {events} e
           WHERE e.site_id = s.site_id AND e.visitor_id = s.visitor_id AND e.time >= s.started_at
             AND e.time <= s.ended_at AND e.kind = %(pageview)s AND NOT e.is_bot
           ORDER BY e.time DESC, e.event_id DESC LIMIT %(journey)s
       ) j ORDER BY j.time, j.event_id)
{active}
ORDER BY s.ended_at DESC, s.session_id LIMIT %(limit)s
""")


async def active_sessions(
    conn: AsyncConnection[Any],
    site_id: str,
    now: datetime,
    limit: int,
    *,
    page: str = "",
    country: str = "",
    changed_after: datetime | None = None,
) -> tuple[list[Session], int]:
    """Visits whose last event is under ACTIVE_FOR old (and after ``changed_after``, when given),
    most recent first, and how many match."""
    since = now - ACTIVE_FOR if changed_after is None else max(now - ACTIVE_FOR, changed_after)
    params = {
        "site": site_id,
        "since": since,
        # A visit whose last event is after `since` started at or after it minus the longest visit.
        "earliest": since - await max_session_span(conn),
        "page": page,
        "country": country,
        "pageview": relations.PAGEVIEW_KIND,
        "journey": JOURNEY_PAGES,
        "limit": limit,
    }
    active = _ACTIVE.format(
        sessions=relations.SESSIONS, narrowed=_narrowed("s.exit_path", "s.country", page, country)
    )
    cur = await conn.execute(sql.SQL("SELECT count(*) {}").format(active), params)
    row = await cur.fetchone()
    cur = await conn.execute(_SESSIONS.format(events=relations.EVENTS, active=active), params)
    sessions = [
        Session(
            session_id,
            exit_path,
            [str(p) for p in journey],
            (ended - started).total_seconds(),
            country_,
            device,
            ended,
        )
        for session_id, exit_path, started, ended, country_, device, journey in await cur.fetchall()
    ]
    return sessions, int(row[0]) if row else 0
