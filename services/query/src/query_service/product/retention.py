"""The retention report: cohorts of people by the local period (day, week, month) of their first
cohort event in the range, and how many of each return in each later period.

People are visitor ids (see funnels). The SQL reads the events the stats query counts (its
filter) from the range's start to the end of the last cohort's last reported period, once, into one
row per person and local period; each person's first cohort event inside the range places them,
and a period counts them when their last return event in it is not before that first event.
Periods are read in the site's time zone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta
from fractions import Fraction
from typing import Any, Literal
from zoneinfo import ZoneInfo

from psycopg import AsyncConnection, sql

from query_service import timerange
from query_service.metrics import rounded
from query_service.reports import stats
from query_service.spec import StatsQuery, TimeRange

Period = Literal["day", "week", "month"]
PERIODS: tuple[Period, ...] = ("day", "week", "month")
MAX_PERIODS = 90


@dataclass(frozen=True, slots=True)
class CohortPeriod:
    period: int
    date: str
    returned: int
    percentage: float


@dataclass(frozen=True, slots=True)
class Cohort:
    date: str
    size: int
    periods: list[CohortPeriod]


def period_start(day: date, period: Period) -> date:
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return day


def shifted(start: date, period: Period, count: int) -> date:
    """The start of the period ``count`` periods after the one starting at ``start``."""
    if period == "day":
        return start + timedelta(days=count)
    if period == "week":
        return start + timedelta(weeks=count)
    month = start.month - 1 + count
    return date(start.year + month // 12, month % 12 + 1, 1)


def cohort_days(span: TimeRange, zone: ZoneInfo, period: Period) -> list[date]:
    """The starts of the periods the range's local days fall in."""
    first = timerange.local(span.start, zone).date()
    last = timerange.local(span.end - timedelta(microseconds=1), zone).date()
    found: list[date] = []
    day = period_start(first, period)
    while day <= last:
        found.append(day)
        day = shifted(day, period, 1)
    return found


async def retention(
    conn: AsyncConnection[Any],
    query: StatsQuery,
    *,
    period: Period,
    periods: int,
    cohort_event: str,
    return_event: str,
) -> list[Cohort]:
    zone = ZoneInfo(query.timezone)
    starts = cohort_days(query.range, zone, period)
    returns_end = timerange.day_start(shifted(starts[-1], period, periods + 1), zone)
    extended = replace(query, range=TimeRange(query.range.start, max(returns_end, query.range.end)))
    max_span = await stats.max_session_span(conn)
    source, _, params, values = stats.counted_events(extended, max_span)

    # Periods are numbered 1, 2, … from the first cohort's: width_bucket finds an event's among
    # their UTC starts (a binary search, cheaper than converting every event to local time).
    firsts = [shifted(starts[0], period, n) for n in range(len(starts) + periods + 1)]
    bounds = [timerange.day_start(day, zone) for day in firsts]
    cohort_test = sql.SQL(" AND e.name = %(cohort_event)s") if cohort_event else sql.SQL("")
    return_test = sql.SQL(" FILTER (WHERE e.name = %(return_event)s)") if return_event else sql.SQL("")
    # One row per person and period: their first cohort event in it (inside the range) and their
    # last return event in it. A person returned in a period exactly when that last return is not
    # before their cohort event, so no event is joined to another.
    statement = sql.SQL(
        "SELECT cohort, p, count(*) FILTER (WHERE last_at >= cohort_at), count(*) FILTER (WHERE p = cohort)"
        " FROM (SELECT p, last_at, min(first_at) OVER person AS cohort_at,"
        " min(p) FILTER (WHERE first_at IS NOT NULL) OVER person AS cohort"
        " FROM (SELECT e.visitor_id, width_bucket(e.time, %(bounds)s::timestamptz[]) AS p,"
        " min(e.time) FILTER (WHERE e.time < %(cohort_end)s{cohort_test}) AS first_at,"
        " max(e.time){return_test} AS last_at {source} GROUP BY 1, 2) vp"
        " WINDOW person AS (PARTITION BY visitor_id)) people"
        " WHERE cohort IS NOT NULL GROUP BY cohort, p"
    ).format(cohort_test=cohort_test, return_test=return_test, source=source)
    cur = await conn.execute(
        statement,
        {
            **values,
            **params.values,
            "bounds": bounds,
            "cohort_end": query.range.end,
            "cohort_event": cohort_event,
            "return_event": return_event,
        },
    )
    sizes: dict[int, int] = {}
    returned: dict[tuple[int, int], int] = {}
    for cohort, at, count, members in await cur.fetchall():
        returned[cohort, at - cohort] = int(count)
        if at == cohort:
            sizes[cohort] = int(members)
    answer: list[Cohort] = []
    for number, start in enumerate(starts, start=1):
        size = sizes.get(number, 0)
        rows = []
        for index in range(periods + 1):
            day = shifted(start, period, index)
            count = returned.get((number, index), 0)
            rows.append(
                CohortPeriod(
                    index, day.isoformat(), count, rounded(Fraction(100 * count, size), 2) if size else 0.0
                )
            )
        answer.append(Cohort(start.isoformat(), size, rows))
    return answer
