"""PeopleService: sessions, a person's timeline, page flows and raw export. Ranges, filters and
authorization are the Query API's (request.py, the same parser); each report owns its SQL
(reports/sessions.py, timeline.py, flows.py, export.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

import structlog
from google.api import httpbody_pb2
from google.protobuf import struct_pb2
from psycopg import AsyncConnection

from analytics.v1 import people_pb2, people_pb2_grpc, query_pb2
from analytics_grpc.auth_client import AuthClient
from analytics_grpc.errors import FieldViolation, ServiceError
from analytics_grpc.metadata import Context
from analytics_observability.metrics import observe_report
from query_service import event_reports
from query_service.reports import export, flows, sessions, stats
from query_service.reports.timeline import timeline
from query_service.request import authorize, authorize_site, parse_query, parse_site_uuid, shown
from query_service.snapshot import Snapshots
from query_service.spec import StatsQuery

log = structlog.get_logger("analytics.query")

DEFAULT_VISITS = 100
MAX_VISITS = 1000
DEFAULT_FLOWS = 10
MAX_FLOWS = 100
MAX_USER_ID = 256
DIRECTIONS = ("next", "previous")


def rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _page(pagination: query_pb2.Pagination, field: str = "pagination") -> tuple[int, int]:
    limit = pagination.limit or DEFAULT_VISITS
    if limit > MAX_VISITS:
        raise ServiceError.field(f"{field}.limit", f"must be between 1 and {MAX_VISITS}, got {limit}")
    return limit, pagination.offset


async def select(
    conn: AsyncConnection[Any],
    site_id: str,
    timezone: str,
    date_range: query_pb2.DateRange,
    filters: list[query_pb2.Filter],
    *,
    limit: int = 1,
    offset: int = 0,
) -> StatsQuery:
    """The range and filters, parsed and checked as Query parses them (same field names)."""
    request = query_pb2.QueryRequest(
        site_id=site_id,
        date_range=date_range,
        metrics=["visits"],
        filters=filters,
        pagination=query_pb2.Pagination(limit=min(limit, 10_000), offset=offset),
    )

    async def first_day() -> date | None:
        return await stats.first_event_day(conn, site_id, ZoneInfo(timezone))

    query, patterns = await parse_query(request, site_id, timezone, first_day)
    await stats.refuse_invalid_patterns(conn, patterns)
    return query


def _session(row: sessions.SessionRow) -> people_pb2.Session:
    source, channel, country, device, browser, os = row.attributes
    return people_pb2.Session(
        session_id=row.session_id,
        visitor_id=str(row.visitor_id),
        user_id=row.user_id,
        started_at=rfc3339(row.started_at),
        ended_at=rfc3339(row.ended_at),
        duration_s=(row.ended_at - row.started_at).total_seconds(),
        pageviews=row.pageviews,
        events=row.events,
        bounce=row.bounce,
        entry_page=row.entry_page,
        exit_page=row.exit_page,
        pages=row.pages,
        source=source,
        channel=channel,
        country=country,
        device=device,
        browser=browser,
        os=os,
    )


def _properties(values: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


class PeopleServicer(people_pb2_grpc.PeopleServiceServicer):
    def __init__(self, snapshots: Snapshots, auth: AuthClient) -> None:
        self._snapshots = snapshots
        self._auth = auth

    async def ListSessions(
        self, request: people_pb2.ListSessionsRequest, context: Context
    ) -> people_pb2.ListSessionsResponse:
        site_id = parse_site_uuid(request.site_id)
        access = await authorize(self._auth, context, site_id=site_id)
        limit, offset = _page(request.pagination)
        async with self._snapshots.snapshot(context.time_remaining()) as conn:
            query = await select(
                conn,
                site_id,
                access.site.timezone,
                request.date_range,
                list(request.filters),
                limit=limit,
                offset=offset,
            )
            with observe_report("sessions"):
                found = await sessions.list_sessions(conn, query)
        return people_pb2.ListSessionsResponse(
            sessions=[_session(row) for row in found.sessions],
            total=found.total,
            timezone=query.timezone,
            start=rfc3339(query.range.start),
            end=rfc3339(query.range.end),
        )

    async def GetUserTimeline(
        self, request: people_pb2.GetUserTimelineRequest, context: Context
    ) -> people_pb2.GetUserTimelineResponse:
        site_id = parse_site_uuid(request.site_id)
        access = await authorize(self._auth, context, site_id=site_id)
        return await self.user_timeline(
            site_id=site_id,
            timezone=access.site.timezone,
            user_id=request.user_id,
            date_range=request.date_range,
            pagination=request.pagination,
            context=context,
        )

    async def user_timeline(
        self,
        *,
        site_id: str,
        timezone: str,
        user_id: str,
        date_range: query_pb2.DateRange,
        pagination: query_pb2.Pagination,
        context: Context,
    ) -> people_pb2.GetUserTimelineResponse:
        """The timeline of a site the caller may read (also seed 002's journey route)."""
        if not user_id:
            raise ServiceError.field("user_id", "is required")
        if len(user_id) > MAX_USER_ID:
            raise ServiceError.field("user_id", f"must be at most {MAX_USER_ID} characters")
        limit, offset = _page(pagination)
        async with self._snapshots.snapshot(context.time_remaining()) as conn:
            query = await select(conn, site_id, timezone, date_range, [])
            max_span = await stats.max_session_span(conn)
            found = await timeline(
                conn, site_id, user_id, query.range, limit=limit, offset=offset, max_span=max_span
            )
        return people_pb2.GetUserTimelineResponse(
            user_id=user_id,
            sessions=[
                people_pb2.TimelineSession(
                    session_id=visit.session_id,
                    started_at=rfc3339(visit.started_at),
                    ended_at=rfc3339(visit.ended_at),
                    events=[
                        people_pb2.TimelineEvent(
                            event_id=event.event_id,
                            time=rfc3339(event.time),
                            name=event.name,
                            path=event.path,
                            url=event.url,
                            referrer=event.referrer,
                            properties=_properties(event.properties),
                        )
                        for event in visit.events
                    ],
                )
                for visit in found.visits
            ],
            total_sessions=found.total,
            timezone=timezone,
            start=rfc3339(query.range.start),
            end=rfc3339(query.range.end),
        )

    async def GetUserJourney(
        self, request: people_pb2.GetUserJourneyRequest, context: Context
    ) -> people_pb2.GetUserTimelineResponse:
        access = await authorize_site(self._auth, context, request.site_id)
        try:
            return await self.user_timeline(
                site_id=access.site.site_id,
                timezone=access.site.timezone,
                user_id=request.user_id,
                date_range=event_reports.seed_range(request.start_date, request.end_date),
                pagination=query_pb2.Pagination(limit=request.limit, offset=request.offset),
                context=context,
            )
        except ServiceError as error:
            raise event_reports.translate(error, {"pagination.limit": "limit"}) from None

    async def GetPageFlows(
        self, request: people_pb2.GetPageFlowsRequest, context: Context
    ) -> people_pb2.GetPageFlowsResponse:
        site_id = parse_site_uuid(request.site_id)
        access = await authorize(self._auth, context, site_id=site_id)
        violations: list[FieldViolation] = []
        if not request.page:
            violations.append(FieldViolation("page", "is required"))
        elif len(request.page) > 2048:
            violations.append(FieldViolation("page", "must be at most 2048 characters"))
        direction = request.direction or "next"
        if direction not in DIRECTIONS:
            violations.append(
                FieldViolation("direction", f"must be one of {', '.join(DIRECTIONS)}, got {shown(direction)}")
            )
        steps = request.steps or 1
        if steps > flows.MAX_STEPS:
            violations.append(
                FieldViolation("steps", f"must be between 1 and {flows.MAX_STEPS}, got {steps}")
            )
        limit = request.limit or DEFAULT_FLOWS
        if limit > MAX_FLOWS:
            violations.append(FieldViolation("limit", f"must be between 1 and {MAX_FLOWS}, got {limit}"))
        if violations:
            raise ServiceError.invalid(violations)
        async with self._snapshots.snapshot(context.time_remaining()) as conn:
            query = await select(
                conn, site_id, access.site.timezone, request.date_range, list(request.filters)
            )
            with observe_report("page_flows"):
                found = await flows.page_flows(
                    conn, query, request.page, cast(flows.Direction, direction), steps=steps, limit=limit
                )
        return people_pb2.GetPageFlowsResponse(
            page=request.page,
            direction=direction,
            page_views=found.page_views,
            visits=found.visits,
            flows=[
                people_pb2.PageFlow(pages=list(flow.pages), page_views=flow.page_views, visits=flow.visits)
                for flow in found.flows
            ],
            timezone=query.timezone,
            start=rfc3339(query.range.start),
            end=rfc3339(query.range.end),
        )

    async def ExportEvents(
        self, request: people_pb2.ExportEventsRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        site_id = parse_site_uuid(request.site_id)
        access = await authorize(self._auth, context, site_id=site_id)
        form = request.format or "ndjson"
        if form not in export.FORMATS:
            raise ServiceError.field(
                "format", f"must be one of {', '.join(export.FORMATS)}, got {shown(form)}"
            )
        content_type = export.CONTENT_TYPES[form]
        # The snapshot's statement timeout bounds every fetch, not the whole stream: a long export
        # is bounded by the caller's deadline alone.
        async with self._snapshots.snapshot(context.time_remaining()) as conn:
            query = await select(
                conn, site_id, access.site.timezone, request.date_range, list(request.filters)
            )
            max_span = await stats.max_session_span(conn)
            sent = 0
            async for chunk in export.chunks(conn, query, form, query.range.start - max_span):
                sent += len(chunk)
                yield httpbody_pb2.HttpBody(content_type=content_type, data=chunk)
        log.info("export sent", site_id=site_id, format=form, bytes=sent)
