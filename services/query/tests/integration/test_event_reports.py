"""Seed 002's event routes through a real server: counts per interval and totals per event name."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from analytics.v1 import query_pb2
from query_service.reference import EventRow

from .conftest import ADMIN_MD, QueryStack

pytestmark = pytest.mark.integration


def row(when: datetime, visitor: int, name: str = "pageview", **fields: Any) -> EventRow:
    kind = 1 if name == "pageview" else 2
    return EventRow(time=when, event_id=uuid.uuid4(), visitor_id=visitor, kind=kind, name=name, **fields)


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2024, 3, day, hour, tzinfo=UTC)


async def site_with_traffic(stack: QueryStack, timezone: str = "UTC") -> tuple[str, str]:
    site, key = await stack.site(timezone)
    await stack.write(
        site,
        [
            row(at(10, 9), 1),
            row(at(10, 9), 1, "signup"),
            row(at(10, 22), 2),
            row(at(12, 1), 1),
            row(at(12, 2), 3, "signup"),
            row(at(12, 3), 3, "download"),
            row(at(12, 4), 4, "signup", is_bot=True),
        ],
    )
    return site, key


async def test_event_metrics_per_interval(query_stack: QueryStack) -> None:
    _, key = await site_with_traffic(query_stack)
    reply = await query_stack.query.GetEventMetrics(
        query_pb2.GetEventMetricsRequest(
            event="page_view", interval="daily", start_date="2024-03-10", end_date="2024-03-12"
        ),
        metadata=(("x-api-key", key),),
    )
    assert [(b.time, b.count, b.unique_users) for b in reply.data] == [
        ("2024-03-10", 2, 2),
        ("2024-03-11", 0, 0),
        ("2024-03-12", 1, 1),
    ]
    assert (reply.event, reply.interval, reply.timezone) == ("page_view", "daily", "UTC")
    signups = await buckets(
        query_stack, key, event="signup", interval="monthly", start_date="2024-03-01", end_date="2024-04-30"
    )
    assert signups == [("2024-03-01", 2, 2), ("2024-04-01", 0, 0)]


async def buckets(stack: QueryStack, key: str, **fields: str) -> list[tuple[str, int, int]]:
    reply = await stack.query.GetEventMetrics(
        query_pb2.GetEventMetricsRequest(**fields), metadata=(("x-api-key", key),)
    )
    return [(b.time, b.count, b.unique_users) for b in reply.data]


async def test_hourly_buckets_are_the_sites(query_stack: QueryStack) -> None:
    _, key = await site_with_traffic(query_stack, "Asia/Kolkata")
    hours = await buckets(
        query_stack, key, event="pageview", interval="hourly", start_date="2024-03-10", end_date="2024-03-10"
    )
    assert len(hours) == 24
    assert [h for h in hours if h[1]] == [("2024-03-10 14:00:00", 1, 1)]  # 09:00 UTC is 14:30 in Kolkata


async def test_events_summary(query_stack: QueryStack) -> None:
    site, key = await site_with_traffic(query_stack)
    reply = await query_stack.query.GetEventsSummary(
        query_pb2.GetEventsSummaryRequest(start_date="2024-03-10", end_date="2024-03-12"),
        metadata=(("x-api-key", key),),
    )
    assert (reply.site_id, reply.total_events, reply.unique_users) == (site, 6, 3)
    assert [(e.event, e.count, e.unique_users) for e in reply.events] == [
        ("pageview", 3, 2),
        ("signup", 2, 2),
        ("download", 1, 1),
    ]
    assert (reply.start, reply.end) == ("2024-03-10T00:00:00Z", "2024-03-13T00:00:00Z")
    by_admin = await query_stack.query.GetEventsSummary(
        query_pb2.GetEventsSummaryRequest(site_id=site, start_date="2024-03-12", end_date="2024-03-12"),
        metadata=ADMIN_MD,
    )
    assert json_format.MessageToDict(by_admin)["totalEvents"] == "3"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"interval": "daily"}, "event"),
        ({"event": "x", "interval": "yearly"}, "interval"),
        ({"event": "x", "start_date": "2024-03-10"}, "end_date"),
        ({"event": "x", "end_date": "2024-03-10"}, "start_date"),
        ({"event": "x", "start_date": "2024-03-12", "end_date": "2024-03-10"}, "start_date"),
        ({"event": "x", "start_date": "March", "end_date": "2024-03-10"}, "start_date"),
        (
            {"event": "x", "interval": "hourly", "start_date": "2020-01-01", "end_date": "2024-01-01"},
            "interval",
        ),
    ],
)
async def test_bad_parameters_are_named(query_stack: QueryStack, fields: dict[str, str], field: str) -> None:
    _, key = await query_stack.site()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query_stack.query.GetEventMetrics(
            query_pb2.GetEventMetricsRequest(**fields), metadata=(("x-api-key", key),)
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(f"{field}: "), caught.value.details()


async def test_the_site_is_the_keys_unless_named(query_stack: QueryStack) -> None:
    site, key = await query_stack.site()
    other, _ = await query_stack.site()
    request = query_pb2.GetEventsSummaryRequest()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query_stack.query.GetEventsSummary(request, metadata=ADMIN_MD)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("site_id: ")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query_stack.query.GetEventsSummary(
            query_pb2.GetEventsSummaryRequest(site_id=other), metadata=(("x-api-key", key),)
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query_stack.query.GetEventsSummary(request)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    own = await query_stack.query.GetEventsSummary(request, metadata=(("x-api-key", key),))
    assert own.site_id == site
