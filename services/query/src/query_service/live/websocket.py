"""The live dashboard over WebSocket, in seed 000's message protocol, fed by the same hub as
StreamLive. Envoy routes `/ws` here with `upgrade_configs: websocket`.

Server → client: `user_connected` (a dashboard joined the site on this replica), `visitor_update`
(one per committed event, with the site's latest figures), `alert`, `detailed_stats` (the answer to
`request_detailed_stats`), `error`. Client → server: `auth` (when the key is not in the URL),
`request_detailed_stats` (`filter.country`, `filter.page`), `track_dashboard_action`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import grpc
import orjson
import structlog
from aiohttp import WSMsgType, web

from analytics.v1 import auth_pb2, live_pb2
from analytics_grpc.auth_client import AuthClient, SiteAccess
from analytics_grpc.errors import ServiceError
from query_service.live.hub import LiveHub, Subscriber
from query_service.live.realtime import Realtime, RealtimeQuery
from query_service.live.seed import Session
from query_service.live.servicer import rfc3339

log = structlog.get_logger("analytics.query")

# session_activity covers visits whose last event is at most this old.
ACTIVITY_LOOKBACK = timedelta(minutes=1)
# How long a client that did not put its key in the URL has to send its `auth` message.
AUTH_TIMEOUT_S = 10.0
MAX_MESSAGE_BYTES = 64 * 1024
# Close codes in the range WebSocket leaves to applications (4000-4999), named after HTTP's.
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_UNAVAILABLE = 4503
_CLOSE_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: CLOSE_BAD_REQUEST,
    grpc.StatusCode.NOT_FOUND: CLOSE_BAD_REQUEST,
    grpc.StatusCode.UNAUTHENTICATED: CLOSE_UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: CLOSE_FORBIDDEN,
}

Report = Callable[[RealtimeQuery, float | None], Awaitable[Realtime]]
# A site's visits whose last event came after the given time (at most a page of them).
ChangedSessions = Callable[[str, datetime], Awaitable[list[Session]]]


def _stats(summary: live_pb2.LiveSummary | None) -> dict[str, Any]:
    if summary is None:
        return {"total_active": None, "events_per_minute": None}
    return {"total_active": summary.current_visitors, "events_per_minute": summary.events_per_minute}


def visitor_event(event: live_pb2.LiveEvent) -> dict[str, Any]:
    """An event in the seed's shape (no session id: visitor and session ids stay server-side)."""
    return {
        "type": event.name,
        "page": event.page,
        "timestamp": rfc3339(event.time.ToDatetime(tzinfo=UTC)),
        "country": event.country,
        "metadata": {
            "device": event.device,
            "referrer": event.source,
            "channel": event.channel,
            "browser": event.browser,
        },
    }


def realtime_json(figures: Realtime) -> dict[str, Any]:
    return {
        "total_active": figures.visitors,
        "pageviews": figures.pageviews,
        "events": figures.events,
        "events_per_minute": figures.events_last_minute,
        "pages_visited": {c.value: c.pageviews for c in figures.top_pages},
        "top_sources": {c.value: c.visitors for c in figures.top_sources},
        "top_countries": {c.value: c.visitors for c in figures.top_countries},
    }


# The seed's alert details name the figure by what it counts.
_DETAIL_NAMES = {"visitors_per_minute": "visitors_last_minute", "events_per_minute": "events_last_minute"}


def alert_json(alert: live_pb2.LiveAlert) -> dict[str, Any]:
    return {
        "type": "alert",
        "data": {
            "level": alert.level,
            "message": alert.message,
            "details": {
                _DETAIL_NAMES.get(alert.metric, alert.metric): alert.value,
                "threshold": alert.threshold,
                "at": rfc3339(alert.at.ToDatetime(tzinfo=UTC)),
            },
        },
    }


@dataclass
class _Credentials:
    api_key: str
    site_id: str


def _text(value: object, field: str, limit: int = 2048) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise ServiceError.field(field, f"must be a string of at most {limit} characters")
    return value


