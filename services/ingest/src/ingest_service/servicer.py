"""IngestService servicer: authenticate, validate, enrich, then wait for the durable queue."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from analytics.v1 import auth_pb2, bus_pb2, events_pb2, ingest_pb2, ingest_pb2_grpc
from analytics_grpc.auth_client import AuthClient
from analytics_grpc.errors import FieldViolation, ServiceError, unauthenticated, unavailable
from analytics_grpc.metadata import Context, credential
from ingest_service.publisher import GroupCommitPublisher, PublishError
from ingest_service.settings import MAX_BATCH_EVENTS
from ingest_service.validation import Limits, validate_event


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(
        self,
        auth: AuthClient,
        publisher: GroupCommitPublisher,
        limits: Limits,
        is_healthy: Callable[[], bool],
    ) -> None:
        self._auth = auth
        self._publisher = publisher
        self._limits = limits
        self._is_healthy = is_healthy

    async def Track(self, request: ingest_pb2.TrackRequest, context: Context) -> ingest_pb2.TrackResponse:
        (event,) = await self._accept(context, [request.event], "event.")
        return ingest_pb2.TrackResponse(event_id=str(uuid.UUID(bytes=event.event_id)))

    async def TrackBatch(
        self, request: ingest_pb2.TrackBatchRequest, context: Context
    ) -> ingest_pb2.TrackBatchResponse:
        if not request.events:
            raise ServiceError.field("events", "must contain at least one event")
        if len(request.events) > MAX_BATCH_EVENTS:
            raise ServiceError.field("events", f"must contain at most {MAX_BATCH_EVENTS} events")
        events = await self._accept(context, list(request.events), "events[{}].")
        return ingest_pb2.TrackBatchResponse(
            accepted=len(events), event_ids=[str(uuid.UUID(bytes=e.event_id)) for e in events]
        )

    async def GetHealth(
        self, request: ingest_pb2.GetHealthRequest, context: Context
    ) -> ingest_pb2.GetHealthResponse:
        if not self._is_healthy():
            raise unavailable("event queue unreachable")
        return ingest_pb2.GetHealthResponse(status="ok")

    async def _accept(
        self, context: Context, events: list[events_pb2.Event], prefix: str
    ) -> list[bus_pb2.EnrichedEvent]:
        api_key = credential(context)
        if not api_key:
            raise unauthenticated()
        received_at = datetime.now(UTC)
        enriched: list[bus_pb2.EnrichedEvent] = []
        violations: list[FieldViolation] = []
        for index, event in enumerate(events):
            result, problems = validate_event(event, prefix.format(index), received_at, self._limits)
            violations.extend(problems)
            if result is not None:
                enriched.append(result)
        if violations:
            raise ServiceError.invalid(violations)
        for site_id in sorted({event.site_id for event in events}):
            principal = await self._auth.authenticate(api_key, site_id)
            principal.require(auth_pb2.SCOPE_INGEST)
        try:
            await self._publisher.publish(enriched)
        except PublishError as error:
            raise unavailable(str(error)) from None
        return enriched
