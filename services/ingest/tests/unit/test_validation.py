"""Validation and enrichment of single events: every rule reports the field it concerns."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from analytics.v1 import bus_pb2, events_pb2
from ingest_service.validation import Limits, parse_timestamp, referrer_host, validate_event

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SITE = str(uuid.uuid4())
LIMITS = Limits()


def check(**fields: object) -> tuple[bus_pb2.EnrichedEvent | None, dict[str, str]]:
    base: dict[str, object] = {"site_id": SITE, "event_type": "pageview", "path": "/"}
    base.update(fields)
    event = events_pb2.Event(**{k: v for k, v in base.items() if v is not None})  # type: ignore[arg-type]
    enriched, violations = validate_event(event, "event.", NOW, LIMITS)
    return enriched, {v.field: v.description for v in violations}


def test_minimal_pageview_is_enriched() -> None:
    enriched, errors = check(user_id="alice")
    assert errors == {}
    assert enriched is not None
    assert enriched.kind == bus_pb2.EVENT_KIND_PAGEVIEW
    assert enriched.name == "pageview"
    assert uuid.UUID(bytes=enriched.site_id) == uuid.UUID(SITE)
    assert uuid.UUID(bytes=enriched.event_id).version == 4
    assert enriched.occurred_at.ToDatetime(UTC) == NOW
    assert enriched.received_at.ToDatetime(UTC) == NOW
    assert enriched.user_id == "alice"


@pytest.mark.parametrize("alias", ["pageview", "page_view", "PageView", "PAGE_VIEW"])
def test_pageview_aliases(alias: str) -> None:
    enriched, errors = check(event_type=alias)
    assert errors == {}
    assert (
        enriched is not None and enriched.kind == bus_pb2.EVENT_KIND_PAGEVIEW and enriched.name == "pageview"
    )


def test_custom_event_keeps_its_name() -> None:
    enriched, _ = check(event_type="signup", properties={"plan": "pro"})
    assert enriched is not None
    assert enriched.kind == bus_pb2.EVENT_KIND_CUSTOM
    assert enriched.name == "signup"
    assert dict(enriched.properties) == {"plan": "pro"}


@pytest.mark.parametrize(
    ("fields", "field", "text"),
    [
        ({"site_id": ""}, "event.site_id", "is required"),
        ({"site_id": "site-1"}, "event.site_id", "must be a UUID"),
        ({"event_type": ""}, "event.event_type", "is required"),
        ({"event_type": "x" * 101}, "event.event_type", "at most 100"),
        ({"path": ""}, "event.path", "is required"),
        ({"path": "home"}, "event.path", "must start with /"),
        ({"path": "/" + "a" * 2048}, "event.path", "at most 2048"),
        ({"path": "/a\nb"}, "event.path", "control characters"),
        ({"url": "ftp://x/y"}, "event.url", "absolute http(s) URL"),
        ({"user_id": "u" * 257}, "event.user_id", "at most 256"),
        ({"title": "t" * 1025}, "event.title", "at most 1024"),
        ({"event_id": "123"}, "event.event_id", "must be a UUID"),
        ({"timestamp": "yesterday"}, "event.timestamp", "ISO-8601"),
        ({"timestamp": "2024-13-01T00:00:00Z"}, "event.timestamp", "ISO-8601"),
        ({"timestamp": "2024-05-01T12:06:00Z"}, "event.timestamp", "in the future"),
        ({"screen_width": 100_001}, "event.screen_width", "at most 100000"),
        ({"properties": {f"k{i}": "v" for i in range(65)}}, "event.properties", "at most 64"),
        ({"properties": {"k": "v" * 1025}}, "event.properties['k']", "at most 1024"),
        ({"properties": {"": "v"}}, "event.properties['']", "key must be"),
    ],
)
def test_bad_fields_are_named(fields: dict[str, object], field: str, text: str) -> None:
    enriched, errors = check(**fields)
    assert enriched is None
    assert field in errors, errors
    assert text in errors[field]


def test_every_problem_is_reported_at_once() -> None:
    _, errors = check(site_id="", event_type="", path="x", timestamp="nope")
    assert set(errors) == {"event.site_id", "event.event_type", "event.path", "event.timestamp"}


def test_timestamps() -> None:
    assert parse_timestamp("2024-05-01T10:00:00Z") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert parse_timestamp("2024-05-01T12:00:00+02:00") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert parse_timestamp("2024-05-01T10:00:00") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert parse_timestamp("2024-05-01") == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_timestamp("") is None
    assert parse_timestamp("1714557600") is None


def test_past_timestamps_are_kept_and_small_skew_accepted() -> None:
    enriched, errors = check(timestamp="2020-02-29T08:30:00Z")
    assert errors == {} and enriched is not None
    assert enriched.occurred_at.ToDatetime(UTC) == datetime(2020, 2, 29, 8, 30, tzinfo=UTC)
    skewed = (NOW + timedelta(minutes=4)).isoformat()
    enriched, errors = check(timestamp=skewed)
    assert errors == {} and enriched is not None


def test_client_event_id_is_kept() -> None:
    event_id = uuid.uuid4()
    enriched, _ = check(event_id=str(event_id))
    assert enriched is not None and uuid.UUID(bytes=enriched.event_id) == event_id


def test_path_derived_from_url_and_utm_read() -> None:
    enriched, errors = check(
        path="", url="https://shop.example/p/1?utm_source=news&utm_medium=email&utm_campaign=spring&x=1"
    )
    assert errors == {} and enriched is not None
    assert enriched.path == "/p/1"
    assert (enriched.utm_source, enriched.utm_medium, enriched.utm_campaign) == ("news", "email", "spring")


def test_referrer_host() -> None:
    assert referrer_host("https://www.Google.com/search?q=x") == "google.com"
    assert referrer_host("") == ""
    assert referrer_host("not a url") == ""
