"""The benchmark's questions: each as a typed Query RPC request and as straightforward SQL over raw events.

The SQL is what a naive implementation (Umami's, say) runs on every request: count(DISTINCT
visitor_id) and counts over the raw events of the range, visit metrics from the processor's
per-visit rows (``analytics.sessions``), visit attributes by joining each event to its visit, with
no rollup of any kind. It follows the documented semantics (README, "Query API") so that both
answers can be compared number for number: events count when their time is in the range, visits
when they start in it, bots and events without a visitor id never.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import psycopg

from analytics.v1 import product_pb2, product_pb2_grpc, query_pb2, query_pb2_grpc

# The service's rounding and change rules: both sides of a comparison must round alike.
from query_service.metrics import change, rounded, value
from query_service.product import funnels
from query_service.reports.stats import Raw

ALL_METRICS = (
    "visitors",
    "visits",
    "pageviews",
    "views_per_visit",
    "bounce_rate",
    "visit_duration",
    "events",
)
SERIES_METRICS = ("visitors", "visits", "pageviews", "bounce_rate")
BREAKDOWN_METRICS = ("visitors", "pageviews")
TOP = 10
COUNTRY = "DE"
PAGE_PART = "/blog"

Metrics = tuple[float, ...]


@dataclass(frozen=True)
class Row:
    """One answer row in comparable form: dimensions, metric values, and a comparison when asked."""

    dimensions: tuple[str, ...]
    metrics: Metrics
    comparison: Metrics | None = None
    change: tuple[float | None, ...] | None = None


@dataclass(frozen=True)
class Window:
    """Local days first..last of a zone as UTC instants [start, end)."""

    first: date
    last: date
    start: datetime
    end: datetime

    @classmethod
    def of(cls, first: date, last: date, zone: ZoneInfo) -> Window:
        def start_of(day: date) -> datetime:
            return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)

        return cls(first, last, start_of(first), start_of(last + timedelta(days=1)))

    def previous(self, zone: ZoneInfo) -> Window:
        length = self.last - self.first + timedelta(days=1)
        return Window.of(self.first - length, self.first - timedelta(days=1), zone)

    def days(self) -> list[str]:
        return [
            (self.first + timedelta(days=n)).isoformat() for n in range((self.last - self.first).days + 1)
        ]


@dataclass(frozen=True)
class Context:
    """What every raw query needs: the connection, the site, its zone and the benchmark's "today"."""

    conn: psycopg.Connection[Any]
    site_id: str
    zone: ZoneInfo
    today: date

    def last_days(self, count: int) -> Window:
        return Window.of(self.today - timedelta(days=count - 1), self.today, self.zone)


# Asks a question over gRPC: (channel, site id, today, metadata, timeout) → its rows.
Ask = Callable[[grpc.Channel, str, date, Sequence[tuple[str, str]], float], list[Row]]


@dataclass(frozen=True)
class BenchQuery:
    """A question: a Query RPC request (``request``) or another RPC (``ask``), and its raw SQL."""

    name: str
    what: str
    target_ms: float | None
    request: Callable[[str, date], query_pb2.QueryRequest] | None
    raw: Callable[[Context], list[Row]]
    ask: Ask | None = None

    def answer(
        self,
        channel: grpc.Channel,
        site_id: str,
        today: date,
        metadata: Sequence[tuple[str, str]],
        timeout_s: float,
    ) -> list[Row]:
        if self.ask is not None:
            return self.ask(channel, site_id, today, metadata, timeout_s)
        assert self.request is not None
        stub = query_pb2_grpc.QueryServiceStub(channel)  # type: ignore[no-untyped-call]
        return answer_rows(
            stub.Query(self.request(site_id, today), metadata=tuple(metadata), timeout=timeout_s)
        )


# --- values as the API documents them --------------------------------------------------------------


def _values(counts: Raw, metrics: Sequence[str]) -> Metrics:
    return tuple(value(metric, counts, 0) for metric in metrics)


# --- the typed requests ----------------------------------------------------------------------------


