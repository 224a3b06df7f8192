"""Seed 000's POST /api/events: its event shape in, its envelope out, through ingest's own path."""

from __future__ import annotations

import grpc
import structlog

from analytics.v1 import events_pb2, live_pb2, live_pb2_grpc
from analytics_grpc.auth_client import AuthClient
from analytics_grpc.errors import FieldViolation, ServiceError, unauthenticated
from analytics_grpc.metadata import Context, credential
from ingest_service.servicer import IngestServicer
from ingest_service.validation import uuid_text

log = structlog.get_logger("analytics.ingest")

# Our event's fields by the names seed 000's clients send them under.
_SEED_NAMES = {
    "event_type": "type",
    "path": "page",
    "user_id": "session_id",
    "referrer": "metadata.referrer",
    "timestamp": "timestamp",
    "site_id": "site_id",
}
STATS_TIMEOUT_S = 2.0


def _seed_field(field: str) -> str:
    head, dot, rest = field.partition(".")
    return _SEED_NAMES.get(head, head) + (dot + rest if dot and head not in _SEED_NAMES else "")


def _referrer(value: str) -> str:
    """A bare host (the seed's `google.com`) as a URL, so its host and channel are derived."""
    return value if not value or "://" in value else f"https://{value}"


class SeedEventServicer(live_pb2_grpc.SeedEventServiceServicer):
    def __init__(self, ingest: IngestServicer, auth: AuthClient, query: grpc.aio.Channel) -> None:
        self._ingest = ingest
        self._auth = auth
        self._live = live_pb2_grpc.LiveServiceStub(query)  # type: ignore[no-untyped-call]

    async def TrackSeedEvent(
        self, request: live_pb2.TrackSeedEventRequest, context: Context
    ) -> live_pb2.TrackSeedEventResponse:
        api_key = credential(context)
        if not api_key:
            raise unauthenticated()
        if not request.session_id:
            raise ServiceError.field("session_id", "is required")
        site_id = request.site_id
        if not site_id:
            principal = await self._auth.authenticate(api_key, "")
            if principal.is_admin:
                raise ServiceError.field("site_id", "is required with the admin token")
            site_id = principal.site_id
        event = events_pb2.Event(
            site_id=site_id,
            event_type=request.type,
            path=request.page,
            user_id=request.session_id,
            timestamp=request.timestamp,
            referrer=_referrer(request.metadata.referrer),
        )
        try:
            (stored,) = await self._ingest.accept(context, [event], lambda _: "")
        except ServiceError as error:
            if not error.violations:
                raise
            raise ServiceError.invalid(
                [FieldViolation(_seed_field(v.field), v.description) for v in error.violations]
            ) from None
        data = live_pb2.TrackSeedEventData(session_id=request.session_id, event_id=uuid_text(stored.event_id))
        try:
            summary = await self._live.GetAnalyticsSummary(
                live_pb2.GetAnalyticsSummaryRequest(site_id=site_id),
                metadata=(("authorization", f"Bearer {api_key}"),),
                timeout=STATS_TIMEOUT_S,
            )
            data.current_stats.CopyFrom(summary.data.summary)
        except grpc.aio.AioRpcError as error:
            # The event is queued whatever the figures do: answer without them.
            log.warning("seed event answered without current_stats", code=error.code().name)
        return live_pb2.TrackSeedEventResponse(
            success=True, message="Event processed successfully", data=data
        )
