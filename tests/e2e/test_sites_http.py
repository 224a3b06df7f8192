"""Sites through the HTTP edge: domain and time zone at creation, list, get, update, and key listing."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import pytest

from analytics_testing.stack import ServiceStack

pytestmark = pytest.mark.e2e


def admin(stack: ServiceStack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.admin_token}"}


async def json_of(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_sites_round_trip_over_http(http: aiohttp.ClientSession, stack: ServiceStack) -> None:
    domain = f"shop-{uuid.uuid4().hex[:8]}.example"
    async with http.post(
        "/api/site/create",
        json={"name": "Shop", "domain": domain.upper(), "timezone": "Asia/Kathmandu"},
        headers=admin(stack),
    ) as response:
        made = await json_of(response, 200)
    site_id, api_key = made["site_id"], made["api_key"]
    assert made["site"]["domain"] == domain
    assert made["site"]["timezone"] == "Asia/Kathmandu"

    async with http.get("/v1/sites", headers=admin(stack)) as response:
        listed = await json_of(response, 200)
    assert site_id in [s["site_id"] for s in listed["sites"]]
    async with http.get("/v1/sites", headers={"x-api-key": api_key}) as response:
        own = await json_of(response, 200)
    assert [s["site_id"] for s in own["sites"]] == [site_id]

    async with http.get(f"/v1/sites/{site_id}", headers={"x-api-key": api_key}) as response:
        got = await json_of(response, 200)
    assert got["site"] == made["site"]

    async with http.patch(
        f"/v1/sites/{site_id}", json={"timezone": "America/New_York"}, headers=admin(stack)
    ) as response:
        updated = await json_of(response, 200)
    assert updated["site"] == {**made["site"], "timezone": "America/New_York"}

    async with http.get(f"/v1/sites/{site_id}/keys", headers=admin(stack)) as response:
        keys = await json_of(response, 200)
    assert [k["key_id"] for k in keys["keys"]] == [made["key"]["key_id"]]
    assert api_key.split("_", 2)[2] not in str(keys)


async def test_site_errors_over_http(http: aiohttp.ClientSession, stack: ServiceStack) -> None:
    async with http.post(
        "/v1/sites", json={"name": "x", "timezone": "Mars/Base"}, headers=admin(stack)
    ) as response:
        body = await json_of(response, 400)
    assert body["code"] == 3 and "timezone" in body["message"] and "Mars/Base" in body["message"]

    domain = f"taken-{uuid.uuid4().hex[:8]}.example"
    async with http.post("/v1/sites", json={"name": "a", "domain": domain}, headers=admin(stack)) as response:
        made = await json_of(response, 200)
    async with http.post("/v1/sites", json={"name": "b", "domain": domain}, headers=admin(stack)) as response:
        body = await json_of(response, 409)
    assert body["code"] == 6 and domain in body["message"]

    key = {"x-api-key": made["api_key"]}
    async with http.patch(f"/v1/sites/{made['site_id']}", json={"name": "mine"}, headers=key) as response:
        body = await json_of(response, 403)
    assert body["code"] == 7
    async with http.get(f"/v1/sites/{made['site_id']}/keys", headers=key) as response:
        await json_of(response, 403)
    async with http.get(f"/v1/sites/{uuid.uuid4()}", headers=admin(stack)) as response:
        body = await json_of(response, 404)
    assert body["code"] == 5
    async with http.get("/v1/sites") as response:
        body = await json_of(response, 401)
    assert body["code"] == 16
