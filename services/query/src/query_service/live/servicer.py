"""LiveService: realtime figures and live streams, decoded, authorized and encoded here."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import structlog
from google.api import httpbody_pb2

from analytics.v1 import auth_pb2, live_pb2, live_pb2_grpc
from analytics_grpc.auth_client import AuthClient
from analytics_grpc.errors import FieldViolation, ServiceError, unauthenticated
from analytics_grpc.metadata import Context, credential
from query_service.live import alert_rules, seed
from query_service.live.alerts import AlertRule, SiteRule, webhook_host
from query_service.live.hub import LiveHub
from query_service.live.realtime import DEFAULT_WINDOW, Count, Realtime, RealtimeQuery, realtime
from query_service.request import authorize, authorize_site, parse_site_uuid, shown
from query_service.snapshot import Snapshots

MAX_WINDOW_MINUTES = 60
DEFAULT_LIMIT = 10
MAX_LIMIT = 100
MAX_SESSIONS = 1000
DEFAULT_SESSIONS = 50
MAX_FILTER_VALUES = 100
MAX_VALUE_LENGTH = 2048
# Summaries of the hub are computed without a caller: bounded like a short request.
SUMMARY_TIMEOUT_S = 5.0

log = structlog.get_logger("analytics.query")


def _counts(rows: list[Count]) -> list[live_pb2.RealtimeCount]:
    return [live_pb2.RealtimeCount(value=c.value, visitors=c.visitors, pageviews=c.pageviews) for c in rows]


def filter_values(field: str, values: list[str]) -> frozenset[str]:
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


def rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _text(field: str, value: str) -> str:
    if len(value) > MAX_VALUE_LENGTH:
        raise ServiceError.field(field, f"must be at most {MAX_VALUE_LENGTH} characters")
    return value


async def changed_sessions(snapshots: Snapshots, site_id: str, after: datetime) -> list[seed.Session]:
    """The site's active visits with an event after ``after`` (the WebSocket's session_activity)."""
    async with snapshots.snapshot(SUMMARY_TIMEOUT_S) as conn:
        sessions, _ = await seed.active_sessions(conn, site_id, datetime.now(UTC), 100, changed_after=after)
    return sessions


def _alert_rule(
    site_id: str, own: SiteRule | None, defaults: AlertRule, webhooks: Mapping[str, str]
) -> live_pb2.AlertRule:
    """The rule in effect for the site, answered: never the webhook's URL, only its host."""
    rule = own.over(defaults) if own is not None else defaults
    own_url = own.webhook_url if own is not None else None
    url = own_url or webhooks.get(site_id)
    return live_pb2.AlertRule(
        site_id=site_id,
        visitors_per_minute=rule.visitors_per_minute,
        events_per_minute=rule.events_per_minute,
        spike_factor=rule.spike_factor,
        min_events=rule.min_events,
        cooldown_seconds=int(rule.cooldown.total_seconds()),
        enabled=rule.enabled,
        webhook_host=webhook_host(url) if url else "",
        own_webhook=own_url is not None,
        is_default=own is None,
        updated_at=rfc3339(own.updated_at) if own is not None and own.updated_at is not None else "",
    )


