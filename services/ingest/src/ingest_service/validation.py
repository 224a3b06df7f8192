"""Turns a client Event into an EnrichedEvent, or into field violations naming what is wrong."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

from analytics.v1 import bus_pb2, events_pb2
from analytics_grpc.errors import FieldViolation

PAGEVIEW = "pageview"
_PAGEVIEW_ALIASES = frozenset({"pageview", "page_view"})
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Limits:
    """Documented input limits (README: Event limits)."""

    max_future_skew: timedelta = timedelta(minutes=5)
    event_type: int = 100
    path: int = 2048
    url: int = 4096
    referrer: int = 4096
    title: int = 1024
    user_id: int = 256
    language: int = 35
    screen: int = 100_000
    properties: int = 64
    property_key: int = 128
    property_value: int = 1024


def _has_control(value: str) -> bool:
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in value)


class _Checker:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.violations: list[FieldViolation] = []

    def bad(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(f"{self.prefix}{field}", description))

    def text(self, field: str, value: str, limit: int) -> None:
        if len(value) > limit:
            self.bad(field, f"must be at most {limit} characters")
        elif _has_control(value):
            self.bad(field, "must not contain control characters")


def parse_timestamp(value: str) -> datetime | None:
    """ISO-8601 / RFC 3339; a time without an offset is UTC. None when it does not parse."""
    text = value.strip()
    if not text or len(text) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def referrer_host(referrer: str) -> str:
    if not referrer:
        return ""
    try:
        host = urlsplit(referrer).hostname or ""
    except ValueError:
        return ""
    return host.lower().removeprefix("www.")


def validate_event(
    event: events_pb2.Event, prefix: str, received_at: datetime, limits: Limits
) -> tuple[bus_pb2.EnrichedEvent | None, list[FieldViolation]]:
    """Checks every field (reporting all problems at once) and builds the enriched event."""
    check = _Checker(prefix)

    site_uuid: uuid.UUID | None = None
    if not event.site_id:
        check.bad("site_id", "is required")
    else:
        try:
            site_uuid = uuid.UUID(event.site_id)
        except ValueError:
            check.bad("site_id", "must be a UUID")

    event_type = event.event_type.strip()
    kind = bus_pb2.EVENT_KIND_CUSTOM
    if not event_type:
        check.bad("event_type", "is required")
    elif event_type.lower() in _PAGEVIEW_ALIASES:
        kind, event_type = bus_pb2.EVENT_KIND_PAGEVIEW, PAGEVIEW
    else:
        check.text("event_type", event_type, limits.event_type)

    url = event.url.strip()
    parts = None
    if url:
        check.text("url", url, limits.url)
        try:
            parts = urlsplit(url)
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            check.bad("url", "must be an absolute http(s) URL")
            parts = None

    path = event.path
    if not path and parts is not None:
        path = parts.path or "/"
    if not path:
        check.bad("path", "is required")
    elif not path.startswith("/"):
        check.bad("path", "must start with /")
    else:
        check.text("path", path, limits.path)

    check.text("referrer", event.referrer, limits.referrer)
    check.text("title", event.title, limits.title)
    check.text("user_id", event.user_id, limits.user_id)
    check.text("language", event.language, limits.language)
    if event.screen_width > limits.screen:
        check.bad("screen_width", f"must be at most {limits.screen}")
    if event.screen_height > limits.screen:
        check.bad("screen_height", f"must be at most {limits.screen}")

    event_uuid = None
    if event.event_id:
        try:
            event_uuid = uuid.UUID(event.event_id)
        except ValueError:
            check.bad("event_id", "must be a UUID")

    occurred_at = received_at
    if event.timestamp:
        parsed = parse_timestamp(event.timestamp)
        if parsed is None:
            check.bad("timestamp", "must be an ISO-8601 date-time, e.g. 2024-05-01T12:30:00Z")
        elif parsed > received_at + limits.max_future_skew:
            check.bad("timestamp", f"lies more than {int(limits.max_future_skew.total_seconds())} s in the future")
        elif parsed < _EARLIEST:
            check.bad("timestamp", "must not be before 1970-01-01")
        else:
            occurred_at = parsed

    if len(event.properties) > limits.properties:
        check.bad("properties", f"must have at most {limits.properties} entries")
    else:
        for key, value in sorted(event.properties.items()):
            if not key or len(key) > limits.property_key or _has_control(key):
                check.bad(f"properties[{key!r}]", f"key must be 1 to {limits.property_key} printable characters")
            elif len(value) > limits.property_value:
                check.bad(f"properties[{key!r}]", f"value must be at most {limits.property_value} characters")

    if check.violations or site_uuid is None:
        return None, check.violations

    enriched = bus_pb2.EnrichedEvent(
        event_id=(event_uuid or uuid.uuid4()).bytes,
        site_id=site_uuid.bytes,
        kind=kind,
        name=event_type,
        path=path,
        url=url,
        title=event.title,
        referrer=event.referrer,
        referrer_host=referrer_host(event.referrer),
        user_id=event.user_id,
        screen_width=event.screen_width,
        screen_height=event.screen_height,
        language=event.language,
        properties=dict(event.properties),
    )
    enriched.occurred_at.FromDatetime(occurred_at)
    enriched.received_at.FromDatetime(received_at)
    if parts is not None and parts.query:
        _utm(enriched, parts.query)
    return enriched, []


def _utm(enriched: bus_pb2.EnrichedEvent, query: str) -> None:
    for key, value in parse_qsl(query, keep_blank_values=False):
        if key in ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content") and not getattr(
            enriched, key
        ):
            setattr(enriched, key, value[:256])