def _request(
    site_id: str,
    today: date,
    metrics: Sequence[str],
    *,
    period: str = "",
    first: date | None = None,
    dimensions: Sequence[str] = (),
    condition: tuple[str, str, str] | None = None,
    time_labels: bool = False,
    comparison: str = "",
    limit: int = 0,
) -> query_pb2.QueryRequest:
    request = query_pb2.QueryRequest(site_id=site_id, metrics=list(metrics), dimensions=list(dimensions))
    if period:
        request.date_range.period = period
        request.date_range.relative_to = today.isoformat()
    else:
        assert first is not None
        request.date_range.start = first.isoformat()
        request.date_range.end = today.isoformat()
    if condition is not None:
        operator, dimension, value = condition
        request.filters.add().condition.CopyFrom(
            query_pb2.Condition(operator=operator, dimension=dimension, values=[value])
        )
    if time_labels:
        request.include.time_labels = True
    if comparison:
        request.include.comparison.mode = comparison
    if limit:
        request.pagination.limit = limit
    return request


def answer_rows(response: query_pb2.QueryResponse) -> list[Row]:
    rows = []
    for result in response.results:
        comparison = change = None
        if result.HasField("comparison"):
            comparison = tuple(result.comparison.metrics)
            change = tuple(
                None if value.WhichOneof("kind") == "null_value" else value.number_value
                for value in result.comparison.change
            )
        rows.append(Row(tuple(result.dimensions), tuple(result.metrics), comparison, change))
    return rows


# --- straightforward SQL ---------------------------------------------------------------------------

_EVENTS_IN_RANGE = (
    "e.site_id = %(site)s AND e.time >= %(start)s AND e.time < %(end)s AND NOT e.is_bot AND e.visitor_id <> 0"
)
_VISITS_IN_RANGE = "s.site_id = %(site)s AND s.started_at >= %(start)s AND s.started_at < %(end)s"
# The visit an event belongs to: the same visitor's session whose span holds the event's time.
_ITS_VISIT = (
    "JOIN analytics.sessions s ON s.site_id = e.site_id AND s.visitor_id = e.visitor_id"
    " AND e.time BETWEEN s.started_at AND s.ended_at"
)
_AGGREGATE = """
SELECT ev.visitors, ev.pageviews, ev.events, vi.visits, vi.bounces, vi.visit_pageviews, vi.duration
  FROM (SELECT count(DISTINCT e.visitor_id) AS visitors, count(*) FILTER (WHERE e.kind = 1) AS pageviews,
               count(*) AS events
          FROM analytics.events e {event_join}
         WHERE {events_in_range} {event_filter}) ev,
       (SELECT count(*) AS visits, count(*) FILTER (WHERE s.pageviews = 1 AND s.events = 1) AS bounces,
               coalesce(sum(s.pageviews), 0) AS visit_pageviews,
               coalesce(extract(epoch FROM sum(s.ended_at - s.started_at)), 0) AS duration
          FROM analytics.sessions s
         WHERE {visits_in_range} {visit_filter}) vi
"""


def _aggregate_counts(
    ctx: Context, window: Window, *, event_join: str = "", event_filter: str = "", visit_filter: str = ""
) -> Raw:
    statement = _AGGREGATE.format(
        event_join=event_join,
        events_in_range=_EVENTS_IN_RANGE,
        event_filter=event_filter,
        visits_in_range=_VISITS_IN_RANGE,
        visit_filter=visit_filter,
    )
    params = {
        "site": ctx.site_id,
        "start": window.start,
        "end": window.end,
        "country": COUNTRY,
        "part": PAGE_PART,
    }
    row = ctx.conn.execute(statement, params).fetchone()
    assert row is not None
    visitors, pageviews, events, visits, bounces, visit_pageviews, duration = row
    return Raw(
        int(visitors),
        int(pageviews),
        int(events),
        int(visits),
        int(bounces),
        int(visit_pageviews),
        Decimal(duration),
    )


