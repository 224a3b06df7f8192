"""Goals, funnels and retention through the HTTP edge (Envoy) against the whole stack: the typed
routes, seed 002's routes with X-API-Key, conversion_rate on both query routes, and errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from analytics_testing.stack import ServiceStack

from .test_query_http import DAY, create_site, moment, send

pytestmark = pytest.mark.e2e


async def until(
    fetch: Callable[[], Awaitable[dict[str, Any]]], ready: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Polls ``fetch`` until ``ready``: events are stored asynchronously."""
    answer: dict[str, Any] = {}
    for _ in range(150):
        answer = await fetch()
        if ready(answer):
            return answer
        await asyncio.sleep(0.1)
    pytest.fail(f"the answer never became ready: {answer}")


async def call(
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    headers: dict[str, str],
    status: int = 200,
    **kwargs: Any,
) -> dict[str, Any]:
    async with http.request(method, path, headers=headers, **kwargs) as response:
        assert response.status == status, await response.text()
        body: dict[str, Any] = await response.json()
    return body


async def site_with_admin_key(
    http: aiohttp.ClientSession, stack: ServiceStack
) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """A new site, the headers of a key of it with SCOPE_ADMIN (seed 002's definition writes) and
    those of its first key (reads)."""
    site = await create_site(http, stack)
    admin_key = await call(
        http,
        "POST",
        f"/v1/sites/{site['site_id']}/keys",
        {"Authorization": f"Bearer {stack.admin_token}"},
        json={"scopes": ["SCOPE_READ", "SCOPE_ADMIN"]},
    )
    return site, {"X-API-Key": admin_key["api_key"]}, {"X-API-Key": site["api_key"]}


async def test_goals_and_conversion_rate_over_http(http: aiohttp.ClientSession, stack: ServiceStack) -> None:
    site = await create_site(http, stack, domain="goals.e2e.example")
    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    reader = {"x-api-key": site["api_key"]}
    goals = f"/v1/sites/{site['site_id']}/goals"
    signup = await call(http, "POST", goals, admin, json={"goal": {"event_name": "signup"}})
    pricing = await call(http, "POST", goals, admin, json={"goal": {"page_path": "/pricing/*"}})
    assert pricing["goal"]["display_name"] == "Visit /pricing/*"
    await call(http, "POST", goals, reader, status=403, json={"goal": {"event_name": "x"}})
    bad = await call(http, "POST", goals, admin, status=400, json={"goal": {"page_path": "pricing"}})
    assert bad["message"].startswith("goal.page_path: ")
    changed = await call(
        http,
        "PUT",
        f"{goals}/{pricing['goal']['goal_id']}",
        admin,
        json={"goal": {"page_path": "/pricing/**"}},
    )
    assert changed["goal"]["display_name"] == "Visit /pricing/**"
    listed = await call(http, "GET", goals, reader)
    assert [g["goal_id"] for g in listed["goals"]] == [signup["goal"]["goal_id"], pricing["goal"]["goal_id"]]

    await send(
        http,
        site,
        [
            {"path": "/pricing/pro/yearly", "user_id": "ann", "timestamp": moment(9)},
            {"event_type": "signup", "path": "/", "user_id": "ann", "timestamp": moment(9, 5)},
            {"path": "/", "user_id": "bob", "timestamp": moment(10)},
        ],
    )
    body = {
        "date_range": {"start": DAY.isoformat(), "end": DAY.isoformat()},
        "metrics": ["visitors", "conversion_rate"],
        "dimensions": ["event:goal"],
    }

    async def typed() -> dict[str, Any]:
        return await call(http, "POST", f"/v1/sites/{site['site_id']}/query", reader, json=body)

    answer = await until(typed, lambda a: len(a["results"]) == 2)
    assert [(r["dimensions"], r["metrics"]) for r in answer["results"]] == [
        (["Visit /pricing/**"], [1, 50]),
        (["signup"], [1, 50]),
    ]
    plausible = {
        "site_id": "goals.e2e.example",
        "metrics": ["visitors", "conversion_rate"],
        "date_range": [DAY.isoformat(), DAY.isoformat()],
        "filters": [["is", "event:goal", ["signup"]]],
    }
    via_plausible = await call(
        http, "POST", "/api/v2/query", {"Authorization": f"Bearer {site['api_key']}"}, json=plausible
    )
    assert via_plausible["results"] == [{"dimensions": [], "metrics": [1, 50]}]
    unknown = await call(
        http,
        "POST",
        "/api/v2/query",
        {"Authorization": f"Bearer {site['api_key']}"},
        status=400,
        json={**plausible, "filters": [["is", "event:goal", ["nope"]]]},
    )
    assert "filters[0][2][0]" in unknown["error"]
    await call(http, "DELETE", f"{goals}/{signup['goal']['goal_id']}", admin)
    listed = await call(http, "GET", goals, reader)
    assert len(listed["goals"]) == 1


