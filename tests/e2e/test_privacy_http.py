"""Erasure and site deletion end to end: through Envoy to the processor and auth, with the
processor deleting a deleted site's data when auth announces it on JetStream."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import psycopg
import pytest
from psycopg import sql

from analytics_testing.stack import ServiceStack

from .test_query_http import DAY, create_site, moment, query_when, send

pytestmark = pytest.mark.e2e

SPAN = {"start": DAY.isoformat(), "end": DAY.isoformat()}
TOTALS = {"date_range": SPAN, "metrics": ["visitors", "visits", "pageviews", "events"]}


async def traffic(http: aiohttp.ClientSession, site: dict[str, Any]) -> None:
    await send(
        http,
        site,
        [
            {"path": "/", "user_id": "ann", "timestamp": moment(9)},
            {"path": "/pricing", "user_id": "ann", "timestamp": moment(9, 5)},
            {"path": "/", "user_id": "bob", "timestamp": moment(10)},
        ],
    )
    await query_when(http, site, TOTALS, lambda a: a["results"][0]["metrics"][3] >= 3)


async def test_erasing_a_person_over_http(http: aiohttp.ClientSession, stack: ServiceStack) -> None:
    site = await create_site(http, stack, timezone="UTC")
    await traffic(http, site)
    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    erasure = f"/v1/sites/{site['site_id']}/erasure"

    async with http.post(
        erasure, json={"user_id": "ann"}, headers={"x-api-key": site["api_key"]}
    ) as response:
        assert response.status == 403  # the site's first key ingests and reads; erasing is an admin's
    async with http.post(erasure, json={"user_id": "ann", "visitor_id": "1"}, headers=admin) as response:
        assert response.status == 400
        assert (await response.json())["message"].startswith("user_id")

    async with http.post(erasure, json={"user_id": "ann"}, headers=admin) as response:
        assert response.status == 200, await response.text()
        answer = await response.json()
    assert answer == {
        "visitors": 1,
        "events": "2",
        "sessions": "1",
        "visitor_days": "1",
        "event_buckets": "1",
        "visit_buckets": "1",
    }
    totals = await query_when(http, site, TOTALS, lambda a: True)
    assert totals["results"][0]["metrics"] == [1, 1, 1, 1]
    async with http.post(
        f"/v1/sites/{site['site_id']}/export",
        json={"date_range": SPAN},
        headers={"x-api-key": site["api_key"]},
    ) as response:
        body = (await response.read()).decode()
    assert "ann" not in body and body.count("\n") == 1


async def test_deleting_a_site_over_http(http: aiohttp.ClientSession, stack: ServiceStack) -> None:
    site = await create_site(http, stack, timezone="UTC")
    kept = await create_site(http, stack, timezone="UTC")
    await traffic(http, site)
    await traffic(http, kept)
    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    for owner in (site, kept):  # definitions the query service keeps per site
        async with http.post(
            f"/v1/sites/{owner['site_id']}/goals", json={"goal": {"event_name": "signup"}}, headers=admin
        ) as response:
            assert response.status == 200, await response.text()
        async with http.put(
            f"/v1/sites/{owner['site_id']}/alert-rule", json={"visitors_per_minute": 2}, headers=admin
        ) as response:
            assert response.status == 200, await response.text()

    async with http.delete(
        f"/v1/sites/{site['site_id']}", headers={"x-api-key": site["api_key"]}
    ) as response:
        assert response.status == 403
    async with http.delete(f"/v1/sites/{site['site_id']}", headers=admin) as response:
        assert response.status == 200, await response.text()
        answer = await response.json()
    assert (answer["site_id"], answer["keys_deleted"], answer["already_deleted"]) == (
        site["site_id"],
        1,
        False,
    )

    async with http.get(f"/v1/sites/{site['site_id']}", headers=admin) as response:
        assert response.status == 404
    async with http.post(
        f"/v1/sites/{site['site_id']}/query", json=TOTALS, headers={"x-api-key": site["api_key"]}
    ) as response:
        assert response.status == 401

    # The processor deletes the site's rows once auth's announcement reaches it.
    async with await psycopg.AsyncConnection.connect(stack.database_url, autocommit=True) as conn:
        left = -1
        for _ in range(200):
            cur = await conn.execute(
                "SELECT (SELECT count(*) FROM analytics.events WHERE site_id = %(s)s)"
                " + (SELECT count(*) FROM analytics.sessions WHERE site_id = %(s)s)"
                " + (SELECT count(*) FROM analytics.visitor_days WHERE site_id = %(s)s)"
                " + (SELECT count(*) FROM query.goals WHERE site_id = %(s)s)"
                " + (SELECT count(*) FROM query.alert_rules WHERE site_id = %(s)s)",
                {"s": site["site_id"]},
            )
            row = await cur.fetchone()
            left = int(row[0]) if row else -1
            if left == 0:
                break
            await asyncio.sleep(0.05)
        assert left == 0
        for table in ("goals", "alert_rules"):
            cur = await conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE site_id = %s").format(sql.Identifier("query", table)),
                (kept["site_id"],),
            )
            assert await cur.fetchone() == (1,), table
    totals = await query_when(http, kept, TOTALS, lambda a: True)
    assert totals["results"][0]["metrics"] == [2, 2, 3, 3]

    async with http.delete(f"/v1/sites/{site['site_id']}", headers=admin) as response:
        assert response.status == 200
        assert (await response.json())["already_deleted"] is True
