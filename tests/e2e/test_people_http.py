"""PeopleService end to end: events sent over HTTP and stored by the processor, then read back
through Envoy as sessions, a person's timeline, page flows and a streamed raw export."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import Any

import aiohttp
import pytest

from analytics_testing.stack import ServiceStack

from .test_query_http import DAY, create_site, moment, query_when, send

pytestmark = pytest.mark.e2e

SPAN = {"start": DAY.isoformat(), "end": DAY.isoformat()}
# More events than one export chunk (1000 rows), so the answer is several gRPC messages.
BULK = 2300


async def stored_site(http: aiohttp.ClientSession, stack: ServiceStack) -> dict[str, Any]:
    site = await create_site(http, stack, timezone="UTC")
    journey = [
        {"path": "/", "user_id": "ann", "timestamp": moment(9)},
        {"path": "/pricing", "user_id": "ann", "timestamp": moment(9, 5)},
        {"path": "/signup", "user_id": "ann", "timestamp": moment(9, 7)},
        {"path": "/", "user_id": "bob", "timestamp": moment(10)},
        {"path": "/pricing", "user_id": "bob", "timestamp": moment(10, 1)},
    ]
    await send(http, site, journey)
    bulk = [
        {"path": f"/bulk/{n % 7}", "user_id": f"reader-{n % 50}", "timestamp": moment(12 + n // 1000, n % 60)}
        for n in range(BULK)
    ]
    await asyncio.gather(*(send(http, site, bulk[at : at + 1000]) for at in range(0, BULK, 1000)))
    body = {"date_range": SPAN, "metrics": ["events"]}
    await query_when(http, site, body, lambda a: a["results"][0]["metrics"][0] >= BULK + len(journey))
    return site


async def test_sessions_timeline_flows_and_export_through_the_edge(
    http: aiohttp.ClientSession, stack: ServiceStack
) -> None:
    site = await stored_site(http, stack)
    headers = {"x-api-key": site["api_key"]}
    base = f"/v1/sites/{site['site_id']}"
    total = BULK + 5

    async with http.post(
        f"{base}/sessions",
        json={
            "date_range": SPAN,
            "filters": [{"condition": {"operator": "is", "dimension": "event:page", "values": ["/signup"]}}],
        },
        headers=headers,
    ) as response:
        assert response.status == 200, await response.text()
        listed = await response.json()
    assert listed["total"] == "1"
    (ann,) = listed["sessions"]
    assert ann["pages"] == ["/", "/pricing", "/signup"] and ann["user_id"] == "ann"
    assert (ann["entry_page"], ann["exit_page"], ann["duration_s"], ann["bounce"]) == (
        "/",
        "/signup",
        420,
        False,
    )

    async with http.get(
        f"{base}/users/ann/timeline",
        params={"date_range.start": DAY.isoformat(), "date_range.end": DAY.isoformat()},
        headers=headers,
    ) as response:
        assert response.status == 200, await response.text()
        person = await response.json()
    assert [[e["path"] for e in s["events"]] for s in person["sessions"]] == [["/", "/pricing", "/signup"]]

    async with http.post(
        f"{base}/flows",
        json={"date_range": SPAN, "page": "/pricing", "direction": "previous"},
        headers=headers,
    ) as response:
        assert response.status == 200, await response.text()
        flows = await response.json()
    assert flows["flows"] == [{"pages": ["/"], "page_views": "2", "visits": "2"}]

    async with http.post(f"{base}/export", json={"date_range": SPAN}, headers=headers) as response:
        assert response.status == 200, await response.text()
        # Streamed: chunked transfer, no length known up front, the service's content type.
        assert response.headers["content-type"] == "application/x-ndjson"
        assert response.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in response.headers
        lines = (await response.read()).decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == total
    assert [r["time"] for r in records] == sorted(r["time"] for r in records)
    assert records[0]["user_id"] == "ann" and records[0]["path"] == "/"

    async with http.post(
        f"{base}/export",
        json={
            "date_range": SPAN,
            "format": "csv",
            "filters": [
                {"condition": {"operator": "contains", "dimension": "event:page", "values": ["/bulk/3"]}}
            ],
        },
        headers=headers,
    ) as response:
        assert response.status == 200, await response.text()
        assert response.headers["content-type"] == "text/csv; charset=utf-8"
        rows = list(csv.DictReader(io.StringIO((await response.read()).decode(), newline="")))
    assert len(rows) == len([n for n in range(BULK) if n % 7 == 3])
    assert {row["path"] for row in rows} == {"/bulk/3"}


async def test_bad_people_requests_get_json_errors_naming_the_field(
    http: aiohttp.ClientSession, stack: ServiceStack
) -> None:
    site = await create_site(http, stack, timezone="UTC")
    headers = {"x-api-key": site["api_key"]}
    base = f"/v1/sites/{site['site_id']}"
    for path, body, field in (
        ("export", {"date_range": SPAN, "format": "xml"}, "format"),
        ("flows", {"date_range": SPAN, "page": "/", "steps": 9}, "steps"),
        ("sessions", {"date_range": {"period": "nope"}}, "date_range.period"),
    ):
        async with http.post(f"{base}/{path}", json=body, headers=headers) as response:
            assert response.status == 400, path
            error = await response.json()
        assert error["message"].startswith(field), error
    async with http.post(f"{base}/export", json={"date_range": SPAN}) as response:
        assert response.status == 401
        assert "message" in await response.json()
