"""QueryPlausible through a real server: Plausible's request and answer shapes, and its errors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from analytics.v1 import query_pb2
from query_service.reference import EventRow

from .conftest import QueryStack

pytestmark = pytest.mark.integration


def row(when: datetime, visitor: int, path: str = "/", **fields: Any) -> EventRow:
    return EventRow(time=when, event_id=uuid.uuid4(), visitor_id=visitor, path=path, **fields)


async def ask(stack: QueryStack, key: str, body: dict[str, Any]) -> dict[str, Any]:
    request = json_format.ParseDict(body, query_pb2.QueryPlausibleRequest())
    reply = await stack.query.QueryPlausible(request, metadata=(("authorization", f"Bearer {key}"),))
    answer: dict[str, Any] = json_format.MessageToDict(reply, preserving_proto_field_name=True)
    return answer


async def refusal(stack: QueryStack, key: str, body: dict[str, Any], code: grpc.StatusCode) -> str:
    request = json_format.ParseDict(body, query_pb2.QueryPlausibleRequest())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.query.QueryPlausible(request, metadata=(("authorization", f"Bearer {key}"),))
    assert caught.value.code() == code, caught.value.details()
    return caught.value.details() or ""


@pytest.fixture
async def shop(query_stack: QueryStack) -> tuple[str, str, str]:
    domain = f"shop-{uuid.uuid4().hex[:6]}.example"
    site, key = await query_stack.site("Europe/Berlin", domain=domain)
    day = datetime(2024, 3, 10, 9, tzinfo=UTC)
    await query_stack.write(
        site,
        [
            row(day, 1, "/", country="DE", url=f"https://{domain}/"),
            row(day.replace(minute=5), 1, "/docs/start", country="DE", url=f"https://{domain}/docs/start"),
            row(day.replace(hour=10), 2, "/docs/api", country="US", url=f"https://WWW.{domain}/docs/api"),
            row(day.replace(hour=11), 3, "/", country="FR"),
            row(day.replace(hour=11, minute=1), 3, "/", kind=2, name="Signup", properties={"plan": "pro"}),
            row(datetime(2024, 3, 9, 9, tzinfo=UTC), 4, "/", country="DE"),
        ],
    )
    return site, key, domain


async def test_a_plausible_client_request_is_answered_in_plausibles_shape(
    query_stack: QueryStack, shop: tuple[str, str, str]
) -> None:
    site, key, domain = shop
    body = {
        "site_id": domain,
        "metrics": ["visitors", "pageviews", "bounce_rate"],
        "date_range": ["2024-03-10", "2024-03-10"],
        "dimensions": ["visit:country"],
        "filters": [["is_not", "visit:country", ["FR"]]],
        "order_by": [["visitors", "desc"], ["visit:country", "asc"]],
        "include": {"total_rows": True},
        "pagination": {"limit": 10, "offset": 0},
    }
    answer = await ask(query_stack, key, body)
    assert answer["results"] == [
        {"dimensions": ["DE"], "metrics": [1, 2, 0]},
        {"dimensions": ["US"], "metrics": [1, 1, 100]},
    ]
    assert answer["meta"] == {"total_rows": 2}
    echoed = answer["query"]
    assert echoed["site_id"] == domain
    assert echoed["date_range"] == ["2024-03-10T00:00:00+01:00", "2024-03-10T23:59:59+01:00"]
    assert echoed["filters"] == [["is_not", "visit:country", ["FR"]]]
    assert echoed["order_by"] == [["visitors", "desc"], ["visit:country", "asc"]]
    assert echoed["pagination"] == {"limit": 10, "offset": 0}
    # The site's UUID works as site_id too.
    assert (await ask(query_stack, key, {**body, "site_id": site}))["results"] == answer["results"]


async def test_nested_filters_time_series_props_and_comparisons(
    query_stack: QueryStack, shop: tuple[str, str, str]
) -> None:
    _, key, domain = shop
    docs = await ask(
        query_stack,
        key,
        {
            "site_id": domain,
            "metrics": ["visitors", "visits"],
            "date_range": "day",
            "date": "2024-03-10",
            "filters": [
                ["or", [["contains", "event:page", ["/docs"]], ["is", "event:props:plan", ["pro"]]]],
                ["not", ["is", "visit:country", ["US"]]],
            ],
        },
    )
    assert docs["results"] == [{"dimensions": [], "metrics": [2, 2]}]
    hosts = await ask(
        query_stack,
        key,
        {
            "site_id": domain,
            "metrics": ["pageviews"],
            "date_range": "day",
            "date": "2024-03-10",
            "dimensions": ["event:hostname"],
        },
    )
    assert hosts["results"] == [
        {"dimensions": [domain], "metrics": [2]},
        {"dimensions": [""], "metrics": [1]},
        {"dimensions": [f"www.{domain}"], "metrics": [1]},
    ]
    series = await ask(
        query_stack,
        key,
        {
            "site_id": domain,
            "metrics": ["visitors"],
            "date_range": ["2024-03-09", "2024-03-11"],
            "dimensions": ["time:day"],
            "include": {"time_labels": True, "comparisons": {"mode": "previous_period"}},
        },
    )
    assert series["meta"]["time_labels"] == ["2024-03-09", "2024-03-10", "2024-03-11"]
    assert [r["dimensions"] + r["metrics"] for r in series["results"]] == [
        ["2024-03-09", 1],
        ["2024-03-10", 3],
        ["2024-03-11", 0],
    ]
    assert series["results"][1]["comparison"] == {
        "dimensions": ["2024-03-07"],
        "metrics": [0],
        "change": [100],
    }
    assert series["query"]["comparison_date_range"] == [
        "2024-03-06T00:00:00+01:00",
        "2024-03-08T23:59:59+01:00",
    ]
    props = await ask(
        query_stack,
        key,
        {
            "site_id": domain,
            "metrics": ["events"],
            "date_range": "day",
            "date": "2024-03-10",
            "dimensions": ["event:name", "event:props:plan"],
            "filters": [["is", "event:name", ["Signup"]]],
        },
    )
    assert props["results"] == [{"dimensions": ["Signup", "pro"], "metrics": [1]}]


@pytest.mark.parametrize(
    ("change", "field", "shown"),
    [
        ({"metrics": ["visitors", "scroll_depth"]}, "metrics[1]", "'scroll_depth'"),
        ({"dimensions": ["visit:city_name"]}, "dimensions[0]", "'visit:city_name'"),
        ({"filters": [["has_done", ["is", "event:name", ["Signup"]]]]}, "filters[0][0]", "has_done"),
        (
            {"filters": [["is", "visit:country", ["DE"], {"case_sensitive": False}]]},
            "filters[0][3]",
            "case_sensitive",
        ),
        (
            {"filters": [["and", [["is", "visit:country", ["DE"]], ["is", "visit:planet", ["x"]]]]]},
            "filters[0][1][1][1]",
            "'visit:planet'",
        ),
        ({"filters": [["matches", "event:page", ["[z-a]"]]]}, "filters[0][2][0]", "regular expression"),
        ({"filters": [["is", "visit:country", "DE"]]}, "filters[0][2]", "list of strings"),
        ({"date_range": "fortnight"}, "date_range", "'fortnight'"),
        ({"date_range": ["2024-03-10"]}, "date_range", "[start, end]"),
        ({"order_by": [["visits", "desc"]]}, "order_by[0][0]", "'visits'"),
        ({"order_by": [["visitors", "up"]]}, "order_by[0][1]", "'up'"),
        ({"include": {"time_labels": True}}, "include.time_labels", "time dimension"),
        ({"include": {"funnels": True}}, "include.funnels", "not supported"),
        (
            {"include": {"comparisons": {"mode": "previous_week"}}},
            "include.comparisons.mode",
            "'previous_week'",
        ),
        ({"pagination": {"limit": 20000}}, "pagination.limit", "20000"),
        ({"pagination": {"limit": -1}}, "pagination.limit", "-1"),
        ({"metrics": []}, "metrics", "empty"),
    ],
)
async def test_unsupported_input_is_invalid_argument_naming_the_field(
    query_stack: QueryStack, shop: tuple[str, str, str], change: dict[str, Any], field: str, shown: str
) -> None:
    _, key, domain = shop
    body = {"site_id": domain, "metrics": ["visitors"], "date_range": "7d", **change}
    message = await refusal(query_stack, key, body, grpc.StatusCode.INVALID_ARGUMENT)
    assert message.startswith(f"{field}: "), message
    assert shown in message, message


async def test_the_site_must_exist_and_be_the_keys(
    query_stack: QueryStack, shop: tuple[str, str, str]
) -> None:
    _, key, _ = shop
    _, other_key = await query_stack.site()
    body = {"metrics": ["visitors"], "date_range": "7d"}
    await refusal(query_stack, key, {**body, "site_id": "nowhere.example"}, grpc.StatusCode.NOT_FOUND)
    await refusal(query_stack, other_key, {**body, "site_id": shop[2]}, grpc.StatusCode.PERMISSION_DENIED)
    message = await refusal(query_stack, key, body, grpc.StatusCode.INVALID_ARGUMENT)
    assert message.startswith("site_id: ")
    message = await refusal(
        query_stack, key, {**body, "site_id": "bad domain!"}, grpc.StatusCode.INVALID_ARGUMENT
    )
    assert message.startswith("site_id: ") and "'bad domain!'" in message
