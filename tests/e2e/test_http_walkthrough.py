"""The README walkthrough and every kind of bad input, through the HTTP edge, against the real stack."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import psycopg
import pytest

from analytics_config.grpc_runtime import DEFAULT_EXPERIMENTS
from analytics_testing.stack import ServiceStack

pytestmark = pytest.mark.e2e

TODAY = datetime.now(UTC).date().isoformat()


async def create_site(http: aiohttp.ClientSession, stack: ServiceStack, name: str = "Shop") -> dict[str, Any]:
    async with http.post(
        "/api/site/create", json={"name": name}, headers={"Authorization": f"Bearer {stack.admin_token}"}
    ) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
    return body


async def stats_when(
    http: aiohttp.ClientSession,
    site: dict[str, Any],
    expected_views: int,
    *,
    path: str = "/api/stats",
    **params: str,
) -> dict[str, Any]:
    """Polls until the day's page views reach ``expected_views`` (the pipeline is asynchronous)."""
    body: dict[str, Any] = {}
    for _ in range(150):
        async with http.get(
            path, params={"site_id": site["site_id"], **params}, headers={"x-api-key": site["api_key"]}
        ) as response:
            assert response.status == 200, await response.text()
            body = await response.json()
        if body["total_views"] >= expected_views:
            return body
        await asyncio.sleep(0.1)
    pytest.fail(f"stats never reached {expected_views} views: {body}")


