"""Seed 002's POST /api/v1/events through a real ingest server and stub: one event or a batch in
that shape becomes the events IngestService would publish, a client id deduplicates, and refusals
name that shape's fields."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from analytics.v1 import auth_pb2, event_api_pb2
from ingest_service.event_api import event_id_of

from .conftest import ADMIN_MD, Harness

pytestmark = pytest.mark.integration


def request(events: list[dict[str, Any]], **fields: str) -> event_api_pb2.TrackEventsRequest:
    return json_format.ParseDict({"events": events, **fields}, event_api_pb2.TrackEventsRequest())


async def test_seed_events_become_ingest_events(harness: Harness) -> None:
    assert harness.event_api is not None
    site = await harness.new_site()
    md = (("x-api-key", site.api_key),)
    answer = await harness.event_api.TrackEvents(
        request(
            [
                {
                    "userId": "user123",
                    "eventName": "page_view",
                    "timestamp": "2024-01-01T10:00:00Z",
                    "properties": {
                        "pageUrl": "https://shop.example/home?utm_source=news",
                        "referrer": "https://google.com/",
                    },
                },
                {
                    "userId": "user123",
                    "eventName": "button_click",
                    "timestamp": "2024-01-01T10:01:00Z",
                    "eventId": "click-1",
                    "properties": {
                        "button": "buy",
                        "price": 12,
                        "ratio": 0.5,
                        "ok": True,
                        "tags": ["a"],
                        "none": None,
                    },
                },
                {"userId": "user123", "eventName": "signup", "pageUrl": "/welcome"},
            ]
        ),
        metadata=md,
    )
    assert answer.accepted == 3
    assert answer.event_ids[1] == event_id_of(site.site_id, "click-1")
    view, click, signup = await harness.stored_events()
    assert (view.kind, view.name, view.path, view.url, view.user_id) == (
        1,
        "pageview",
        "/home",
        "https://shop.example/home?utm_source=news",
        "user123",
    )
    assert (view.referrer_host, view.utm_source) == ("google.com", "news")
    assert view.occurred_at.ToJsonString() == "2024-01-01T10:00:00Z"
    assert (click.kind, click.name, click.path) == (2, "button_click", "/")
    assert dict(click.properties) == {
        "button": "buy",
        "price": "12",
        "ratio": "0.5",
        "ok": "true",
        "tags": '["a"]',
        "none": "",
    }
    assert (signup.name, signup.path) == ("signup", "/welcome")
    assert uuid.UUID(bytes=click.event_id) == uuid.UUID(answer.event_ids[1])

    # The same client id again is the same event id: the processor stores it once.
    again = await harness.event_api.TrackEvents(
        request([{"userId": "user123", "eventName": "button_click", "eventId": "click-1"}]), metadata=md
    )
    assert list(again.event_ids) == [answer.event_ids[1]]
    other = await harness.new_site()
    elsewhere = await harness.event_api.TrackEvents(
        request([{"userId": "u", "eventName": "button_click", "eventId": "click-1"}]),
        metadata=(("x-api-key", other.api_key),),
    )
    assert elsewhere.event_ids[0] != answer.event_ids[1]  # ids are per site


@pytest.mark.parametrize(
    ("events", "fields"),
    [
        ([{"eventName": "x"}], ["userId"]),
        ([{"userId": "u"}], ["eventName"]),
        ([{"userId": "u", "eventName": "x", "timestamp": "yesterday"}], ["timestamp"]),
        ([{"userId": "u", "eventName": "x", "properties": {"pageUrl": "ftp://x"}}], ["properties.pageUrl"]),
        ([{"userId": "u", "eventName": "x", "properties": {"pageUrl": 3}}], ["properties.pageUrl"]),
        ([{"userId": "u", "eventName": "x", "properties": {"k": "v" * 2000}}], ["properties.k"]),
        ([{"userId": "u", "eventName": "x"}, {"userId": "u"}], ["[1].eventName"]),
        (
            [{"userId": "u" * 300, "eventName": "x"}, {"eventName": "y" * 200, "userId": "u"}],
            ["[0].userId", "[1].eventName"],
        ),
        ([], ["events"]),
        ([{"userId": "u", "eventName": "x"}] * 1001, ["events"]),
    ],
)
async def test_refusals_name_the_seed_fields(
    harness: Harness, events: list[dict[str, Any]], fields: list[str]
) -> None:
    assert harness.event_api is not None
    site = await harness.new_site()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.event_api.TrackEvents(request(events), metadata=(("x-api-key", site.api_key),))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    named = [part.split(":")[0] for part in caught.value.details().split("; ")]
    assert named == fields, caught.value.details()


async def test_the_site_is_the_keys_own(harness: Harness) -> None:
    assert harness.event_api is not None
    site = await harness.new_site()
    other = await harness.new_site()
    one = [{"userId": "u", "eventName": "x"}]
    with pytest.raises(grpc.aio.AioRpcError) as elsewhere:
        await harness.event_api.TrackEvents(
            request(one, site_id=other.site_id), metadata=(("x-api-key", site.api_key),)
        )
    assert elsewhere.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as admin:
        await harness.event_api.TrackEvents(request(one), metadata=ADMIN_MD)
    assert admin.value.code() == grpc.StatusCode.INVALID_ARGUMENT and admin.value.details().startswith(
        "site_id"
    )
    ok = await harness.event_api.TrackEvents(request(one, site_id=site.site_id), metadata=ADMIN_MD)
    assert ok.accepted == 1
    read_only = await harness.auth.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(site_id=site.site_id, scopes=[auth_pb2.SCOPE_READ]), metadata=ADMIN_MD
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await harness.event_api.TrackEvents(request(one), metadata=(("x-api-key", read_only.api_key),))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