async def test_seed_funnel_and_retention_routes(http: aiohttp.ClientSession, stack: ServiceStack) -> None:
    site, owner, reader = await site_with_admin_key(http, stack)
    steps = [{"eventName": "page_view"}, {"eventName": "add_to_cart"}, {"eventName": "purchase"}]
    await call(http, "POST", "/api/v1/funnels", reader, status=403, json={"name": "Shop", "steps": steps})
    one_step = await call(
        http, "POST", "/api/v1/funnels", owner, status=400, json={"name": "Shop", "steps": steps[:1]}
    )
    assert one_step["message"].startswith("steps: ")
    made = await call(http, "POST", "/api/v1/funnels", owner, json={"name": "Shop", "steps": steps})
    assert made["funnel"]["window_seconds"] == 604_800
    assert not any("time_window_seconds" in step for step in made["funnel"]["steps"])
    funnel_id = made["funnel"]["funnel_id"]
    listed = await call(http, "GET", "/api/v1/funnels", reader)
    assert [f["funnel_id"] for f in listed["funnels"]] == [funnel_id]

    yesterday = DAY - timedelta(days=1)
    earlier = datetime(yesterday.year, yesterday.month, yesterday.day, 9, tzinfo=UTC).isoformat()
    await send(
        http,
        site,
        [
            {"event_type": "signup", "path": "/", "user_id": "ann", "timestamp": earlier},
            {"event_type": "page_view", "path": "/", "user_id": "ann", "timestamp": moment(9)},
            {"event_type": "add_to_cart", "path": "/", "user_id": "ann", "timestamp": moment(9, 1)},
            {"event_type": "purchase", "path": "/", "user_id": "ann", "timestamp": moment(9, 3)},
            {"event_type": "page_view", "path": "/", "user_id": "bob", "timestamp": moment(10)},
        ],
    )
    dates = {"startDate": DAY.isoformat(), "endDate": DAY.isoformat()}

    async def analytics() -> dict[str, Any]:
        return await call(http, "GET", f"/api/v1/funnels/{funnel_id}/analytics", reader, params=dates)

    report = (await until(analytics, lambda a: a["report"]["steps"][0]["converted"] == "2"))["report"]
    assert [(s["name"], s["entered"], s["converted"]) for s in report["steps"]] == [
        ("pageview", "2", "2"),
        ("add_to_cart", "2", "1"),
        ("purchase", "1", "1"),
    ]
    assert report["steps"][1]["median_seconds_to_convert"] == 60
    assert report["steps"][1]["drop_off_rate"] == 50
    unknown = await call(
        http, "GET", f"/api/v1/funnels/{site['site_id']}/analytics", reader, status=400, params=dates
    )
    assert unknown["message"].startswith("funnel_id: ")

    cohort_dates = {
        "cohort": "signup",
        "days": "1",
        "startDate": yesterday.isoformat(),
        "endDate": DAY.isoformat(),
    }
    retention = await call(http, "GET", "/api/v1/retention", reader, params=cohort_dates)
    cohorts = retention["report"]["cohorts"]
    assert [(c["date"], c["size"], [p["returned"] for p in c["periods"]]) for c in cohorts] == [
        (yesterday.isoformat(), "1", ["1", "1"]),
        (DAY.isoformat(), "0", ["0", "0"]),
    ]
    bad = await call(http, "GET", "/api/v1/retention", reader, status=400, params={"days": "500"})
    assert bad["message"].startswith("days: ")


def at(hour: int, minute: int, second: int = 0) -> str:
    return datetime(DAY.year, DAY.month, DAY.day, hour, minute, second, tzinfo=UTC).isoformat()


