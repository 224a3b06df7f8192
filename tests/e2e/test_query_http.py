"""The query API end to end: events sent over HTTP, stored by the processor, read back through the
typed Query (HTTP and gRPC) and the Plausible-compatible route."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import json_format

from analytics.v1 import query_pb2, query_pb2_grpc
from analytics_testing.stack import ServiceStack

pytestmark = pytest.mark.e2e

# Yesterday, so every event is in the past and the day is complete.
DAY = (datetime.now(UTC) - timedelta(days=1)).date()


async def create_site(http: aiohttp.ClientSession, stack: ServiceStack, **fields: str) -> dict[str, Any]:
    async with http.post(
        "/v1/sites", json={"name": "Shop", **fields}, headers={"Authorization": f"Bearer {stack.admin_token}"}
    ) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
    return body


async def send(http: aiohttp.ClientSession, site: dict[str, Any], events: list[dict[str, Any]]) -> None:
    payload = [{"site_id": site["site_id"], "event_type": "pageview", **event} for event in events]
    async with http.post(
        "/api/events/batch", json=payload, headers={"x-api-key": site["api_key"]}
    ) as response:
        assert response.status == 200, await response.text()


async def query_when(
    http: aiohttp.ClientSession, site: dict[str, Any], body: dict[str, Any], ready: Any
) -> dict[str, Any]:
    """Polls the typed query until ``ready(answer)``: storing is asynchronous."""
    answer: dict[str, Any] = {}
    for _ in range(150):
        async with http.post(
            f"/v1/sites/{site['site_id']}/query", json=body, headers={"x-api-key": site["api_key"]}
        ) as response:
            assert response.status == 200, await response.text()
            answer = await response.json()
        if ready(answer):
            return answer
        await asyncio.sleep(0.1)
    pytest.fail(f"the answer never became ready: {answer}")


def moment(hour: int, minute: int = 0) -> str:
    return datetime(DAY.year, DAY.month, DAY.day, hour, minute, tzinfo=UTC).isoformat()


async def test_typed_and_plausible_queries_over_http_and_grpc(
    http: aiohttp.ClientSession, stack: ServiceStack
) -> None:
    domain = f"e2e-{uuid.uuid4().hex[:8]}.example"
    site = await create_site(http, stack, domain=domain, timezone="UTC")
    await send(
        http,
        site,
        [
            {
                "path": "/",
                "user_id": "ann",
                "timestamp": moment(9),
                "url": f"https://{domain}/?utm_source=news",
            },
            {"path": "/pricing", "user_id": "ann", "timestamp": moment(9, 5)},
            {"path": "/", "user_id": "bob", "timestamp": moment(10), "referrer": "https://www.google.com/"},
            {
                "event_type": "signup",
                "path": "/pricing",
                "user_id": "bob",
                "timestamp": moment(10, 2),
                "properties": {"plan": "pro"},
            },
        ],
    )
    body = {
        "date_range": {"start": DAY.isoformat(), "end": DAY.isoformat()},
        "metrics": ["visitors", "visits", "pageviews", "events", "bounce_rate", "visit_duration"],
    }
    totals = await query_when(http, site, body, lambda a: a["results"][0]["metrics"][3] >= 4)
    assert totals["results"] == [{"dimensions": [], "metrics": [2, 2, 3, 4, 0, 210]}]
    assert totals["meta"]["timezone"] == "UTC"

    by_source = await query_when(
        http,
        site,
        {**body, "metrics": ["visitors"], "dimensions": ["visit:source", "visit:channel"]},
        lambda a: len(a["results"]) == 2,
    )
    assert by_source["results"] == [
        {"dimensions": ["google.com", "search"], "metrics": [1]},
        {"dimensions": ["news", "direct"], "metrics": [1]},
    ]

    # The same question over gRPC.
    async with grpc.aio.insecure_channel(stack.addresses["query"]) as channel:
        reply = await query_pb2_grpc.QueryServiceStub(channel).Query(
            json_format.ParseDict({"site_id": site["site_id"], **body}, query_pb2.QueryRequest()),
            metadata=(("x-api-key", site["api_key"]),),
        )
    assert [list(r.metrics) for r in reply.results] == [[2, 2, 3, 4, 0, 210]]

    # A Plausible client's request, as its documentation shows it.
    async with http.post(
        "/api/v2/query",
        json={
            "site_id": domain,
            "metrics": ["visitors", "pageviews"],
            "date_range": [DAY.isoformat(), DAY.isoformat()],
            "dimensions": ["event:page"],
            "filters": [["is", "event:name", ["pageview"]]],
            "include": {"total_rows": True},
        },
        headers={"Authorization": f"Bearer {site['api_key']}", "Content-Type": "application/json"},
    ) as response:
        assert response.status == 200, await response.text()
        plausible = await response.json()
    assert plausible["results"] == [
        {"dimensions": ["/"], "metrics": [2, 2]},
        {"dimensions": ["/pricing"], "metrics": [1, 1]},
    ]
    assert plausible["meta"] == {"total_rows": 2}
    assert plausible["query"]["site_id"] == domain
    async with http.post(
        "/api/v2/query",
        json={"site_id": domain, "metrics": ["visitors"], "date_range": "day"},
        headers={"Authorization": f"Bearer {site['api_key']}"},
    ) as response:
        assert response.status == 200, await response.text()
        assert set(await response.json()) == {"results", "meta", "query"}


async def test_query_errors_over_http(http: aiohttp.ClientSession, stack: ServiceStack) -> None:
    site = await create_site(http, stack)
    headers = {"x-api-key": site["api_key"]}
    async with http.post(
        f"/v1/sites/{site['site_id']}/query",
        json={"date_range": {"period": "fortnight"}, "metrics": ["visitors"]},
        headers=headers,
    ) as response:
        assert response.status == 400, await response.text()
        body = await response.json()
    assert (
        body["code"] == 3
        and body["message"].startswith("date_range.period: ")
        and "fortnight" in body["message"]
    )
    async with http.post(
        f"/v1/sites/{site['site_id']}/query", json={"date_range": {"period": "day"}, "metrics": ["visitors"]}
    ) as response:
        assert response.status == 401
    other = await create_site(http, stack)
    async with http.post(
        f"/v1/sites/{other['site_id']}/query",
        json={"date_range": {"period": "day"}, "metrics": ["visitors"]},
        headers=headers,
    ) as response:
        assert response.status == 403
    # The Plausible route refuses what it does not support with a 400 (its body is the edge's).
    async with http.post(
        "/api/v2/query",
        json={"site_id": site["site_id"], "metrics": ["scroll_depth"], "date_range": "7d"},
        headers={"Authorization": f"Bearer {site['api_key']}"},
    ) as response:
        assert response.status == 400
    async with http.post(
        "/api/v2/query",
        json={"site_id": "unknown.example", "metrics": ["visitors"], "date_range": "7d"},
        headers={"Authorization": f"Bearer {site['api_key']}"},
    ) as response:
        assert response.status == 404


async def test_seed_event_routes_over_http(http: aiohttp.ClientSession, stack: ServiceStack) -> None:
    site = await create_site(http, stack)
    await send(
        http,
        site,
        [
            {"event_type": "page_view", "path": "/", "user_id": "ann", "timestamp": moment(9)},
            {"event_type": "page_view", "path": "/a", "user_id": "bob", "timestamp": moment(10)},
            {"event_type": "button_click", "path": "/a", "user_id": "bob", "timestamp": moment(10, 1)},
        ],
    )
    headers = {"X-API-Key": site["api_key"]}
    params = {
        "event": "page_view",
        "interval": "daily",
        "startDate": DAY.isoformat(),
        "endDate": DAY.isoformat(),
    }
    metrics: dict[str, Any] = {}
    for _ in range(150):
        async with http.get("/api/v1/metrics", params=params, headers=headers) as response:
            assert response.status == 200, await response.text()
            metrics = await response.json()
        if metrics["data"][0]["count"] == "2":
            break
        await asyncio.sleep(0.1)
    # uint64 fields print as strings in proto3 JSON.
    assert metrics["data"] == [{"time": DAY.isoformat(), "count": "2", "unique_users": "2"}]
    assert metrics["interval"] == "daily" and metrics["site_id"] == site["site_id"]
    summary_params = {"startDate": DAY.isoformat(), "endDate": DAY.isoformat()}
    for _ in range(150):
        async with http.get("/api/v1/events/summary", params=summary_params, headers=headers) as response:
            assert response.status == 200, await response.text()
            summary = await response.json()
        if summary["total_events"] == "3":
            break
        await asyncio.sleep(0.1)
    assert summary["events"] == [
        {"event": "pageview", "count": "2", "unique_users": "2"},
        {"event": "button_click", "count": "1", "unique_users": "1"},
    ]
    async with http.get(
        "/api/v1/metrics", params={"event": "x", "interval": "yearly"}, headers=headers
    ) as response:
        assert response.status == 400
        body = await response.json()
    assert body["code"] == 3 and body["message"].startswith("interval: ")
