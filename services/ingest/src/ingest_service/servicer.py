"""IngestService servicer: authenticate, validate, limit, enrich, then wait for the durable queue."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, date, datetime

import grpc

from analytics.v1 import auth_pb2, bus_pb2, events_pb2, ingest_pb2, ingest_pb2_grpc
from analytics_grpc.auth_client import AuthClient, Principal
from analytics_grpc.errors import (
    ErrorInfo,
    FieldViolation,
    ServiceError,
    permission_denied,
    unauthenticated,
    unavailable,
)
from analytics_grpc.metadata import Context, credential_in, metadata_map
from ingest_service import metrics
from ingest_service.enrich.client import ClientResolver
from ingest_service.enrich.request import RequestInfo, enrich
from ingest_service.identity import IdentitySecretCache
from ingest_service.publisher import GroupCommitPublisher, PublishError
from ingest_service.ratelimit import RateLimiter
from ingest_service.salts import SaltCache
from ingest_service.settings import MAX_BATCH_EVENTS
from ingest_service.validation import Limits, RequestClock, uuid_text, validate_event


def utc_now() -> datetime:
    return datetime.now(UTC)


# Up to this many event ids travel with an unacknowledged request's error (about 40 bytes each in
# the gRPC trailers; clients refuse trailers over 8-16 KiB). A larger batch is retried with the
# ids its client sent, which is why batch clients should send them.
MAX_IDS_IN_ERROR = 100


def not_acknowledged(message: str, events: list[bus_pb2.EnrichedEvent]) -> ServiceError:
    """UNAVAILABLE with the request's event ids in google.rpc.ErrorInfo: the events may be stored
    after all, and a retry that sends them with these ids is stored once."""
    metadata: tuple[tuple[str, str], ...] = ()
    if len(events) <= MAX_IDS_IN_ERROR:
        metadata = (("event_ids", ",".join(uuid_text(event.event_id) for event in events)),)
    return ServiceError(
        grpc.StatusCode.UNAVAILABLE,
        f"{message}; the events may have been stored: retry with the same event ids",
        info=ErrorInfo("EVENTS_NOT_ACKNOWLEDGED", metadata),
    )


async def enrich_events(
    events: list[bus_pb2.EnrichedEvent],
    info: RequestInfo,
    day: date,
    salts: SaltCache,
    identity_secrets: IdentitySecretCache,
) -> None:
    """Enriches validated events in place, with the visitor-id keys they need (fetched, cached)."""
    # Each key only when an event needs it: all-identified requests keep working while the day's
    # salt cannot be fetched, anonymous ones while a new site's secret cannot.
    anonymous = False
    identified_sites: set[bytes] = set()
    for item in events:
        if item.user_id:
            identified_sites.add(item.site_id)
        else:
            anonymous = True
    salt = await salts.salt_for(day) if anonymous and info.client_ip else b""
    secrets = await identity_secrets.secrets_for(identified_sites) if identified_sites else {}
    for item in events:
        enrich(item, info, salt, secrets)


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(
        self,
        auth: AuthClient,
        publisher: GroupCommitPublisher,
        limits: Limits,
        is_healthy: Callable[[], bool],
        *,
        salts: SaltCache,
        identity_secrets: IdentitySecretCache,
        clients: ClientResolver,
        rate_limiter: RateLimiter,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._auth = auth
        self._publisher = publisher
        self._limits = limits
        self._is_healthy = is_healthy
        self._salts = salts
        self._identity_secrets = identity_secrets
        self._clients = clients
        self._rate_limiter = rate_limiter
        # The receive time; tests move it across midnight without waiting for one.
        self._clock = clock

    async def Track(self, request: ingest_pb2.TrackRequest, context: Context) -> ingest_pb2.TrackResponse:
        (event,) = await self._accept(context, [request.event], lambda _: "event.")
        return ingest_pb2.TrackResponse(event_id=uuid_text(event.event_id))

    async def TrackBatch(
        self, request: ingest_pb2.TrackBatchRequest, context: Context
    ) -> ingest_pb2.TrackBatchResponse:
        if not request.events:
            raise ServiceError.field("events", "must contain at least one event")
        if len(request.events) > MAX_BATCH_EVENTS:
            raise ServiceError.field("events", f"must contain at most {MAX_BATCH_EVENTS} events")
        events = await self._accept(context, list(request.events), lambda i: f"events[{i}].")
        return ingest_pb2.TrackBatchResponse(
            accepted=len(events), event_ids=[uuid_text(e.event_id) for e in events]
        )

    async def TrackStream(
        self, request_iterator: AsyncIterator[ingest_pb2.TrackStreamRequest], context: Context
    ) -> ingest_pb2.TrackStreamResponse:
        accepted = 0
        pending: list[events_pb2.Event] = []

        async def flush() -> None:
            nonlocal accepted
            first = accepted
            try:
                await self._accept(context, pending, lambda i: f"events[{first + i}].")
            except ServiceError as error:
                error.message = f"{error.message} ({accepted} events before it were accepted)"
                raise
            accepted += len(pending)
            pending.clear()

        async for message in request_iterator:
            pending.extend(message.events)
            while len(pending) >= MAX_BATCH_EVENTS:
                rest = pending[MAX_BATCH_EVENTS:]
                del pending[MAX_BATCH_EVENTS:]
                await flush()
                pending.extend(rest)
        if pending:
            await flush()
        return ingest_pb2.TrackStreamResponse(accepted=accepted)

    async def GetHealth(
        self, request: ingest_pb2.GetHealthRequest, context: Context
    ) -> ingest_pb2.GetHealthResponse:
        if not self._is_healthy():
            raise unavailable("event queue unreachable")
        return ingest_pb2.GetHealthResponse(status="ok")

    def _request_info(self, context: Context, metadata: Mapping[str, str]) -> RequestInfo:
        address, proxied = self._clients.resolve(context.peer(), metadata.get("x-forwarded-for"))
        user_agent = metadata.get("user-agent") or ""
        country = ""
        if proxied:
            # Only a trusted proxy's word is taken for the browser's user agent and country. Envoy
            # passes the browser's user-agent through; a gRPC relay cannot set user-agent per call
            # (grpc-core owns it), so it names the browser's in x-forwarded-user-agent.
            user_agent = metadata.get("x-forwarded-user-agent") or user_agent
            if self._clients.country_header:
                country = self._clients.country(metadata.get(self._clients.country_header))
        return RequestInfo(
            client_ip=str(address) if address is not None else "",
            user_agent=user_agent,
            country=country,
            origin=metadata.get("origin") or "",
        )

    def _admit(self, principal: Principal, info: RequestInfo, cost: int) -> None:
        principal.require(auth_pb2.SCOPE_INGEST)
        if principal.is_admin:
            return
        if principal.allowed_origins and info.origin and info.origin not in principal.allowed_origins:
            raise permission_denied(f"origin {info.origin[:100]} is not allowed for this api key")
        wait_s = self._rate_limiter.take(
            principal.key_id, cost, principal.rate_limit_per_second, principal.rate_limit_burst
        )
        if wait_s is not None:
            raise ServiceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "rate limit of this api key exceeded, retry later",
                retry_after_s=wait_s,
            )

    async def accept(
        self, context: Context, events: list[events_pb2.Event], prefix: Callable[[int], str]
    ) -> list[bus_pb2.EnrichedEvent]:
        """Validates, enriches and durably queues events: what every ingest route does."""
        return await self._accept(context, events, prefix)

    async def _accept(
        self, context: Context, events: list[events_pb2.Event], prefix: Callable[[int], str]
    ) -> list[bus_pb2.EnrichedEvent]:
        try:
            enriched = await self._enqueue(context, events, prefix)
        except ServiceError as error:
            metrics.rejected(error.code, len(events))
            raise
        metrics.EVENTS_ACCEPTED.inc(len(enriched))
        return enriched

    async def _enqueue(
        self, context: Context, events: list[events_pb2.Event], prefix: Callable[[int], str]
    ) -> list[bus_pb2.EnrichedEvent]:
        metadata = metadata_map(context)
        api_key = credential_in(metadata)
        if not api_key:
            raise unauthenticated()
        received_at = self._clock()
        clock = RequestClock(received_at)
        enriched: list[bus_pb2.EnrichedEvent] = []
        violations: list[FieldViolation] = []
        for index, event in enumerate(events):
            result, problems = validate_event(event, prefix(index), clock, self._limits)
            violations.extend(problems)
            if result is not None:
                enriched.append(result)
        if violations:
            raise ServiceError.invalid(violations)
        info = self._request_info(context, metadata)
        sites = sorted({event.site_id for event in events})
        for site_id in sites:
            principal = await self._auth.authenticate(api_key, site_id)
            self._admit(principal, info, sum(1 for e in events if e.site_id == site_id))
        await enrich_events(enriched, info, received_at.date(), self._salts, self._identity_secrets)
        try:
            await self._publisher.publish(enriched)
        except PublishError as error:
            raise not_acknowledged(str(error), enriched) from None
        return enriched