class LiveSocket:
    """The aiohttp application that speaks the protocol."""

    def __init__(
        self,
        hub: LiveHub,
        auth: AuthClient,
        report: Report,
        sessions: ChangedSessions,
        *,
        activity_interval_s: float = 10.0,
    ) -> None:
        self._hub = hub
        self._auth = auth
        self._report = report
        self._sessions = sessions
        self._activity_interval_s = activity_interval_s
        # One session_activity poller per site with dashboards on this replica.
        self._pollers: dict[str, asyncio.Task[None]] = {}
        # Open dashboards per site on this replica, told of each other by user_connected.
        self._dashboards: dict[str, set[web.WebSocketResponse]] = {}
        self._notices: set[asyncio.Task[None]] = set()
        self._serving = False
        self.actions = 0

    def dashboards(self) -> int:
        """Open dashboards on this replica."""
        return sum(len(open_) for open_ in self._dashboards.values())

    def set_serving(self, serving: bool) -> None:
        self._serving = serving

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ws", self.handle)
        app.router.add_get("/health", self.health)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok" if self._serving else "not serving"}, status=200 if self._serving else 503
        )

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        try:
            access = await self._authenticate(ws, request)
        except ServiceError as error:
            await self._refuse(ws, error)
            return ws
        if access is None:
            return ws
        site_id = access.site.site_id
        async with self._hub.subscribe(site_id) as subscriber:
            dashboards = self._dashboards.setdefault(site_id, set())
            dashboards.add(ws)
            if site_id not in self._pollers:
                self._pollers[site_id] = asyncio.create_task(self._poll_sessions(site_id, dashboards))
            try:
                self._joined(dashboards)
                await self._serve(ws, subscriber, site_id)
            finally:
                dashboards.discard(ws)
                if not dashboards:
                    self._dashboards.pop(site_id, None)
                    poller = self._pollers.pop(site_id, None)
                    if poller is not None:
                        poller.cancel()
        return ws

    async def _poll_sessions(self, site_id: str, dashboards: set[web.WebSocketResponse]) -> None:
        """Every interval, the site's visits whose last event is under ACTIVITY_LOOKBACK old and
        changed since they were last told, to every dashboard of the site as session_activity (one
        query per site, not per dashboard). Looking back by event time, not since the last look,
        keeps a visit whose event was stored after the look that its time belongs to."""
        told: dict[uuid.UUID, datetime] = {}
        while True:
            now = datetime.now(UTC)
            try:
                changed = await self._sessions(site_id, now - ACTIVITY_LOOKBACK)
            except ServiceError as error:
                log.warning("session activity failed", site_id=site_id, error=error.message)
                changed = []
            for stale in [key for key, at in told.items() if at <= now - ACTIVITY_LOOKBACK]:
                del told[stale]
            for session in changed:
                if told.get(session.session_id) == session.last_activity:
                    continue
                told[session.session_id] = session.last_activity
                text = orjson.dumps(
                    {
                        "type": "session_activity",
                        "data": {
                            "session_id": str(session.session_id),
                            "current_page": session.current_page,
                            "journey": session.journey,
                            "duration": round(session.duration_s),
                            "last_activity": rfc3339(session.last_activity),
                        },
                    }
                ).decode()
                self._tell(dashboards, text)
            await asyncio.sleep(self._activity_interval_s)

    def _joined(self, dashboards: set[web.WebSocketResponse]) -> None:
        """Every dashboard of the site on this replica hears of the new one; sent in the
        background, so a slow dashboard holds up no one."""
        text = orjson.dumps(
            {
                "type": "user_connected",
                "data": {"total_dashboards": len(dashboards), "connected_at": rfc3339(datetime.now(UTC))},
            }
        ).decode()
        self._tell(dashboards, text)

    def _tell(self, dashboards: set[web.WebSocketResponse], text: str) -> None:
        for ws in list(dashboards):
            task = asyncio.create_task(self._send(ws, text))
            self._notices.add(task)
            task.add_done_callback(self._notices.discard)

    @staticmethod
    async def _send(ws: web.WebSocketResponse, text: str) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(text)

    async def _authenticate(self, ws: web.WebSocketResponse, request: web.Request) -> SiteAccess | None:
        """The key from the URL (api_key), a header, or a first `auth` message."""
        query = request.rel_url.query
        header = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix(
            "Bearer "
        )
        credentials = _Credentials(query.get("api_key", "") or header.strip(), query.get("site_id", ""))
        if not credentials.api_key:
            try:
                first = await ws.receive(timeout=AUTH_TIMEOUT_S)
            except TimeoutError:
                raise ServiceError(
                    grpc.StatusCode.UNAUTHENTICATED, "no api_key in the URL and no auth message"
                ) from None
            if first.type != WSMsgType.TEXT:
                return None
            body = self._decode(first.data)
            if body.get("type") != "auth":
                raise ServiceError(
                    grpc.StatusCode.UNAUTHENTICATED,
                    'the first message must be {"type": "auth", "api_key": …}',
                )
            credentials = _Credentials(
                _text(body.get("api_key"), "api_key"),
                _text(body.get("site_id"), "site_id") or credentials.site_id,
            )
        site_id = credentials.site_id
        if not site_id:
            principal = await self._auth.authenticate(credentials.api_key, "")
            if principal.is_admin:
                raise ServiceError.field("site_id", "is required with the admin token")
            site_id = principal.site_id
        try:
            site_id = str(uuid.UUID(site_id))
        except ValueError:
            raise ServiceError.field("site_id", "must be a UUID") from None
        access = await self._auth.site_access(credentials.api_key, site_id=site_id)
        access.principal.require(auth_pb2.SCOPE_READ)
        return access

    @staticmethod
    def _decode(data: str) -> dict[str, Any]:
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ServiceError.field("message", "must be a JSON object") from None
        if not isinstance(body, dict):
            raise ServiceError.field("message", "must be a JSON object")
        return body

    @staticmethod
    async def _refuse(ws: web.WebSocketResponse, error: ServiceError) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_json({"type": "error", "data": {"code": error.code.name, "message": error.message}})
            await ws.close(
                code=_CLOSE_CODES.get(error.code, CLOSE_UNAVAILABLE), message=error.message[:120].encode()
            )

    async def _serve(self, ws: web.WebSocketResponse, subscriber: Subscriber, site_id: str) -> None:
        forward = asyncio.create_task(self._forward(ws, subscriber))
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                try:
                    await self._on_message(ws, site_id, self._decode(message.data))
                except ServiceError as error:
                    await ws.send_json(
                        {"type": "error", "data": {"code": error.code.name, "message": error.message}}
                    )
        finally:
            forward.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
                await forward

    async def _on_message(self, ws: web.WebSocketResponse, site_id: str, body: dict[str, Any]) -> None:
        kind = body.get("type")
        if kind == "request_detailed_stats":
            given = body.get("filter") or {}
            if not isinstance(given, dict):
                raise ServiceError.field("filter", "must be an object")
            query = RealtimeQuery(
                site_id,
                datetime.now(UTC),
                page=_text(given.get("page"), "filter.page"),
                country=_text(given.get("country"), "filter.country"),
            )
            figures = await self._report(query, None)
            await ws.send_json(
                {
                    "type": "detailed_stats",
                    "data": {
                        "filter": {"page": query.page, "country": query.country},
                        "stats": realtime_json(figures),
                    },
                }
            )
        elif kind == "track_dashboard_action":
            action = _text(body.get("action"), "action", 100)
            self.actions += 1
            # The action's name only: its details may hold whatever a dashboard user typed.
            log.info("dashboard action", site_id=site_id, action=action)
        elif kind == "auth":
            raise ServiceError.field("type", "auth is only accepted as the first message")
        else:
            raise ServiceError.field(
                "type", "must be request_detailed_stats or track_dashboard_action, got " + repr(kind)[:80]
            )

    async def _forward(self, ws: web.WebSocketResponse, subscriber: Subscriber) -> None:
        summary: live_pb2.LiveSummary | None = None
        while not ws.closed:
            message = await subscriber.next(30.0)
            if message is None:
                if subscriber.closed:
                    await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutting down")
                    return
                continue  # aiohttp's own pings keep the connection open
            kind = message.WhichOneof("kind")
            if kind == "summary":
                summary = message.summary
            elif kind == "events":
                stats = {**_stats(summary), "dropped_events": message.dropped_events}
                for event in message.events.events:
                    await ws.send_json(
                        {"type": "visitor_update", "data": {"event": visitor_event(event), "stats": stats}}
                    )
            elif kind == "alert":
                await ws.send_json(alert_json(message.alert))
