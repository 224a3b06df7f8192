"""The realtime report: visitors with an event in the window ending now, and the top pages,
sources and countries among them. Read from the database only, so every replica answers alike.

Visitors and pages come from the window's events; sources and countries from the visits of those
visitors that overlap the window (started by its end, last event after its start): a visit's source
and country are those of its first event, which may lie before the window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, sql

from query_service import relations
from query_service.reports.stats import max_session_span

DEFAULT_WINDOW = timedelta(minutes=5)
EVENTS_RATE_WINDOW = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class RealtimeQuery:
    site_id: str
    now: datetime
    window: timedelta = DEFAULT_WINDOW
    limit: int = 10
    page: str = ""
    country: str = ""

    @property
    def start(self) -> datetime:
        return self.now - self.window


@dataclass(frozen=True, slots=True)
class Count:
    value: str
    visitors: int
    pageviews: int = 0


@dataclass(frozen=True, slots=True)
class Realtime:
    visitors: int
    pageviews: int
    events: int
    events_last_minute: int
    top_pages: list[Count]
    top_sources: list[Count]
    top_countries: list[Count]


def _recent(query: RealtimeQuery) -> sql.Composable:
    """The window's counted events, narrowed by the query's page and country."""
    conditions = [
        sql.SQL(
            "site_id = %(site)s AND time > %(start)s AND time <= %(now)s AND NOT is_bot AND visitor_id <> 0"
        )
    ]
    if query.page:
        conditions.append(sql.SQL("path = %(page)s"))
    if query.country:
        conditions.append(sql.SQL("country = %(country)s"))
    return sql.SQL("SELECT time, visitor_id, kind, path FROM {events} WHERE {where}").format(
        events=relations.EVENTS, where=sql.SQL(" AND ").join(conditions)
    )


_TOTALS = sql.SQL("""
WITH recent AS ({recent})
SELECT count(DISTINCT visitor_id), count(*) FILTER (WHERE kind = %(pageview)s), count(*),
       count(*) FILTER (WHERE time > %(minute)s)
FROM recent
""")

_PAGES = sql.SQL("""
WITH recent AS ({recent})
SELECT path, count(DISTINCT visitor_id) AS visitors, count(*) AS pageviews
FROM recent WHERE kind = %(pageview)s
GROUP BY path ORDER BY visitors DESC, pageviews DESC, path COLLATE "C" LIMIT %(limit)s
""")

# Visits overlapping the window, of the visitors counted in it. A visit holding an event at t
# started at or after t minus the longest stored visit: the lower bound keeps the scan to the
# window's chunks.
_VISIT_VALUES = sql.SQL("""
WITH recent AS ({recent})
SELECT {value} COLLATE "C" AS value, count(DISTINCT s.visitor_id) AS visitors
FROM {sessions} s
WHERE s.site_id = %(site)s AND s.started_at >= %(earliest)s AND s.started_at <= %(now)s
  AND s.ended_at > %(start)s AND s.visitor_id IN (SELECT visitor_id FROM recent)
GROUP BY value ORDER BY visitors DESC, value LIMIT %(limit)s
""")
_SOURCE = sql.SQL("CASE WHEN s.utm_source <> '' THEN s.utm_source ELSE s.referrer_host END")
_COUNTRY = sql.SQL("s.country")


async def realtime(conn: AsyncConnection[Any], query: RealtimeQuery) -> Realtime:
    """Every statement runs in the caller's snapshot, so the figures agree with each other."""
    recent = _recent(query)
    params: dict[str, object] = {
        "site": query.site_id,
        "start": query.start,
        "now": query.now,
        "minute": query.now - EVENTS_RATE_WINDOW,
        "pageview": relations.PAGEVIEW_KIND,
        "limit": query.limit,
        "page": query.page,
        "country": query.country,
    }
    cur = await conn.execute(_TOTALS.format(recent=recent), params)
    row = await cur.fetchone()
    visitors, pageviews, events, last_minute = row if row else (0, 0, 0, 0)
    cur = await conn.execute(_PAGES.format(recent=recent), params)
    pages = [Count(path, int(v), int(p)) for path, v, p in await cur.fetchall()]
    params["earliest"] = query.start - await max_session_span(conn)
    lists: list[list[Count]] = []
    for value in (_SOURCE, _COUNTRY):
        statement = _VISIT_VALUES.format(recent=recent, value=value, sessions=relations.SESSIONS)
        cur = await conn.execute(statement, params)
        lists.append([Count(str(v), int(n)) for v, n in await cur.fetchall()])
    return Realtime(int(visitors), int(pageviews), int(events), int(last_minute), pages, *lists)