def _aggregate(days: int) -> Callable[[Context], list[Row]]:
    def run(ctx: Context) -> list[Row]:
        return [Row((), _values(_aggregate_counts(ctx, ctx.last_days(days)), ALL_METRICS))]

    return run


def _filter_country(ctx: Context) -> list[Row]:
    counts = _aggregate_counts(
        ctx,
        ctx.last_days(30),
        event_join=_ITS_VISIT,
        event_filter="AND s.country = %(country)s",
        visit_filter="AND s.country = %(country)s",
    )
    return [Row((), _values(counts, ALL_METRICS))]


def _filter_page(ctx: Context) -> list[Row]:
    # A visit matches when one of its events in the range does (README: filters across events and visits).
    counts = _aggregate_counts(
        ctx,
        ctx.last_days(30),
        event_filter="AND strpos(e.path, %(part)s) > 0",
        visit_filter="""AND EXISTS (SELECT 1 FROM analytics.events e
                                    WHERE e.site_id = s.site_id AND e.visitor_id = s.visitor_id
                                      AND e.time BETWEEN s.started_at AND s.ended_at AND e.time < %(end)s
                                      AND NOT e.is_bot AND strpos(e.path, %(part)s) > 0)""",
    )
    return [Row((), _values(counts, ALL_METRICS))]


def _comparison(ctx: Context) -> list[Row]:
    current = ctx.last_days(30)
    now = _aggregate_counts(ctx, current)
    before = _aggregate_counts(ctx, current.previous(ctx.zone))
    new, old = _values(now, ALL_METRICS), _values(before, ALL_METRICS)
    changes = tuple(
        change(metric, o, n, old_visits=before.visits)
        for metric, o, n in zip(ALL_METRICS, old, new, strict=True)
    )
    return [Row((), new, old, changes)]


_SERIES_EVENTS = """
SELECT to_char(date_trunc('day', e.time AT TIME ZONE %(tz)s), 'YYYY-MM-DD') AS day,
       count(DISTINCT e.visitor_id), count(*) FILTER (WHERE e.kind = 1)
  FROM analytics.events e
 WHERE {events_in_range}
 GROUP BY 1
"""
_SERIES_VISITS = """
SELECT to_char(date_trunc('day', s.started_at AT TIME ZONE %(tz)s), 'YYYY-MM-DD') AS day,
       count(*), count(*) FILTER (WHERE s.pageviews = 1 AND s.events = 1)
  FROM analytics.sessions s
 WHERE {visits_in_range}
 GROUP BY 1
"""


def _timeseries(ctx: Context) -> list[Row]:
    window = ctx.last_days(30)
    params = {"site": ctx.site_id, "start": window.start, "end": window.end, "tz": ctx.zone.key}
    events = {
        day: (int(visitors), int(pageviews))
        for day, visitors, pageviews in ctx.conn.execute(
            _SERIES_EVENTS.format(events_in_range=_EVENTS_IN_RANGE),
            params,
        ).fetchall()
    }
    visits = {
        day: (int(count), int(bounces))
        for day, count, bounces in ctx.conn.execute(
            _SERIES_VISITS.format(visits_in_range=_VISITS_IN_RANGE),
            params,
        ).fetchall()
    }
    rows = []
    for day in window.days():  # every day of the range, empty ones as zeros
        visitors, pageviews = events.get(day, (0, 0))
        count, bounces = visits.get(day, (0, 0))
        counts = Raw(visitors=visitors, pageviews=pageviews, visits=count, bounces=bounces)
        rows.append(Row((day,), _values(counts, SERIES_METRICS)))
    return rows


_BREAKDOWN = """
SELECT {dimension} AS value, count(DISTINCT e.visitor_id) AS visitors, count(*) FILTER (WHERE e.kind = 1)
  FROM analytics.events e {join}
 WHERE {events_in_range}
 GROUP BY 1
 ORDER BY 2 DESC, {dimension} COLLATE "C"
 LIMIT {top}
"""


