"""Next-page and previous-page flows: for every view of a page in the chosen visits, the path of
page views right after (or before) it in the same visit, counted and ranked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from psycopg import AsyncConnection, sql

from query_service import relations
from query_service.filters import Params
from query_service.reports.visits import page_views_of, visits_from
from query_service.spec import StatsQuery

Direction = Literal["next", "previous"]
MAX_STEPS = 5


@dataclass(frozen=True, slots=True)
class Flow:
    pages: tuple[str, ...]
    page_views: int
    visits: int


@dataclass(frozen=True, slots=True)
class Flows:
    page_views: int
    visits: int
    flows: list[Flow]


def _statement(query: StatsQuery, direction: Direction, steps: int) -> tuple[sql.Composed, dict[str, object]]:
    params = Params()
    shift = sql.SQL("lead" if direction == "next" else "lag")
    # Offsets are whole numbers from this module, never user text; past the visit's end they are
    # NULL, which array_remove drops (paths themselves are never NULL).
    around = sql.SQL(", ").join(
        sql.SQL("{}(p.path, {}) OVER w").format(shift, sql.Literal(n)) for n in range(1, steps + 1)
    )
    statement = sql.SQL(
        "WITH chosen AS (SELECT s.site_id, s.visitor_id, s.started_at, s.ended_at {source}),"
        " views AS (SELECT c.visitor_id, c.started_at AS visit, p.path,"
        " array_remove(ARRAY[{around}], NULL) AS pages"
        " FROM chosen c JOIN {events} p ON {views}"
        " WINDOW w AS (PARTITION BY c.visitor_id, c.started_at ORDER BY p.time, p.event_id)),"
        " hits AS (SELECT visitor_id, visit, pages FROM views WHERE path = %(page)s)"
        " (SELECT NULL::text[], count(*), count(DISTINCT (visitor_id, visit)) FROM hits)"
        " UNION ALL (SELECT pages, count(*) AS n, count(DISTINCT (visitor_id, visit)) AS v FROM hits"
        ' GROUP BY pages ORDER BY n DESC, v DESC, pages COLLATE "C" LIMIT %(limit)s)'
    ).format(
        source=visits_from(query, params),
        around=around,
        events=relations.EVENTS,
        views=page_views_of("c", "p"),
    )
    return statement, params.values


async def page_flows(
    conn: AsyncConnection[Any], query: StatsQuery, page: str, direction: Direction, *, steps: int, limit: int
) -> Flows:
    statement, values = _statement(query, direction, steps)
    params = {
        "site": query.site_id,
        "start": query.range.start,
        "end": query.range.end,
        "page": page,
        "limit": limit,
        **values,
    }
    cur = await conn.execute(statement, params)
    rows = await cur.fetchall()
    # The totals row is the one without a path (every hit has one, maybe empty); the branches of a
    # UNION ALL come back in no promised order, so the ranking is restored here (the same keys).
    totals = next(row for row in rows if row[0] is None)
    ranked = sorted(
        (Flow(tuple(row[0]), int(row[1]), int(row[2])) for row in rows if row[0] is not None),
        key=lambda f: (-f.page_views, -f.visits, [p.encode() for p in f.pages]),
    )
    return Flows(page_views=int(totals[1]), visits=int(totals[2]), flows=ranked)
