"""Metrics over a range, grouped by dimensions and filtered: the report behind Query.

It reads raw events and sessions (relations.EVENTS, relations.SESSIONS) and returns exact
aggregates; query_service.metrics turns them into the answer's values. Semantics (README, "Query
API"): events are counted in the range, visits when they start in it; a visit matches an event
filter when one of its events in the range does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg import AsyncConnection, sql

from analytics_grpc.errors import FieldViolation, ServiceError
from query_service import relations
from query_service.filters import Params, Scope, compile_filter, needs_head, uses
from query_service.reports import grouping, rollups
from query_service.spec import (
    CONVERSION_RATE,
    EVENT_METRICS,
    GOAL,
    PERCENTAGE,
    VISIT_METRICS,
    StatsQuery,
    TimeRange,
    is_event_dimension,
    is_time_dimension,
    is_visit_dimension,
)

_EVENT_COLUMNS = ("visitors", "pageviews", "events")
_VISIT_COLUMNS = ("visits", "bounces", "visit_pageviews", "duration")


@dataclass(frozen=True, slots=True)
class Raw:
    """Exact aggregates of one group; every metric is computed from these."""

    visitors: int = 0
    pageviews: int = 0
    events: int = 0
    visits: int = 0
    bounces: int = 0
    visit_pageviews: int = 0
    duration: Decimal = Decimal(0)  # seconds, summed over the visits


@dataclass(frozen=True, slots=True)
class Group:
    dimensions: tuple[str, ...]
    raw: Raw


@dataclass(frozen=True, slots=True)
class Groups:
    groups: list[Group]
    total_rows: int


@dataclass
class _Plan:
    """What a query needs: which sides (events, visits) and joins."""

    event_side: bool
    visit_side: bool
    event_visits: bool  # visits counted from events (an event dimension is present)
    join_sessions: bool
    join_head: bool
    filter_on_events: bool  # the filter tests an event dimension
    params: Params = field(default_factory=Params)


def _plan(query: StatsQuery) -> _Plan:
    metrics = set(query.metrics)
    filtered = uses(query.filter)
    event_dims = any(is_event_dimension(d) for d in query.dimensions)
    visit_dims = any(is_visit_dimension(d) for d in query.dimensions) or any(
        is_visit_dimension(d) for d in filtered
    )
    wants_events = bool(metrics & {*EVENT_METRICS, PERCENTAGE, CONVERSION_RATE})
    wants_visits = bool(metrics & set(VISIT_METRICS))
    event_visits = event_dims and wants_visits
    return _Plan(
        event_side=wants_events or event_visits,
        visit_side=wants_visits and not event_dims,
        event_visits=event_visits,
        join_sessions=visit_dims or event_visits,
        join_head=needs_head([*query.dimensions, *filtered]),
        filter_on_events=any(is_event_dimension(d) for d in filtered),
    )


def _dimension(
    name: str, scope: Scope, time_column: sql.Composable, query: StatsQuery, plan: _Plan
) -> sql.Composable:
    if is_time_dimension(name):
        assert query.bucket is not None
        return grouping.bucket_label(time_column, query.bucket, sql.Placeholder("tz"))
    return scope.expression(name, plan.params)


def _head_join(session: str = "s", head: str = "h") -> sql.Composable:
    return sql.SQL(
        " JOIN {events} {h} ON {h}.site_id = {s}.site_id AND {h}.event_id = {s}.session_id"
        " AND {h}.time = {s}.started_at"
    ).format(events=relations.EVENTS, h=sql.Identifier(head), s=sql.Identifier(session))


def _events_from(plan: _Plan, query: StatsQuery, *, goal_join: bool = False) -> tuple[sql.Composable, Scope]:
    """FROM … WHERE of the counted events (and their visits when needed); with ``goal_join``, one
    row per event and goal it completes (alias ``g``)."""
    parts: list[sql.Composable] = [sql.SQL("FROM {} e").format(relations.EVENTS)]
    if plan.join_sessions or plan.join_head:
        parts.append(
            sql.SQL(
                " JOIN {} s ON s.site_id = e.site_id AND s.visitor_id = e.visitor_id"
                " AND s.started_at <= e.time AND s.ended_at >= e.time AND s.started_at >= %(session_floor)s"
            ).format(relations.SESSIONS)
        )
    if plan.join_head:
        parts.append(_head_join())
    if goal_join:
        goals = query.goals
        parts.append(
            sql.SQL(
                " JOIN unnest({}::text[], {}::text[], {}::text[]) AS g(goal, event_name, page_regex)"
                " ON (g.event_name <> '' AND e.kind = 2 AND e.name = g.event_name)"
                " OR (g.page_regex <> '' AND e.kind = 1 AND e.path ~ g.page_regex)"
            ).format(
                plan.params.add([goal.name for goal in goals]),
                plan.params.add([goal.event_name for goal in goals]),
                plan.params.add([goal.page_regex for goal in goals]),
            )
        )
    scope = Scope(
        event="e",
        session="s" if plan.join_sessions or plan.join_head else None,
        head="h" if plan.join_head else None,
        goal="g" if goal_join else None,
        goals=query.goals,
    )
    parts.append(
        sql.SQL(
            " WHERE e.site_id = %(site)s AND e.time >= %(start)s AND e.time < %(end)s"
            " AND NOT e.is_bot AND e.visitor_id <> 0"
        )
    )
    if query.filter is not None:
        parts.append(sql.SQL(" AND {}").format(compile_filter(query.filter, scope, plan.params)))
    return sql.Composed(parts), scope


def an_event_passes(query: StatsQuery, head: str | None, params: Params) -> sql.Composed:
    """`` AND EXISTS …``: the visit (alias s) has an event in the range that passes the query's
    filter (head: the alias of its first event, when joined)."""
    assert query.filter is not None
    inner = Scope(event="e", session="s", head=head, goals=query.goals)
    return sql.SQL(
        " AND EXISTS (SELECT 1 FROM {} e"
        " WHERE e.site_id = s.site_id AND e.visitor_id = s.visitor_id"
        " AND e.time >= s.started_at AND e.time <= s.ended_at AND e.time < %(end)s"
        " AND NOT e.is_bot AND {})"
    ).format(relations.EVENTS, compile_filter(query.filter, inner, params))


def _visits_from(plan: _Plan, query: StatsQuery) -> tuple[sql.Composable, Scope]:
    """FROM … WHERE of the counted visits: starting in the range and matching the filter."""
    parts: list[sql.Composable] = [sql.SQL("FROM {} s").format(relations.SESSIONS)]
    if plan.join_head:
        parts.append(_head_join())
    scope = Scope(session="s", head="h" if plan.join_head else None, goals=query.goals)
    parts.append(
        sql.SQL(" WHERE s.site_id = %(site)s AND s.started_at >= %(start)s AND s.started_at < %(end)s")
    )
    if query.filter is not None:
        if plan.filter_on_events:
            parts.append(an_event_passes(query, scope.head, plan.params))
        else:
            parts.append(sql.SQL(" AND {}").format(compile_filter(query.filter, scope, plan.params)))
    return sql.Composed(parts), scope


def _grouped_sql(
    query: StatsQuery, plan: _Plan, labels: list[str] | None, paginate: bool, *, count_only: bool = False
) -> sql.Composed:
    count = len(query.dimensions)
    names = grouping.dimension_names(count)
    ctes: list[sql.Composable] = []
    if plan.event_side:
        source, scope = _events_from(plan, query, goal_join=GOAL in query.dimensions)
        dims = [_dimension(d, scope, sql.SQL("e.time"), query, plan) for d in query.dimensions]
        visits = (
            sql.SQL("count(DISTINCT (s.visitor_id, s.started_at)) FILTER (WHERE s.started_at >= %(start)s)")
            if plan.event_visits
            else sql.SQL("0::bigint")
        )
        select: list[sql.Composable] = [
            sql.SQL("{} AS {}").format(d, n) for d, n in zip(dims, names, strict=True)
        ]
        select += [
            sql.SQL("count(DISTINCT e.visitor_id) AS visitors"),
            sql.SQL("count(*) FILTER (WHERE e.kind = {}) AS pageviews").format(
                sql.Literal(relations.PAGEVIEW_KIND)
            ),
            sql.SQL("count(*) AS events"),
            sql.SQL("{} AS visits").format(visits),
        ]
        group = sql.SQL(" GROUP BY {}").format(sql.SQL(", ").join(names)) if count else sql.SQL("")
        ctes.append(sql.SQL("ev AS (SELECT {} {}{})").format(sql.SQL(", ").join(select), source, group))
    if plan.visit_side:
        source, scope = _visits_from(plan, query)
        dims = [_dimension(d, scope, sql.SQL("s.started_at"), query, plan) for d in query.dimensions]
        select = [sql.SQL("{} AS {}").format(d, n) for d, n in zip(dims, names, strict=True)]
        select += [
            sql.SQL("count(*) AS visits"),
            sql.SQL("count(*) FILTER (WHERE s.is_bounce) AS bounces"),
            sql.SQL("coalesce(sum(s.pageviews), 0) AS visit_pageviews"),
            sql.SQL("coalesce(extract(epoch FROM sum(s.ended_at - s.started_at)), 0) AS duration"),
        ]
        group = sql.SQL(" GROUP BY {}").format(sql.SQL(", ").join(names)) if count else sql.SQL("")
        ctes.append(sql.SQL("ss AS (SELECT {} {}{})").format(sql.SQL(", ").join(select), source, group))

    columns: list[sql.Composable] = list(names)
    for column in grouping.RAW_COLUMNS:
        if plan.event_side and (column in _EVENT_COLUMNS or (column == "visits" and not plan.visit_side)):
            columns.append(sql.SQL("coalesce(ev.{c}, 0) AS {c}").format(c=sql.Identifier(column)))
        elif plan.visit_side and column in _VISIT_COLUMNS:
            columns.append(sql.SQL("coalesce(ss.{c}, 0) AS {c}").format(c=sql.Identifier(column)))
        else:
            columns.append(sql.SQL("0 AS {}").format(sql.Identifier(column)))
    if plan.event_side and plan.visit_side:
        join = (
            sql.SQL("ev FULL JOIN ss USING ({})").format(sql.SQL(", ").join(names))
            if count
            else sql.SQL("ev CROSS JOIN ss")
        )
    else:
        join = sql.SQL("ev" if plan.event_side else "ss")
    ctes.append(sql.SQL("grouped AS (SELECT {} FROM {})").format(sql.SQL(", ").join(columns), join))
    return grouping.finish(query, ctes, labels, paginate, count_only=count_only)


def _base_params(query: StatsQuery, span: TimeRange, max_span: timedelta) -> dict[str, object]:
    return {
        "site": query.site_id,
        "start": span.start,
        "end": span.end,
        "session_floor": span.start - max_span,
        "tz": query.timezone,
        "limit": query.limit,
        "offset": query.offset,
    }


async def grouped(
    conn: AsyncConnection[Any],
    query: StatsQuery,
    span: TimeRange,
    *,
    max_span: timedelta,
    labels: list[str] | None = None,
    paginate: bool = True,
) -> Groups:
    """The groups of the query over ``span`` (its range or a comparison's), sorted and paged:
    from the rollups when they can answer it exactly (reports.rollups), else from raw rows."""
    params = {**_base_params(query, span, max_span)}
    if labels is not None:
        params["labels"] = labels
    plan = _plan(query)
    from_rollups = rollups.statement(query, span, labels, paginate)
    if from_rollups is not None:
        statement, extra = from_rollups
        params.update(extra)
    else:
        statement = _grouped_sql(query, plan, labels, paginate)
        params.update(plan.params.values)
    cur = await conn.execute(statement, params)
    rows = await cur.fetchall()
    count = len(query.dimensions)
    groups = [Group(tuple(str(value) for value in row[:count]), _raw(row[count:])) for row in rows]
    if rows:
        return Groups(groups, int(rows[0][-1]))
    if not paginate or query.offset == 0:
        return Groups(groups, 0)
    # The offset is past the last row: count the rows on their own.
    if from_rollups is not None:
        counted = rollups.statement(query, span, labels, paginate, count_only=True)
        assert counted is not None
        statement = counted[0]
    else:
        plan = _plan(query)  # compiling the filter again names its parameters afresh
        statement = _grouped_sql(query, plan, labels, paginate, count_only=True)
        params.update(plan.params.values)
    params["labels"] = labels
    cur = await conn.execute(statement, params)
    total = await cur.fetchone()
    return Groups(groups, int(total[0]) if total else 0)


def _raw(values: Any) -> Raw:
    visitors, pageviews, events, visits, bounces, visit_pageviews, duration = values[:7]
    return Raw(
        int(visitors),
        int(pageviews),
        int(events),
        int(visits),
        int(bounces),
        int(visit_pageviews),
        Decimal(duration),
    )


async def total_visitors(
    conn: AsyncConnection[Any], query: StatsQuery, span: TimeRange, *, max_span: timedelta
) -> int:
    """Distinct visitors of all matching events in the range: what percentage divides by."""
    plan = _plan(query)
    source, _ = _events_from(plan, query)
    statement = sql.SQL("SELECT count(DISTINCT e.visitor_id) {}").format(source)
    cur = await conn.execute(statement, {**_base_params(query, span, max_span), **plan.params.values})
    row = await cur.fetchone()
    return int(row[0]) if row else 0


def counted_events(
    query: StatsQuery, max_span: timedelta
) -> tuple[sql.Composable, Scope, Params, dict[str, object]]:
    """FROM … WHERE of the events the query counts (its filter applied, their visits joined when
    its dimensions are visit attributes), the aliases, and the parameters: the selection other
    reports (funnels, retention) build on."""
    plan = _plan(query)
    source, scope = _events_from(plan, query)
    return source, scope, plan.params, _base_params(query, query.range, max_span)


async def max_session_span(conn: AsyncConnection[Any]) -> timedelta:
    """The longest stored visit: a visit holding an event at t started at or after t minus this."""
    cur = await conn.execute(sql.SQL("SELECT max_span FROM {}").format(relations.SESSION_BOUNDS))
    row = await cur.fetchone()
    return row[0] if row and row[0] is not None else timedelta(0)


async def first_event_day(conn: AsyncConnection[Any], site_id: str, zone: ZoneInfo) -> date | None:
    """The local day of the site's first counted event, for the period "all"."""
    cur = await conn.execute(
        sql.SQL("SELECT min(time) FROM {} WHERE site_id = %s AND NOT is_bot AND visitor_id <> 0").format(
            relations.EVENTS
        ),
        (site_id,),
    )
    row = await cur.fetchone()
    first: datetime | None = row[0] if row else None
    return first.astimezone(zone).date() if first is not None else None


async def refuse_invalid_patterns(conn: AsyncConnection[Any], patterns: list[tuple[str, str]]) -> None:
    """INVALID_ARGUMENT naming every (field, pattern) PostgreSQL cannot compile."""
    bad = await invalid_patterns(conn, [pattern for _, pattern in patterns])
    if bad:
        raise ServiceError.invalid(
            [
                FieldViolation(patterns[i][0], f"is not a valid regular expression ({reason})")
                for i, reason in bad
            ]
        )


async def invalid_patterns(conn: AsyncConnection[Any], patterns: list[str]) -> list[tuple[int, str]]:
    """The patterns PostgreSQL cannot compile as regular expressions, with its reason."""
    bad: list[tuple[int, str]] = []
    for index, pattern in enumerate(patterns):
        try:
            async with conn.transaction():
                await conn.execute("SELECT '' ~ %s", (pattern,))
        except psycopg.errors.DataError as error:  # InvalidRegularExpression and its kin
            bad.append((index, str(error).splitlines()[0][:200]))
    return bad