def _breakdown(dimension: str, join: str) -> Callable[[Context], list[Row]]:
    def run(ctx: Context) -> list[Row]:
        window = ctx.last_days(30)
        statement = _BREAKDOWN.format(
            dimension=dimension, join=join, events_in_range=_EVENTS_IN_RANGE, top=TOP
        )
        found = ctx.conn.execute(
            statement,
            {"site": ctx.site_id, "start": window.start, "end": window.end},
        ).fetchall()
        return [
            Row((str(value),), (float(visitors), float(pageviews))) for value, visitors, pageviews in found
        ]

    return run


# --- product questions: a funnel and retention cohorts --------------------------------------------

FUNNEL_STEPS = (
    product_pb2.FunnelStep(page_path="/pricing"),
    product_pb2.FunnelStep(event_name="add_to_cart"),
    product_pb2.FunnelStep(event_name="signup"),
    product_pb2.FunnelStep(event_name="purchase"),
)
FUNNEL_WINDOW_S = 7 * 86_400
RETENTION_WEEKS = 8


def _funnel_rows(steps: Sequence[funnels.StepResult]) -> list[Row]:
    return [
        Row(
            (r.name,),
            (
                float(r.entered),
                float(r.converted),
                r.conversion_rate,
                r.conversion_rate_from_start,
                float(r.drop_off),
                r.drop_off_rate,
                r.median_seconds_to_convert,
            ),
        )
        for r in steps
    ]


def _ask_funnel(
    channel: grpc.Channel, site_id: str, today: date, metadata: Sequence[tuple[str, str]], timeout_s: float
) -> list[Row]:
    stub = product_pb2_grpc.ProductServiceStub(channel)  # type: ignore[no-untyped-call]
    request = product_pb2.QueryFunnelRequest(
        site_id=site_id,
        steps=FUNNEL_STEPS,
        window_seconds=FUNNEL_WINDOW_S,
        date_range=query_pb2.DateRange(period="30d", relative_to=today.isoformat()),
    )
    report = stub.QueryFunnel(request, metadata=tuple(metadata), timeout=timeout_s).report
    return _funnel_rows(
        [
            funnels.StepResult(
                s.step,
                s.name,
                s.entered,
                s.converted,
                s.conversion_rate,
                s.conversion_rate_from_start,
                s.drop_off,
                s.drop_off_rate,
                s.median_seconds_to_convert,
            )
            for s in report.steps
        ]
    )


_FUNNEL = """
SELECT e.visitor_id,
       array_agg((extract(epoch FROM e.time) * 1000000)::bigint ORDER BY e.time, e.event_id),
       array_agg((CASE WHEN e.kind = 1 AND e.path = '/pricing' THEN 1 ELSE 0 END)
                 | (CASE WHEN e.name = 'add_to_cart' THEN 2 ELSE 0 END)
                 | (CASE WHEN e.name = 'signup' THEN 4 ELSE 0 END)
                 | (CASE WHEN e.name = 'purchase' THEN 8 ELSE 0 END) ORDER BY e.time, e.event_id)
FROM analytics.events e
WHERE {events}
  AND ((e.kind = 1 AND e.path = '/pricing') OR e.name IN ('add_to_cart', 'signup', 'purchase'))
GROUP BY e.visitor_id
"""


def _funnel(ctx: Context) -> list[Row]:
    """Every person's matching events in order, followed with the service's own sequence rules
    (query_service.product.funnels.chain and results: both sides must count alike)."""
    window = ctx.last_days(30)
    found = ctx.conn.execute(
        _FUNNEL.format(events=_EVENTS_IN_RANGE),
        {"site": ctx.site_id, "start": window.start, "end": window.end},
    ).fetchall()
    reached = [0] * len(FUNNEL_STEPS)
    waits: list[list[int]] = [[] for _ in FUNNEL_STEPS]
    for _, times, masks in found:
        chain = funnels.chain(times, masks, len(FUNNEL_STEPS), FUNNEL_WINDOW_S * 1_000_000)
        for depth, index in enumerate(chain):
            reached[depth] += 1
            if depth:
                waits[depth].append(times[index] - times[chain[depth - 1]])
    labels = [s.event_name or f"Visit {s.page_path}" for s in FUNNEL_STEPS]
    return _funnel_rows(funnels.results(labels, reached, waits))