class LiveServicer(live_pb2_grpc.LiveServiceServicer):
    def __init__(
        self,
        snapshots: Snapshots,
        auth: AuthClient,
        hub: LiveHub,
        *,
        heartbeat_s: float,
        dashboards: Callable[[], int] = lambda: 0,
        alert_counts: Callable[[], tuple[int, int, int]] = lambda: (0, 0, 0),
        alert_defaults: AlertRule | None = None,
        alert_webhooks: Mapping[str, str] | None = None,
    ) -> None:
        self._snapshots = snapshots
        self._auth = auth
        self._hub = hub
        self._heartbeat_s = heartbeat_s
        self._dashboards = dashboards
        # (alerts raised, webhooks delivered, webhooks failed) on this replica.
        self._alert_counts = alert_counts
        # The configured alert rule and webhooks, which a site's own rule overrides field by field.
        self._alert_defaults = alert_defaults or AlertRule()
        self._alert_webhooks = dict(alert_webhooks or {})
        self._started = time.monotonic()

    def _answer_rule(self, site_id: str, own: SiteRule | None) -> live_pb2.AlertRule:
        return _alert_rule(site_id, own, self._alert_defaults, self._alert_webhooks)

    async def GetAlertRule(
        self, request: live_pb2.GetAlertRuleRequest, context: Context
    ) -> live_pb2.GetAlertRuleResponse:
        site_id = parse_site_uuid(request.site_id)
        await authorize(self._auth, context, site_id=site_id)
        async with self._snapshots.snapshot(context.time_remaining()) as conn:
            own = await alert_rules.get_rule(conn, site_id)
        return live_pb2.GetAlertRuleResponse(rule=self._answer_rule(site_id, own))

    async def SetAlertRule(
        self, request: live_pb2.SetAlertRuleRequest, context: Context
    ) -> live_pb2.SetAlertRuleResponse:
        site_id = parse_site_uuid(request.site_id)
        await authorize(self._auth, context, site_id=site_id, scope=auth_pb2.SCOPE_ADMIN)
        rule = alert_rules.parse_rule(request)
        async with self._snapshots.write(context.time_remaining()) as conn:
            own = await alert_rules.set_rule(conn, site_id, rule)
        log.info(
            "alert rule set",
            site_id=site_id,
            webhook_host=webhook_host(own.webhook_url) if own.webhook_url else None,
        )
        return live_pb2.SetAlertRuleResponse(rule=self._answer_rule(site_id, own))

    async def DeleteAlertRule(
        self, request: live_pb2.DeleteAlertRuleRequest, context: Context
    ) -> live_pb2.DeleteAlertRuleResponse:
        site_id = parse_site_uuid(request.site_id)
        await authorize(self._auth, context, site_id=site_id, scope=auth_pb2.SCOPE_ADMIN)
        async with self._snapshots.write(context.time_remaining()) as conn:
            removed = await alert_rules.delete_rule(conn, site_id)
        log.info("alert rule deleted", site_id=site_id, had_rule=removed)
        return live_pb2.DeleteAlertRuleResponse(rule=self._answer_rule(site_id, None))

    async def GetAnalyticsSummary(
        self, request: live_pb2.GetAnalyticsSummaryRequest, context: Context
    ) -> live_pb2.GetAnalyticsSummaryResponse:
        page, country = _text("page", request.page), _text("country", request.country)
        access = await authorize_site(self._auth, context, request.site_id)
        site_id, now = access.site.site_id, datetime.now(UTC)
        async with self._snapshots.snapshot(context.time_remaining()) as conn:
            figures = await realtime(conn, RealtimeQuery(site_id, now, limit=1, page=page, country=country))
            day = await seed.today(
                conn, site_id, now, ZoneInfo(access.site.timezone), page=page, country=country
            )
        summary = live_pb2.SeedSummary(
            total_active=figures.visitors, total_today=day.events, pages_visited=day.pages
        )
        return live_pb2.GetAnalyticsSummaryResponse(
            success=True, data=live_pb2.SummaryData(summary=summary, generated_at=rfc3339(now))
        )

    async def ListActiveSessions(
        self, request: live_pb2.ListActiveSessionsRequest, context: Context
    ) -> live_pb2.ListActiveSessionsResponse:
        page, country = _text("page", request.page), _text("country", request.country)
        if request.limit > MAX_SESSIONS:
            raise ServiceError.field("limit", f"must be 1..{MAX_SESSIONS}, got {request.limit}")
        access = await authorize_site(self._auth, context, request.site_id)
        async with self._snapshots.snapshot(context.time_remaining()) as conn:
            sessions, total = await seed.active_sessions(
                conn,
                access.site.site_id,
                datetime.now(UTC),
                request.limit or DEFAULT_SESSIONS,
                page=page,
                country=country,
            )
        listed = [
            live_pb2.ActiveSession(
                session_id=str(s.session_id),
                current_page=s.current_page,
                journey=s.journey,
                duration=round(s.duration_s),
                country=s.country,
                device=s.device,
                last_activity=rfc3339(s.last_activity),
            )
            for s in sessions
        ]
        return live_pb2.ListActiveSessionsResponse(
            success=True, data=live_pb2.SessionsData(sessions=listed, total_count=total)
        )

    async def GetDetailedAnalytics(
        self, request: live_pb2.GetDetailedAnalyticsRequest, context: Context
    ) -> live_pb2.GetDetailedAnalyticsResponse:
        access = await authorize_site(self._auth, context, request.site_id)
        site_id, now = access.site.site_id, datetime.now(UTC)
        async with self._snapshots.snapshot(context.time_remaining()) as conn:
            figures = await realtime(conn, RealtimeQuery(site_id, now, limit=MAX_LIMIT))
            day = await seed.today(conn, site_id, now, ZoneInfo(access.site.timezone))
            _, active = await seed.active_sessions(conn, site_id, now, 1)
        return live_pb2.GetDetailedAnalyticsResponse(
            success=True,
            data=live_pb2.DetailedData(
                summary=live_pb2.SeedSummary(
                    total_active=figures.visitors, total_today=day.events, pages_visited=day.pages
                ),
                active_pages={c.value: c.visitors for c in figures.top_pages},
                sources={c.value: c.visitors for c in figures.top_sources},
                countries={c.value: c.visitors for c in figures.top_countries},
                active_sessions=active,
                generated_at=rfc3339(now),
            ),
        )

    async def GetLiveStatus(
        self, request: live_pb2.GetLiveStatusRequest, context: Context
    ) -> live_pb2.GetLiveStatusResponse:
        api_key = credential(context)
        if not api_key:
            raise unauthenticated()
        await self._auth.authenticate(api_key, "")
        raised, delivered, failed = self._alert_counts()
        return live_pb2.GetLiveStatusResponse(
            success=True,
            data=live_pb2.StatusData(
                status="running",
                live_sites=self._hub.sites,
                live_subscribers=self._hub.total_subscribers,
                websocket_dashboards=self._dashboards(),
                uptime_s=int(time.monotonic() - self._started),
                generated_at=rfc3339(datetime.now(UTC)),
                dropped_events=self._hub.total_dropped_events,
                alerts_raised=raised,
                webhooks_delivered=delivered,
                webhooks_failed=failed,
            ),
        )

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
        pages = filter_values("pages", list(request.pages))
        countries = filter_values("countries", list(request.countries))
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
