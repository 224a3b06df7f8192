"""Seed 002's POST /api/v1/events and GET /api/v1/users/{userId}/journey through Envoy: one event
object or an array, deduplicated on the client id, read back as the person's journey."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from analytics_testing.stack import ServiceStack

from .test_query_http import DAY, create_site, moment

pytestmark = pytest.mark.e2e


async def journey_when(
    http: aiohttp.ClientSession, site: dict[str, Any], user: str, events: int
) -> dict[str, Any]:
    answer: dict[str, Any] = {}
    for _ in range(150):
        async with http.get(
            f"/api/v1/users/{user}/journey",
            params={"startDate": DAY.isoformat(), "endDate": DAY.isoformat()},
            headers={"X-API-Key": site["api_key"]},
        ) as response:
            assert response.status == 200, await response.text()
            answer = await response.json()
        if sum(len(s["events"]) for s in answer["sessions"]) >= events:
            return answer
        await asyncio.sleep(0.1)
    pytest.fail(f"the journey never filled: {answer}")


async def test_seed_events_and_journey_through_the_edge(
    http: aiohttp.ClientSession, stack: ServiceStack
) -> None:
    site = await create_site(http, stack, timezone="UTC")
    headers = {"X-API-Key": site["api_key"]}
    one = {
        "userId": "user123",
        "eventName": "page_view",
        "timestamp": moment(9),
        "properties": {"pageUrl": "/home", "referrer": "google.com"},
    }
    async with http.post("/api/v1/events", json=one, headers=headers) as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["accepted"] == 1
    batch = [
        {
            "userId": "user123",
            "eventName": "add_to_cart",
            "timestamp": moment(9, 2),
            "eventId": "c-1",
            "properties": {"pageUrl": "/product/7", "sku": 7},
        },
        {"userId": "user123", "eventName": "purchase", "timestamp": moment(9, 4), "eventId": "p-1"},
    ]
    async with http.post("/api/v1/events", json=batch, headers=headers) as response:
        assert response.status == 200, await response.text()
        first = await response.json()
    # A retry with the same client ids is acknowledged and stored once.
    async with http.post("/api/v1/events", json=batch, headers=headers) as response:
        assert response.status == 200
        assert (await response.json())["event_ids"] == first["event_ids"]

    journey = await journey_when(http, site, "user123", 3)
    (visit,) = journey["sessions"]
    assert [(e["name"], e["path"]) for e in visit["events"]] == [
        ("pageview", "/home"),
        ("add_to_cart", "/product/7"),
        ("purchase", "/"),
    ]
    assert visit["events"][1]["properties"] == {"sku": "7"}
    assert journey["total_sessions"] == "1"

    async with http.post(
        "/api/v1/events", json=[{"eventName": "x"}, {"userId": "u"}], headers=headers
    ) as response:
        assert response.status == 400
        error = await response.json()
    assert [v["field"] for v in error["details"][0]["field_violations"]] == ["[0].userId", "[1].eventName"]
    async with http.get(
        "/api/v1/users/user123/journey", params={"startDate": "2024-01-05"}, headers=headers
    ) as response:
        assert response.status == 400
        assert (await response.json())["message"].startswith("end_date")
