"""Seed 002's event route (POST /api/v1/events): its JSON shape turned into IngestService events
and taken by the same path (validation, limits, enrichment, group commit); refusals name the
fields as that shape does."""

from __future__ import annotations

import json
import re
import uuid

from google.protobuf import json_format, struct_pb2

from analytics.v1 import event_api_pb2, event_api_pb2_grpc, events_pb2
from analytics_grpc.auth_client import AuthClient
from analytics_grpc.errors import FieldViolation, ServiceError, unauthenticated
from analytics_grpc.metadata import Context, credential
from ingest_service.servicer import IngestServicer
from ingest_service.settings import MAX_BATCH_EVENTS
from ingest_service.validation import uuid_text

PAGE_URL = "pageUrl"
REFERRER = "referrer"
MAX_CLIENT_ID = 256
# Client ids that are not UUIDs name a UUID of their own, fixed per site and id, so that a retry is
# stored once by the processor's event-id claims, as an IngestService event_id is.
_CLIENT_IDS = uuid.UUID("3f0d6c2e-7a51-4b7e-9a43-5e2b7f1c9d20")
# IngestService's field names → this shape's.
_FIELDS = {
    "site_id": "site_id",
    "event_type": "eventName",
    "url": f"properties.{PAGE_URL}",
    "path": f"properties.{PAGE_URL}",
    "referrer": f"properties.{REFERRER}",
    "user_id": "userId",
    "event_id": "eventId",
    "timestamp": "timestamp",
    "properties": "properties",
}
_PROPERTY = re.compile(r"properties\[(['\"])(.*)\1\]")


def event_id_of(site_id: str, client_id: str) -> str:
    """The stored event's id: the client's UUID, or a UUID fixed by the site and the client id."""
    try:
        return str(uuid.UUID(client_id))
    except ValueError:
        return str(uuid.uuid5(_CLIENT_IDS, f"{site_id}\n{client_id}"))


def _text(value: struct_pb2.Value) -> str:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value" and value.number_value.is_integer() and abs(value.number_value) < 2**53:
        return str(int(value.number_value))
    if kind == "null_value":
        return ""
    return json.dumps(json_format.MessageToDict(value), separators=(",", ":"), ensure_ascii=False)


def to_event(site_id: str, given: event_api_pb2.ProductEvent, prefix: str) -> events_pb2.Event:
    """The IngestService event for one of this shape (checked for what only this shape requires)."""
    problems: list[FieldViolation] = []
    if not given.user_id:
        problems.append(FieldViolation(f"{prefix}userId", "is required"))
    if not given.event_name:
        problems.append(FieldViolation(f"{prefix}eventName", "is required"))
    if len(given.event_id) > MAX_CLIENT_ID:
        problems.append(FieldViolation(f"{prefix}eventId", f"must be at most {MAX_CLIENT_ID} characters"))
    properties = dict(given.properties.fields)
    page = properties.pop(PAGE_URL, None)
    referrer = properties.pop(REFERRER, None)
    for name, value in ((PAGE_URL, page), (REFERRER, referrer)):
        if value is not None and value.WhichOneof("kind") not in ("string_value", "null_value"):
            problems.append(FieldViolation(f"{prefix}properties.{name}", "must be a string"))
    if problems:
        raise ServiceError.invalid(problems)
    page_url = (page.string_value if page is not None else "") or given.page_url
    event = events_pb2.Event(
        site_id=site_id,
        event_type=given.event_name,
        user_id=given.user_id,
        timestamp=given.timestamp,
        referrer=referrer.string_value if referrer is not None else "",
        properties={key: _text(value) for key, value in properties.items()},
    )
    if page_url.startswith("/") or not page_url:
        # Events without a page (a click in an app) are counted on "/", which every page view
        # needs; their own page, when they have one, is theirs.
        event.path = page_url or "/"
    else:
        event.url = page_url
    if given.event_id:
        event.event_id = event_id_of(site_id, given.event_id)
    return event


def _renamed(field: str, prefix: str) -> str:
    rest = field.removeprefix(prefix)
    head, _, tail = rest.partition(".")
    match = _PROPERTY.fullmatch(rest)
    if match is not None:
        return f"{prefix}properties.{match.group(2)}"
    return f"{prefix}{_FIELDS.get(head, head)}{'.' + tail if tail else ''}"


def translate(error: ServiceError, prefixes: list[str]) -> ServiceError:
    """The refusal with IngestService's field names replaced by this shape's."""
    if not error.violations:
        return error
    renamed: dict[str, FieldViolation] = {}
    for violation in error.violations:
        prefix = next((p for p in prefixes if p and violation.field.startswith(p)), "")
        field = _renamed(violation.field, prefix)
        # url and path both come from pageUrl: its first problem says what is wrong with it.
        renamed.setdefault(field, FieldViolation(field, violation.description))
    return ServiceError.invalid(list(renamed.values()))


class EventApiServicer(event_api_pb2_grpc.EventApiServiceServicer):
    def __init__(self, ingest: IngestServicer, auth: AuthClient) -> None:
        self._ingest = ingest
        self._auth = auth

    async def _site(self, context: Context, site_id: str) -> str:
        if site_id:
            try:
                return str(uuid.UUID(site_id))
            except ValueError:
                raise ServiceError.field("site_id", f"must be a UUID, got {site_id[:80]!r}") from None
        api_key = credential(context)
        if not api_key:
            raise unauthenticated()
        principal = await self._auth.authenticate(api_key, "")
        if principal.is_admin:
            raise ServiceError.field("site_id", "is required with the admin token")
        return principal.site_id

    async def TrackEvents(
        self, request: event_api_pb2.TrackEventsRequest, context: Context
    ) -> event_api_pb2.TrackEventsResponse:
        if not request.events:
            raise ServiceError.field("events", "must hold one event or an array of at least one")
        if len(request.events) > MAX_BATCH_EVENTS:
            raise ServiceError.field("events", f"must hold at most {MAX_BATCH_EVENTS} events")
        site_id = await self._site(context, request.site_id)
        # One event names its fields plainly; an array's are [i].field.
        prefixes = [f"[{i}]." if len(request.events) > 1 else "" for i in range(len(request.events))]
        events: list[events_pb2.Event] = []
        problems: list[FieldViolation] = []
        for given, prefix in zip(request.events, prefixes, strict=True):
            try:
                events.append(to_event(site_id, given, prefix))
            except ServiceError as error:
                problems.extend(error.violations)
        if problems:
            raise ServiceError.invalid(problems)
        try:
            stored = await self._ingest.accept(context, events, lambda i: prefixes[i])
        except ServiceError as error:
            raise translate(error, prefixes) from None
        return event_api_pb2.TrackEventsResponse(
            accepted=len(stored), event_ids=[uuid_text(e.event_id) for e in stored]
        )