async def send(
    http: aiohttp.ClientSession, site: dict[str, Any], route: str = "/api/event", **event: Any
) -> Any:
    payload = {"site_id": site["site_id"], "event_type": "pageview", "path": "/", **event}
    async with http.post(route, json=payload, headers={"x-api-key": site["api_key"]}) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def error(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body: dict[str, Any] = await response.json()
    assert isinstance(body["code"], int) and body["message"]
    return body


def fields(body: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for detail in body.get("details", []):
        for violation in detail.get("field_violations", []):
            found[violation["field"]] = violation["description"]
    return found


async def test_walkthrough_counts_exactly(http: aiohttp.ClientSession, stack: ServiceStack) -> None:
    site = await create_site(http, stack)
    assert uuid.UUID(site["site_id"]) and site["api_key"].startswith("ak_")

    visits = [("/", "alice"), ("/pricing", "alice"), ("/", "bob"), ("/docs", "carol"), ("/", "alice")]
    for path, user in visits:
        reply = await send(http, site, "/api/event", path=path, user_id=user)
        assert uuid.UUID(reply["event_id"])
    await send(http, site, "/event", path="/pricing", user_id="dave", event_type="page_view")
    await send(http, site, path="/signup", event_type="signup", user_id="erin")  # custom: not a page view
    await send(http, site, path="/old", timestamp="2020-01-01T10:00:00Z")  # another day

    body = await stats_when(http, site, 6, date=TODAY)
    assert body == {
        "site_id": site["site_id"],
        "date": TODAY,
        "total_views": 6,
        "unique_users": 4,
        "top_paths": [
            {"path": "/", "views": 3},
            {"path": "/pricing", "views": 2},
            {"path": "/docs", "views": 1},
        ],
    }
    # Today is the default day; /stats and the v1 route give the same answer; limit narrows the list.
    assert await stats_when(http, site, 6, path="/stats") == body
    limited = await stats_when(http, site, 6, limit="1")
    assert limited["top_paths"] == [{"path": "/", "views": 3}]
    async with http.get(
        f"/v1/sites/{site['site_id']}/stats/daily",
        params={"date": TODAY},
        headers={"x-api-key": site["api_key"]},
    ) as response:
        assert await response.json() == body
    old = await stats_when(http, site, 1, date="2020-01-01")
    assert old["top_paths"] == [{"path": "/old", "views": 1}]


async def test_batch_routes_and_idempotent_event_ids(
    http: aiohttp.ClientSession, stack: ServiceStack
) -> None:
    site = await create_site(http, stack)
    headers = {"x-api-key": site["api_key"]}
    event_id = str(uuid.uuid4())
    events = [
        {"site_id": site["site_id"], "event_type": "pageview", "path": f"/b{i}", "userId": f"u{i}"}
        for i in range(3)
    ]
    async with http.post("/v1/events:batch", json={"events": events}, headers=headers) as response:
        assert response.status == 200, await response.text()
        reply = await response.json()
    assert reply["accepted"] == 3 and len(reply["event_ids"]) == 3
    repeat = {"site_id": site["site_id"], "event_type": "pageview", "path": "/same", "event_id": event_id}
    for _ in range(2):  # a client retry with the same event_id counts once
        async with http.post("/api/events/batch", json=[repeat], headers=headers) as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["event_ids"] == [event_id]
    body = await stats_when(http, site, 4)
    await asyncio.sleep(0.5)  # give a wrongly duplicated event time to show up
    body = await stats_when(http, site, 4)
    assert body["total_views"] == 4
    assert body["unique_users"] == 3


async def test_one_event_id_counts_once_whatever_time_its_copies_carry(
    http: aiohttp.ClientSession, stack: ServiceStack
) -> None:
    site = await create_site(http, stack)
    headers = {"x-api-key": site["api_key"]}
    event_id = str(uuid.uuid4())
    first = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    copy = {"site_id": site["site_id"], "event_type": "pageview", "path": "/once", "event_id": event_id}
    for timestamp in (first.isoformat(), (first + timedelta(hours=1)).isoformat(), None, None):
        event = copy if timestamp is None else {**copy, "timestamp": timestamp}
        async with http.post("/api/event", json=event, headers=headers) as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["event_id"] == event_id
    await stats_when(http, site, 1)
    await asyncio.sleep(0.5)  # give a wrongly duplicated event time to show up
    assert (await stats_when(http, site, 1))["total_views"] == 1
    async with await psycopg.AsyncConnection.connect(stack.database_url) as conn:
        cur = await conn.execute(
            "SELECT count(*), min(time) FROM analytics.events WHERE site_id = %s", (site["site_id"],)
        )
        # The first copy stored wins.
        assert await cur.fetchone() == (1, first)


async def test_health(http: aiohttp.ClientSession) -> None:
    for path in ("/health", "/api/health", "/v1/health"):
        async with http.get(path) as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}


def test_every_service_names_its_loop_and_grpc_engine_in_its_start_up_line(stack: ServiceStack) -> None:
    """The stack sets no ANALYTICS_EVENT_LOOP, so every service reports the default loop."""
    services = {name: process for name, process in stack.processes.items() if name != "edge"}
    started = {}
    for name, process in services.items():
        lines = [
            json.loads(line) for line in process.log_path.read_text().splitlines() if '"serving"' in line
        ]
        started[name] = [(line.get("loop"), line.get("grpc_experiments")) for line in lines]
    assert started == {name: [("uvloop", DEFAULT_EXPERIMENTS)] for name in services}, started


async def test_bad_input_gets_specific_errors_and_nothing_is_written(
    http: aiohttp.ClientSession, stack: ServiceStack
) -> None:
    site = await create_site(http, stack)
    other = await create_site(http, stack, "Other")
    key = {"x-api-key": site["api_key"]}
    good = {"site_id": site["site_id"], "event_type": "pageview", "path": "/"}

    async with http.post(
        "/api/event", data=b'{"site_id": ', headers={**key, "content-type": "application/json"}
    ) as r:
        await error(r, 400)
    async with http.post("/api/event", json={**good, "screen_width": "wide"}, headers=key) as r:
        assert "screen_width" in (await error(r, 400))["message"]
    async with http.post("/api/event", json={**good, "path": 42}, headers=key) as r:
        assert "path" in (await error(r, 400))["message"]
    for missing in ("site_id", "path", "event_type"):
        payload = {k: v for k, v in good.items() if k != missing}
        async with http.post("/api/event", json=payload, headers=key) as r:
            assert fields(await error(r, 400)) == {f"event.{missing}": "is required"}
    async with http.post("/api/event", json={**good, "timestamp": "last tuesday"}, headers=key) as r:
        assert "event.timestamp" in fields(await error(r, 400))
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    async with http.post("/api/event", json={**good, "timestamp": future}, headers=key) as r:
        assert "in the future" in fields(await error(r, 400))["event.timestamp"]
    async with http.post("/api/event", json={**good, "path": "/" + "x" * 5000}, headers=key) as r:
        assert "at most 2048" in fields(await error(r, 400))["event.path"]
    async with http.post("/api/event", json={**good, "user_id": "u" * 300}, headers=key) as r:
        assert "event.user_id" in fields(await error(r, 400))
    huge = io.BytesIO(json.dumps({**good, "title": "t" * 3_000_000}).encode())
    async with http.post("/api/event", data=huge, headers={**key, "content-type": "application/json"}) as r:
        await error(r, 413)
    async with http.post("/v1/events:batch", json={"events": [good] * 1001}, headers=key) as r:
        assert fields(await error(r, 400)) == {"events": "must contain at most 1000 events"}
    async with http.post(
        "/v1/events:batch", json={"events": [good, {**good, "path": "nope"}]}, headers=key
    ) as r:
        assert fields(await error(r, 400)) == {"events[1].path": "must start with /"}
    async with http.post("/api/event", json={**good, "site_id": str(uuid.uuid4())}, headers=key) as r:
        await error(r, 404)
    async with http.post("/api/event", json={**good, "site_id": "not-a-uuid"}, headers=key) as r:
        assert fields(await error(r, 400)) == {"event.site_id": "must be a UUID"}
    async with http.post("/api/event", json=good) as r:
        await error(r, 401)
    async with http.post("/api/event", json=good, headers={"x-api-key": "ak_wrong_" + "x" * 40}) as r:
        await error(r, 401)
    async with http.post("/api/event", json={**good, "site_id": other["site_id"]}, headers=key) as r:
        await error(r, 403)
    async with http.get("/api/stats", params={"site_id": other["site_id"]}, headers=key) as r:
        await error(r, 403)
    async with http.get(
        "/api/stats", params={"site_id": site["site_id"], "date": "2024-02-30"}, headers=key
    ) as r:
        assert fields(await error(r, 400)) == {"date": "must be a date as YYYY-MM-DD"}
    for last in ("9999-12-31", "0001-01-01"):
        async with http.get(
            "/api/stats", params={"site_id": site["site_id"], "date": last}, headers=key
        ) as r:
            if last == "9999-12-31":
                assert fields(await error(r, 400)) == {"date": "must be before 9999-12-31"}
            else:
                assert r.status == 200, await r.text()
                assert (await r.json())["total_views"] == 0
    async with http.get("/api/stats", params={"site_id": site["site_id"]}) as r:
        await error(r, 401)
    async with http.get("/api/nothing-here") as r:
        await error(r, 404)
    async with http.post("/api/site/create", json={"name": "x"}, headers=key) as r:
        await error(r, 403)

    # Revoking a key locks it out at once (the stack runs with caching off).
    async with http.post(
        "/v1/keys/" + other["api_key"].split("_")[1] + ":revoke",
        json={},
        headers={"Authorization": f"Bearer {stack.admin_token}"},
    ) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["key"]["revoke_time"]
    async with http.post(
        "/api/event", json={**good, "site_id": other["site_id"]}, headers={"x-api-key": other["api_key"]}
    ) as r:
        await error(r, 401)

    # After all that, one good event goes through and is the only one counted.
    await send(http, site, path="/after")
    body = await stats_when(http, site, 1)
    await asyncio.sleep(0.5)
    body = await stats_when(http, site, 1)
    assert body["total_views"] == 1 and body["top_paths"] == [{"path": "/after", "views": 1}]
    assert all(process.running for process in stack.processes.values())


async def test_cors_preflight(http: aiohttp.ClientSession) -> None:
    async with http.options(
        "/api/event",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-api-key",
        },
    ) as response:
        assert response.status in (200, 204)
        assert response.headers["Access-Control-Allow-Origin"] in ("*", "https://shop.example")
        assert "x-api-key" in response.headers["Access-Control-Allow-Headers"].lower()


async def test_dead_letters_admin_route(http: aiohttp.ClientSession, stack: ServiceStack) -> None:
    site = await create_site(http, stack)
    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    async with http.get("/v1/admin/dead-letters", headers=admin) as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    assert body["dead_letters"] == [] and body["next_page_token"] == ""
    async with http.get("/v1/admin/dead-letters", headers={"x-api-key": site["api_key"]}) as r:
        await error(r, 403)
    async with http.get("/v1/admin/dead-letters") as r:
        await error(r, 401)