def _ask_retention(
    channel: grpc.Channel, site_id: str, today: date, metadata: Sequence[tuple[str, str]], timeout_s: float
) -> list[Row]:
    stub = product_pb2_grpc.ProductServiceStub(channel)  # type: ignore[no-untyped-call]
    first = today - timedelta(days=7 * RETENTION_WEEKS - 1)
    request = product_pb2.QueryRetentionRequest(
        site_id=site_id,
        date_range=query_pb2.DateRange(start=first.isoformat(), end=today.isoformat()),
        period="week",
        periods=RETENTION_WEEKS,
    )
    report = stub.QueryRetention(request, metadata=tuple(metadata), timeout=timeout_s).report
    return [
        Row(
            (c.date,),
            (float(c.size), *(float(p.returned) for p in c.periods), *(p.percentage for p in c.periods)),
        )
        for c in report.cohorts
    ]


_RETENTION = """
WITH ev AS (
    SELECT e.visitor_id, e.time FROM analytics.events e WHERE {events}
), firsts AS (
    SELECT visitor_id, min(time) AS first_at FROM ev WHERE time < %(cohort_end)s GROUP BY visitor_id
)
SELECT date_trunc('week', f.first_at AT TIME ZONE %(tz)s)::date AS cohort,
       date_trunc('week', ev.time AT TIME ZONE %(tz)s)::date AS week,
       count(DISTINCT ev.visitor_id)
FROM firsts f JOIN ev ON ev.visitor_id = f.visitor_id AND ev.time >= f.first_at
GROUP BY 1, 2
UNION ALL
SELECT date_trunc('week', first_at AT TIME ZONE %(tz)s)::date, NULL, count(*) FROM firsts GROUP BY 1
"""


def _retention(ctx: Context) -> list[Row]:
    """Weekly cohorts of the last 8 weeks by each person's first event, returns on any event
    (as query_service.product.retention documents): plain SQL over the raw events."""
    window = ctx.last_days(7 * RETENTION_WEEKS)
    first_week = window.first - timedelta(days=window.first.weekday())
    last_week = window.last - timedelta(days=window.last.weekday())
    follow = Window.of(
        window.first, last_week + timedelta(weeks=RETENTION_WEEKS + 1) - timedelta(days=1), ctx.zone
    )
    found = ctx.conn.execute(
        _RETENTION.format(events=_EVENTS_IN_RANGE),
        {
            "site": ctx.site_id,
            "start": window.start,
            "end": max(follow.end, window.end),
            "cohort_end": window.end,
            "tz": str(ctx.zone),
        },
    ).fetchall()
    sizes = {cohort: int(count) for cohort, week, count in found if week is None}
    returned = {(cohort, week): int(count) for cohort, week, count in found if week is not None}
    rows: list[Row] = []
    cohort = first_week
    while cohort <= last_week:
        size = sizes.get(cohort, 0)
        counts = [returned.get((cohort, cohort + timedelta(weeks=n)), 0) for n in range(RETENTION_WEEKS + 1)]
        shares = [rounded(Fraction(100 * c, size), 2) if size else 0.0 for c in counts]
        rows.append(Row((cohort.isoformat(),), (float(size), *map(float, counts), *shares)))
        cohort += timedelta(weeks=1)
    return rows


# --- the list --------------------------------------------------------------------------------------

