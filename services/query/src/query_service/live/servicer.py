"""LiveService: realtime figures and live streams, decoded, authorized and encoded here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from google.api import httpbody_pb2

from analytics.v1 import live_pb2, live_pb2_grpc
from analytics_grpc.auth_client import AuthClient
from analytics_grpc.errors import FieldViolation, ServiceError
from analytics_grpc.metadata import Context
from query_service.live.hub import LiveHub
from query_service.live.realtime import DEFAULT_WINDOW, Count, Realtime, RealtimeQuery, realtime
from query_service.request import authorize, parse_site_uuid, shown
from query_service.snapshot import Snapshots

MAX_WINDOW_MINUTES = 60
DEFAULT_LIMIT = 10
MAX_LIMIT = 100
MAX_FILTER_VALUES = 100
MAX_VALUE_LENGTH = 2048
# Summaries of the hub are computed without a caller: bounded like a short request.
SUMMARY_TIMEOUT_S = 5.0


def _counts(rows: list[Count]) -> list[live_pb2.RealtimeCount]:
    return [live_pb2.RealtimeCount(value=c.value, visitors=c.visitors, pageviews=c.pageviews) for c in rows]


def _filter_values(field: str, values: list[str]) -> frozenset[str]:
    if len(values) > MAX_FILTER_VALUES:
        raise ServiceError.field(field, f"must hold at most {MAX_FILTER_VALUES} values, got {len(values)}")
    for index, value in enumerate(values):
        if not value or len(value) > MAX_VALUE_LENGTH:
            raise ServiceError.field(
                f"{field}[{index}]", f"must be 1..{MAX_VALUE_LENGTH} characters, got {shown(value)}"
            )
    return frozenset(values)


async def report(snapshots: Snapshots, query: RealtimeQuery, time_remaining: float | None) -> Realtime:
    async with snapshots.snapshot(time_remaining) as conn:
        return await realtime(conn, query)


async def summary(snapshots: Snapshots, site_id: str) -> live_pb2.LiveSummary:
    """A site's periodic summary: its current visitors and events of the last minute."""
    now = datetime.now(UTC)
    figures = await report(snapshots, RealtimeQuery(site_id, now, limit=1), SUMMARY_TIMEOUT_S)
    result = live_pb2.LiveSummary(
        current_visitors=figures.visitors, events_per_minute=figures.events_last_minute
    )
    result.at.FromDatetime(now)
    return result


class LiveServicer(live_pb2_grpc.LiveServiceServicer):
    def __init__(self, snapshots: Snapshots, auth: AuthClient, hub: LiveHub, *, heartbeat_s: float) -> None:
        self._snapshots = snapshots
        self._auth = auth
        self._hub = hub
        self._heartbeat_s = heartbeat_s

    async def GetRealtime(
        self, request: live_pb2.GetRealtimeRequest, context: Context
    ) -> live_pb2.GetRealtimeResponse:
        site_id = parse_site_uuid(request.site_id)
        violations: list[FieldViolation] = []
        if request.window_minutes > MAX_WINDOW_MINUTES:
            violations.append(
                FieldViolation(
                    "window_minutes", f"must be 1..{MAX_WINDOW_MINUTES}, got {request.window_minutes}"
                )
            )
        if request.limit > MAX_LIMIT:
            violations.append(FieldViolation("limit", f"must be 1..{MAX_LIMIT}, got {request.limit}"))
        for name in ("page", "country"):
            if len(getattr(request, name)) > MAX_VALUE_LENGTH:
                violations.append(FieldViolation(name, f"must be at most {MAX_VALUE_LENGTH} characters"))
        if violations:
            raise ServiceError.invalid(violations)
        await authorize(self._auth, context, site_id=site_id)
        window = timedelta(minutes=request.window_minutes) if request.window_minutes else DEFAULT_WINDOW
        now = datetime.now(UTC)
        query = RealtimeQuery(
            site_id, now, window, request.limit or DEFAULT_LIMIT, request.page, request.country
        )
        figures = await report(self._snapshots, query, context.time_remaining())
        response = live_pb2.GetRealtimeResponse(
            site_id=site_id,
            visitors=figures.visitors,
            pageviews=figures.pageviews,
            events=figures.events,
            events_last_minute=figures.events_last_minute,
            window_s=int(window.total_seconds()),
            top_pages=_counts(figures.top_pages),
            top_sources=_counts(figures.top_sources),
            top_countries=_counts(figures.top_countries),
        )
        response.at.FromDatetime(now)
        return response

    async def GetRealtimeVisitors(
        self, request: live_pb2.GetRealtimeVisitorsRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        reference = request.site_id
        if not reference:
            raise ServiceError.field("site_id", "is required (the site's domain or UUID)")
        try:
            site_id, domain = parse_site_uuid(reference), ""
        except ServiceError:
            site_id, domain = "", reference
        access = await authorize(self._auth, context, site_id=site_id, domain=domain)
        query = RealtimeQuery(access.site.site_id, datetime.now(UTC), limit=1)
        figures = await report(self._snapshots, query, context.time_remaining())
        return httpbody_pb2.HttpBody(content_type="text/plain", data=str(figures.visitors).encode())

    async def StreamLive(
        self, request: live_pb2.StreamLiveRequest, context: Context
    ) -> AsyncIterator[live_pb2.StreamLiveResponse]:
        site_id = parse_site_uuid(request.site_id)
        pages = _filter_values("pages", list(request.pages))
        countries = _filter_values("countries", list(request.countries))
        await authorize(self._auth, context, site_id=site_id)
        async with self._hub.subscribe(site_id, pages, countries) as subscriber:
            while True:
                message = await subscriber.next(self._heartbeat_s)
                if message is None:
                    if subscriber.closed:
                        return
                    message = live_pb2.StreamLiveResponse(dropped_events=subscriber.dropped_events)
                    message.heartbeat.at.GetCurrentTime()
                yield message
