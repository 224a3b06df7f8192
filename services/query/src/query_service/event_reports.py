"""Seed 002's event routes, asked of the Query report: counts of one event per interval, and
totals per event name. Unique users are the report's visitors."""

from __future__ import annotations

from analytics.v1 import query_pb2
from analytics_grpc.errors import FieldViolation, ServiceError
from query_service.answer import Answer
from query_service.request import shown
from query_service.spec import StatsQuery

INTERVALS = {"hourly": "time:hour", "daily": "time:day", "weekly": "time:week", "monthly": "time:month"}
PAGEVIEW_NAMES = ("page_view", "pageview")
STORED_PAGEVIEW = "pageview"
MAX_EVENT = 100
METRICS = ["events", "visitors"]
# Query's field names → these routes' parameters.
_FIELDS = {"date_range": "start_date", "date_range.period": "start_date", "include.time_labels": "interval"}


def seed_range(start: str, end: str) -> query_pb2.DateRange:
    """startDate and endDate of seed 002's routes: both or neither (the last 30 days)."""
    if not start and not end:
        return query_pb2.DateRange(period="30d")
    if not start:
        raise ServiceError.field("start_date", "is required when end_date is given")
    if not end:
        raise ServiceError.field("end_date", "is required when start_date is given")
    return query_pb2.DateRange(start=start, end=end)


def metrics_query(request: query_pb2.GetEventMetricsRequest, site_id: str) -> query_pb2.QueryRequest:
    event = request.event.strip()
    if not event:
        raise ServiceError.field("event", "is required")
    if len(event) > MAX_EVENT:
        raise ServiceError.field("event", f"must be at most {MAX_EVENT} characters")
    interval = request.interval or "daily"
    if interval not in INTERVALS:
        raise ServiceError.field("interval", f"must be one of {', '.join(INTERVALS)}, got {shown(interval)}")
    name = STORED_PAGEVIEW if event.lower() in PAGEVIEW_NAMES else event
    return query_pb2.QueryRequest(
        site_id=site_id,
        date_range=seed_range(request.start_date, request.end_date),
        metrics=METRICS,
        dimensions=[INTERVALS[interval]],
        filters=[
            query_pb2.Filter(
                condition=query_pb2.Condition(operator="is", dimension="event:name", values=[name])
            )
        ],
        include=query_pb2.QueryInclude(time_labels=True),
    )


def summary_queries(
    request: query_pb2.GetEventsSummaryRequest, site_id: str
) -> tuple[query_pb2.QueryRequest, query_pb2.QueryRequest]:
    """The totals and the per-name lines, to run in one snapshot."""
    date_range = seed_range(request.start_date, request.end_date)
    totals = query_pb2.QueryRequest(site_id=site_id, date_range=date_range, metrics=METRICS)
    names = query_pb2.QueryRequest(
        site_id=site_id,
        date_range=date_range,
        metrics=METRICS,
        dimensions=["event:name"],
        include={"total_rows": True},
    )
    return totals, names


def translate(error: ServiceError, more: dict[str, str] | None = None) -> ServiceError:
    """The refusal with the fields named as these routes' parameters (``more``: a route's own)."""
    if not error.violations:
        return error
    names = {**_FIELDS, **(more or {})}
    return ServiceError.invalid(
        [FieldViolation(names.get(v.field, v.field), v.description) for v in error.violations]
    )


def rfc3339_range(query: StatsQuery) -> tuple[str, str]:
    """The query's resolved range as RFC 3339 UTC instants (start inclusive, end exclusive)."""
    start, end = (at.isoformat().replace("+00:00", "Z") for at in (query.range.start, query.range.end))
    return start, end


def metrics_response(
    request: query_pb2.GetEventMetricsRequest, answer: Answer, query: StatsQuery
) -> query_pb2.GetEventMetricsResponse:
    if answer.total_rows > len(answer.rows):
        raise ServiceError.field("interval", f"gives more than {len(answer.rows)} buckets over this period")
    start, end = rfc3339_range(query)
    return query_pb2.GetEventMetricsResponse(
        site_id=query.site_id,
        event=request.event.strip(),
        interval=request.interval or "daily",
        timezone=query.timezone,
        start=start,
        end=end,
        data=[
            query_pb2.EventBucket(
                time=row.dimensions[0], count=int(row.metrics[0]), unique_users=int(row.metrics[1])
            )
            for row in answer.rows
        ],
    )


def summary_response(totals: Answer, names: Answer, query: StatsQuery) -> query_pb2.GetEventsSummaryResponse:
    if names.total_rows > len(names.rows):
        raise ServiceError.field("start_date", f"the period has more than {len(names.rows)} event names")
    start, end = rfc3339_range(query)
    total_events, unique_users = (int(v) for v in totals.rows[0].metrics)
    return query_pb2.GetEventsSummaryResponse(
        site_id=query.site_id,
        timezone=query.timezone,
        start=start,
        end=end,
        total_events=total_events,
        unique_users=unique_users,
        events=[
            query_pb2.EventCount(
                event=row.dimensions[0], count=int(row.metrics[0]), unique_users=int(row.metrics[1])
            )
            for row in names.rows
        ],
    )