async def test_seed_funnel_step_time_windows(http: aiohttp.ClientSession, stack: ServiceStack) -> None:
    """Seed 002's per-step timeWindow: add_to_cart within 120 s of the page view, purchase within
    60 s of add_to_cart. ann's first add (9:01) is 120 s before her purchase, her second (9:02)
    60 s: she converts through the second. bob's purchase is 120 s after his only add; cy's add
    is 180 s after the view."""
    site, owner, reader = await site_with_admin_key(http, stack)
    steps = [
        {"eventName": "page_view"},
        {"eventName": "add_to_cart", "timeWindow": 120},
        {"eventName": "purchase", "timeWindow": 60},
    ]
    refusals = [
        ([{**steps[0], "timeWindow": 60}, *steps[1:]], "steps[0].time_window_seconds: "),
        ([steps[0], {**steps[1], "timeWindow": 0}, steps[2]], "steps[1].time_window_seconds: "),
        ([*steps[:2], {**steps[2], "timeWindow": 7_776_001}], "steps[2].time_window_seconds: "),
    ]
    for bad_steps, message in refusals:
        bad = await call(
            http, "POST", "/api/v1/funnels", owner, status=400, json={"name": "Shop", "steps": bad_steps}
        )
        assert bad["message"].startswith(message), bad
    not_a_number = await call(
        http,
        "POST",
        "/api/v1/funnels",
        owner,
        status=400,
        json={"name": "Shop", "steps": [steps[0], {**steps[1], "timeWindow": "soon"}]},
    )
    assert not_a_number["message"].startswith("steps[1].time_window_seconds: "), not_a_number
    made = await call(http, "POST", "/api/v1/funnels", owner, json={"name": "Shop", "steps": steps})
    funnel = made["funnel"]
    assert [step.get("time_window_seconds") for step in funnel["steps"]] == [None, 120, 60]
    assert funnel["steps"][:2] == [
        {"event_name": "pageview", "page_path": "", "filters": {}},
        {"event_name": "add_to_cart", "page_path": "", "filters": {}, "time_window_seconds": 120},
    ]
    saved = await call(http, "GET", f"/v1/sites/{site['site_id']}/funnels/{funnel['funnel_id']}", reader)
    assert saved["funnel"]["steps"] == funnel["steps"]

    await send(
        http,
        site,
        [
            {"event_type": "page_view", "path": "/", "user_id": "ann", "timestamp": at(9, 0)},
            {"event_type": "add_to_cart", "path": "/", "user_id": "ann", "timestamp": at(9, 1)},
            {"event_type": "add_to_cart", "path": "/", "user_id": "ann", "timestamp": at(9, 2)},
            {"event_type": "purchase", "path": "/", "user_id": "ann", "timestamp": at(9, 3)},
            {"event_type": "page_view", "path": "/", "user_id": "bob", "timestamp": at(10, 0)},
            {"event_type": "add_to_cart", "path": "/", "user_id": "bob", "timestamp": at(10, 1)},
            {"event_type": "purchase", "path": "/", "user_id": "bob", "timestamp": at(10, 3)},
            {"event_type": "page_view", "path": "/", "user_id": "cy", "timestamp": at(11, 0)},
            {"event_type": "add_to_cart", "path": "/", "user_id": "cy", "timestamp": at(11, 3)},
            {"event_type": "purchase", "path": "/", "user_id": "cy", "timestamp": at(11, 3, 30)},
        ],
    )
    dates = {"startDate": DAY.isoformat(), "endDate": DAY.isoformat()}

    async def analytics() -> dict[str, Any]:
        return await call(
            http, "GET", f"/api/v1/funnels/{funnel['funnel_id']}/analytics", reader, params=dates
        )

    report = (await until(analytics, lambda a: a["report"]["steps"][0]["converted"] == "3"))["report"]
    figures = [
        (s["entered"], s["converted"], s["median_seconds_to_convert"], s.get("time_window_seconds"))
        for s in report["steps"]
    ]
    assert figures == [("3", "3", 0, None), ("3", "2", 90, 120), ("2", "1", 60, 60)]
    # The same steps ad hoc on the typed route, with the proto field name, answer alike.
    typed_steps = [
        {"event_name": "page_view"},
        {"event_name": "add_to_cart", "time_window_seconds": 120},
        {"event_name": "purchase", "timeWindow": 60},
    ]
    ad_hoc = await call(
        http,
        "POST",
        f"/v1/sites/{site['site_id']}/funnels:query",
        reader,
        json={"steps": typed_steps, "date_range": {"start": DAY.isoformat(), "end": DAY.isoformat()}},
    )
    assert [
        (s["entered"], s["converted"], s["median_seconds_to_convert"], s.get("time_window_seconds"))
        for s in ad_hoc["report"]["steps"]
    ] == figures