QUERIES: tuple[BenchQuery, ...] = (
    BenchQuery(
        "aggregate_1d",
        "all metrics, the last day",
        None,
        lambda site, today: _request(site, today, ALL_METRICS, period="day"),
        _aggregate(1),
    ),
    BenchQuery(
        "aggregate_30d",
        "all metrics, 30 days",
        50.0,
        lambda site, today: _request(site, today, ALL_METRICS, period="30d"),
        _aggregate(30),
    ),
    BenchQuery(
        "aggregate_90d",
        "all metrics, 90 days",
        150.0,
        lambda site, today: _request(site, today, ALL_METRICS, first=today - timedelta(days=89)),
        _aggregate(90),
    ),
    BenchQuery(
        "timeseries_30d",
        f"{', '.join(SERIES_METRICS)} per day, 30 days, empty days filled",
        50.0,
        lambda site, today: _request(
            site, today, SERIES_METRICS, period="30d", dimensions=["time:day"], time_labels=True
        ),
        _timeseries,
    ),
    BenchQuery(
        "breakdown_page_30d",
        "top 10 event:page by visitors (+ pageviews), 30 days",
        100.0,
        lambda site, today: _request(
            site, today, BREAKDOWN_METRICS, period="30d", dimensions=["event:page"], limit=TOP
        ),
        _breakdown("e.path", ""),
    ),
    BenchQuery(
        "breakdown_source_30d",
        "top 10 visit:source by visitors (+ pageviews), 30 days",
        100.0,
        lambda site, today: _request(
            site, today, BREAKDOWN_METRICS, period="30d", dimensions=["visit:source"], limit=TOP
        ),
        _breakdown("CASE WHEN s.utm_source <> '' THEN s.utm_source ELSE s.referrer_host END", _ITS_VISIT),
    ),
    BenchQuery(
        "breakdown_country_30d",
        "top 10 visit:country by visitors (+ pageviews), 30 days",
        100.0,
        lambda site, today: _request(
            site, today, BREAKDOWN_METRICS, period="30d", dimensions=["visit:country"], limit=TOP
        ),
        _breakdown("s.country", _ITS_VISIT),
    ),
    BenchQuery(
        "filter_country_30d",
        f"all metrics, 30 days, visit:country is {COUNTRY}",
        500.0,
        lambda site, today: _request(
            site, today, ALL_METRICS, period="30d", condition=("is", "visit:country", COUNTRY)
        ),
        _filter_country,
    ),
    BenchQuery(
        "filter_page_contains_30d",
        f"all metrics, 30 days, event:page contains {PAGE_PART}",
        500.0,
        lambda site, today: _request(
            site, today, ALL_METRICS, period="30d", condition=("contains", "event:page", PAGE_PART)
        ),
        _filter_page,
    ),
    BenchQuery(
        "comparison_30d",
        "all metrics, 30 days, with the previous 30 days",
        None,
        lambda site, today: _request(site, today, ALL_METRICS, period="30d", comparison="previous_period"),
        _comparison,
    ),
    BenchQuery(
        "funnel_4_steps_30d",
        "funnel /pricing → add_to_cart → signup → purchase, 7-day window, 30 days",
        500.0,
        None,
        _funnel,
        ask=_ask_funnel,
    ),
    BenchQuery(
        "retention_8_weeks",
        "weekly cohorts of the last 8 weeks by first event, returns on any event for 8 weeks",
        1000.0,
        None,
        _retention,
        ask=_ask_retention,
    ),
)
NAMES = tuple(q.name for q in QUERIES)


def differences(rpc: list[Row], raw: list[Row]) -> str | None:
    """None when both answers agree, else what differs first (values compared to 1e-9)."""
    if len(rpc) != len(raw):
        return f"{len(rpc)} rows from the Query RPC, {len(raw)} from raw SQL"
    for index, (a, b) in enumerate(zip(rpc, raw, strict=True)):
        if a.dimensions != b.dimensions:
            return f"row {index}: dimensions {a.dimensions} (Query) vs {b.dimensions} (raw SQL)"
        for part in ("metrics", "comparison", "change"):
            x, y = getattr(a, part), getattr(b, part)
            if (x is None) != (y is None) or (
                x is not None
                and y is not None
                and (
                    len(x) != len(y)
                    or any(
                        (u is None) != (v is None) or (u is not None and v is not None and abs(u - v) > 1e-9)
                        for u, v in zip(x, y, strict=True)
                    )
                )
            ):
                return f"row {index} {a.dimensions}: {part} {x} (Query) vs {y} (raw SQL)"
    return None
