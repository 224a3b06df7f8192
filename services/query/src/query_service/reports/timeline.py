"""A person's timeline: the events of one user_id in a range, grouped into their visits (the
processor's sessions), oldest visit first, a page of visits at a time."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, sql

from query_service import relations
from query_service.spec import TimeRange


@dataclass(frozen=True, slots=True)
class TimelineEventRow:
    event_id: str
    time: datetime
    name: str
    path: str
    url: str
    referrer: str
    properties: dict[str, Any]


@dataclass(slots=True)
class TimelineVisit:
    visitor_id: int
    session_id: str
    started_at: datetime
    ended_at: datetime
    events: list[TimelineEventRow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Timeline:
    visits: list[TimelineVisit]
    total: int


# The person's counted events in the range: what a report would count of them.
_PERSON = sql.SQL(
    "e.site_id = %(site)s AND e.user_id = %(user)s AND e.time >= %(start)s AND e.time < %(end)s"
    " AND NOT e.is_bot AND e.visitor_id <> 0"
)
_VISITS = sql.SQL(
    "SELECT DISTINCT s.visitor_id, s.started_at, s.ended_at, s.session_id::text FROM {events} e"
    " JOIN {sessions} s ON s.site_id = e.site_id AND s.visitor_id = e.visitor_id AND s.started_at <= e.time"
    " AND s.ended_at >= e.time AND s.started_at >= %(session_floor)s WHERE {person}"
).format(events=relations.EVENTS, sessions=relations.SESSIONS, person=_PERSON)
_PAGE = sql.SQL("{} ORDER BY 2, 1 LIMIT %(limit)s OFFSET %(offset)s").format(_VISITS)
_COUNT = sql.SQL("SELECT count(*) FROM ({}) v").format(_VISITS)
_EVENTS = sql.SQL(
    "SELECT e.visitor_id, e.event_id::text, e.time, e.name, e.path, e.url, e.referrer, e.properties"
    " FROM {events} e WHERE {person} AND e.visitor_id = ANY(%(visitors)s) AND e.time >= %(first)s"
    " AND e.time <= %(last)s ORDER BY e.time, e.event_id"
).format(events=relations.EVENTS, person=_PERSON)


async def timeline(
    conn: AsyncConnection[Any],
    site_id: str,
    user_id: str,
    span: TimeRange,
    *,
    limit: int,
    offset: int,
    max_span: timedelta,
) -> Timeline:
    params: dict[str, object] = {
        "site": site_id,
        "user": user_id,
        "start": span.start,
        "end": span.end,
        "session_floor": span.start - max_span,
        "limit": limit,
        "offset": offset,
    }
    cur = await conn.execute(_PAGE, params)
    visits = [TimelineVisit(int(v), str(sid), start, end) for v, start, end, sid in await cur.fetchall()]
    cur = await conn.execute(_COUNT, params)
    counted = await cur.fetchone()
    total = int(counted[0]) if counted else 0
    if not visits:
        return Timeline([], total)
    params.update(
        visitors=sorted({v.visitor_id for v in visits}),
        first=min(v.started_at for v in visits),
        last=max(v.ended_at for v in visits),
    )
    cur = await conn.execute(_EVENTS, params)
    for visitor_id, event_id, at, name, path, url, referrer, properties in await cur.fetchall():
        # A visitor's visits never overlap, so at most one holds the event; events of the person's
        # visits outside this page hold none.
        for visit in visits:
            if visit.visitor_id == visitor_id and visit.started_at <= at <= visit.ended_at:
                visit.events.append(
                    TimelineEventRow(event_id, at, name, path, url, referrer, dict(properties or {}))
                )
                break
    return Timeline(visits, total)
