"""The session list: a page of the visits that start in a range and pass the filters, each with its
journey (every page viewed, in order), most recent first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql

from query_service import relations
from query_service.filters import Params
from query_service.reports.visits import SCOPE, page_views_of, visits_from
from query_service.spec import StatsQuery

# What a session row shows besides its own columns: the Query API's visit attributes.
ATTRIBUTES = ("visit:source", "visit:channel", "visit:country", "visit:device", "visit:browser", "visit:os")


@dataclass(frozen=True, slots=True)
class SessionRow:
    session_id: str
    visitor_id: int
    user_id: str
    started_at: datetime
    ended_at: datetime
    pageviews: int
    events: int
    bounce: bool
    entry_page: str
    exit_page: str
    pages: list[str]
    attributes: tuple[str, ...]  # in the order of ATTRIBUTES


@dataclass(frozen=True, slots=True)
class SessionPage:
    sessions: list[SessionRow]
    total: int


def _statements(query: StatsQuery) -> tuple[sql.Composed, sql.Composed, dict[str, object]]:
    params = Params()
    source = visits_from(query, params)
    attributes = [SCOPE.expression(name, params) for name in ATTRIBUTES]
    page = sql.SQL(
        "SELECT v.*, ARRAY(SELECT p.path FROM {events} p WHERE {views} ORDER BY p.time, p.event_id)"
        " FROM (SELECT s.site_id, s.visitor_id, s.started_at, s.ended_at, s.session_id::text,"
        " coalesce(h.user_id, ''), s.pageviews, s.events, s.is_bounce, s.entry_path, s.exit_path,"
        " {attributes}"
        " {source} ORDER BY s.started_at DESC, s.visitor_id LIMIT %(limit)s OFFSET %(offset)s) v"
        " ORDER BY v.started_at DESC, v.visitor_id"
    ).format(
        events=relations.EVENTS,
        views=page_views_of("v", "p"),
        attributes=sql.SQL(", ").join(attributes),
        source=source,
    )
    count = sql.SQL("SELECT count(*) {}").format(source)
    return page, count, params.values


async def list_sessions(conn: AsyncConnection[Any], query: StatsQuery) -> SessionPage:
    page, count, values = _statements(query)
    params = {
        "site": query.site_id,
        "start": query.range.start,
        "end": query.range.end,
        "limit": query.limit,
        "offset": query.offset,
        **values,
    }
    cur = await conn.execute(page, params)
    rows = await cur.fetchall()
    sessions = [
        SessionRow(
            session_id=row[4],
            visitor_id=int(row[1]),
            user_id=row[5],
            started_at=row[2],
            ended_at=row[3],
            pageviews=int(row[6]),
            events=int(row[7]),
            bounce=bool(row[8]),
            entry_page=row[9],
            exit_page=row[10],
            attributes=tuple(str(value) for value in row[11 : 11 + len(ATTRIBUTES)]),
            pages=list(row[11 + len(ATTRIBUTES)]),
        )
        for row in rows
    ]
    cur = await conn.execute(count, params)
    total = await cur.fetchone()
    return SessionPage(sessions, int(total[0]) if total else 0)
