"""QueryService and PlausibleQueryService servicers: decode, authorize, run a report, encode."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from google.protobuf import struct_pb2
from psycopg import AsyncConnection

from analytics.v1 import auth_pb2, query_pb2, query_pb2_grpc
from analytics_grpc.auth_client import AuthClient
from analytics_grpc.errors import FieldViolation, ServiceError, unauthenticated
from analytics_grpc.metadata import Context, credential
from analytics_observability.metrics import observe_report
from query_service import event_reports, plausible
from query_service.answer import Answer, run
from query_service.product.definitions import site_goals
from query_service.reports import stats
from query_service.reports.daily_stats import daily_stats
from query_service.request import authorize, authorize_site, mentions_goals, parse_query, parse_site_uuid
from query_service.snapshot import Snapshots
from query_service.spec import StatsQuery, is_time_dimension

DEFAULT_TOP_PATHS = 10
MAX_TOP_PATHS = 1000


def parse_day(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if len(value) == 10 else None
    except ValueError:
        return None


def _value(number: float | None) -> struct_pb2.Value:
    return (
        struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
        if number is None
        else struct_pb2.Value(number_value=number)
    )


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def encode(answer: Answer, query: StatsQuery) -> query_pb2.QueryResponse:
    response = query_pb2.QueryResponse(
        meta=query_pb2.QueryMeta(
            timezone=query.timezone,
            start=_rfc3339(answer.range.start),
            end=_rfc3339(answer.range.end),
            time_labels=answer.time_labels or [],
            total_rows=answer.total_rows if query.total_rows else 0,
            time_bucket=query.bucket or "",
        )
    )
    if answer.comparison_range is not None:
        response.meta.comparison_start = _rfc3339(answer.comparison_range.start)
        response.meta.comparison_end = _rfc3339(answer.comparison_range.end)
    for row in answer.rows:
        item = response.results.add(dimensions=row.dimensions, metrics=row.metrics)
        if row.comparison is not None:
            item.comparison.dimensions.extend(row.comparison.dimensions)
            item.comparison.metrics.extend(row.comparison.metrics)
            item.comparison.change.extend(_value(c) for c in row.comparison.change)
    return response


def report_name(query: StatsQuery) -> str:
    """The report a query is, for its latency metric: ``aggregate`` (no dimension), ``timeseries``
    (time only) or ``breakdown``; ``_comparison`` when it also answers for another period."""
    if not query.dimensions:
        name = "aggregate"
    elif all(is_time_dimension(dimension) for dimension in query.dimensions):
        name = "timeseries"
    else:
        name = "breakdown"
    return f"{name}_comparison" if query.comparison is not None else name


class Reports:
    """Runs a typed query for a site the caller may read: the one path both front doors take."""

    def __init__(self, snapshots: Snapshots) -> None:
        self._snapshots = snapshots

    async def query(
        self, request: query_pb2.QueryRequest, site_id: str, timezone: str, context: Context
    ) -> tuple[Answer, StatsQuery]:
        (answer,) = await self.queries([request], site_id, timezone, context)
        return answer

    async def queries(
        self, requests: list[query_pb2.QueryRequest], site_id: str, timezone: str, context: Context
    ) -> list[tuple[Answer, StatsQuery]]:
        """Several questions about one site, answered from one snapshot so they agree."""
        answers: list[tuple[Answer, StatsQuery]] = []
        async with self._snapshots.snapshot(context.time_remaining()) as conn:
            for request in requests:
                query = await self.parse(conn, request, site_id, timezone)
                with observe_report(report_name(query)):
                    answer = await run(conn, query)
                answers.append((answer, query))
        return answers

    @staticmethod
    async def parse(
        conn: AsyncConnection[Any], request: query_pb2.QueryRequest, site_id: str, timezone: str
    ) -> StatsQuery:
        """The validated query, its goals loaded and its regular expressions checked by the
        database that runs them."""

        async def first_day() -> date | None:
            return await stats.first_event_day(conn, site_id, ZoneInfo(timezone))

        goals = await site_goals(conn, site_id) if mentions_goals(request) else ()
        query, patterns = await parse_query(request, site_id, timezone, first_day, goals)
        await stats.refuse_invalid_patterns(conn, patterns)
        return query


class QueryServicer(query_pb2_grpc.QueryServiceServicer):
    def __init__(self, snapshots: Snapshots, auth: AuthClient) -> None:
        self._snapshots = snapshots
        self._reports = Reports(snapshots)
        self._auth = auth

    async def GetDailyStats(
        self, request: query_pb2.GetDailyStatsRequest, context: Context
    ) -> query_pb2.GetDailyStatsResponse:
        api_key = credential(context)
        if not api_key:
            raise unauthenticated()
        violations: list[FieldViolation] = []
        site_id: uuid.UUID | None = None
        if not request.site_id:
            violations.append(FieldViolation("site_id", "is required"))
        else:
            try:
                site_id = uuid.UUID(request.site_id)
            except ValueError:
                violations.append(FieldViolation("site_id", "must be a UUID"))
        day = datetime.now(UTC).date() if not request.date else parse_day(request.date)
        if day is None:
            violations.append(FieldViolation("date", "must be a date as YYYY-MM-DD"))
        elif day == date.max:
            # The day's end, 10000-01-01, is past what a datetime holds.
            violations.append(FieldViolation("date", "must be before 9999-12-31"))
        limit = request.limit or DEFAULT_TOP_PATHS
        if limit > MAX_TOP_PATHS:
            violations.append(FieldViolation("limit", f"must be between 1 and {MAX_TOP_PATHS}"))
        if violations or site_id is None or day is None:
            raise ServiceError.invalid(violations)
        principal = await self._auth.authenticate(api_key, str(site_id))
        principal.require(auth_pb2.SCOPE_READ)
        async with self._snapshots.snapshot(context.time_remaining()) as conn:
            with observe_report("daily_stats"):
                stats_of_day = await daily_stats(conn, site_id, day, limit)
        return query_pb2.GetDailyStatsResponse(
            site_id=str(site_id),
            date=day.isoformat(),
            total_views=stats_of_day.total_views,
            unique_users=stats_of_day.unique_users,
            top_paths=[query_pb2.PathCount(path=path, views=views) for path, views in stats_of_day.top_paths],
        )

    async def Query(self, request: query_pb2.QueryRequest, context: Context) -> query_pb2.QueryResponse:
        site_id = parse_site_uuid(request.site_id)
        access = await authorize(self._auth, context, site_id=site_id)
        answer, query = await self._reports.query(request, site_id, access.site.timezone, context)
        return encode(answer, query)

    async def QueryPlausible(
        self, request: query_pb2.QueryPlausibleRequest, context: Context
    ) -> query_pb2.QueryPlausibleResponse:
        site_id, domain = plausible.site_reference(request)
        access = await authorize(self._auth, context, site_id=site_id, domain=domain)
        try:
            typed, imports = plausible.to_query(request, access.site.site_id)
            answer, query = await self._reports.query(
                typed, access.site.site_id, access.site.timezone, context
            )
        except ServiceError as error:
            raise plausible.translate(error) from None
        return plausible.to_response(answer, query, request, imports)

    async def GetEventMetrics(
        self, request: query_pb2.GetEventMetricsRequest, context: Context
    ) -> query_pb2.GetEventMetricsResponse:
        access = await authorize_site(self._auth, context, request.site_id)
        typed = event_reports.metrics_query(request, access.site.site_id)
        try:
            answer, query = await self._reports.query(
                typed, access.site.site_id, access.site.timezone, context
            )
            return event_reports.metrics_response(request, answer, query)
        except ServiceError as error:
            raise event_reports.translate(error) from None

    async def GetEventsSummary(
        self, request: query_pb2.GetEventsSummaryRequest, context: Context
    ) -> query_pb2.GetEventsSummaryResponse:
        access = await authorize_site(self._auth, context, request.site_id)
        totals, names = event_reports.summary_queries(request, access.site.site_id)
        try:
            (total, query), (lines, _) = await self._reports.queries(
                [totals, names], access.site.site_id, access.site.timezone, context
            )
            return event_reports.summary_response(total, lines, query)
        except ServiceError as error:
            raise event_reports.translate(error) from None
