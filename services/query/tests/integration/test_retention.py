"""Retention cohorts held to the brute-force reference on generated traffic across days, weeks,
months and DST changes; the RPCs' validation and seed 002's route."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

from analytics.v1 import product_pb2, query_pb2
from analytics_testing.grpc_errors import violations
from query_service.product import analysis, retention
from query_service.product import reference as product_reference
from query_service.reference import EventRow
from query_service.servicer import Reports

from .conftest import QueryStack
from .test_differential import THROUGH_DATABASE, ZONES, a_filter

pytestmark = pytest.mark.integration


@st.composite
def returning_people(draw: st.DrawFn) -> tuple[str, list[EventRow]]:
    """People whose events are hours to weeks apart, around a zone's DST change."""
    zone = draw(st.sampled_from(sorted(ZONES)))
    rows: list[EventRow] = []
    ids = iter(range(1, 100_000))
    for visitor in range(1, draw(st.integers(1, 7)) + 1):
        at = ZONES[zone] + timedelta(hours=draw(st.integers(-24 * 20, 24 * 5)))
        for _ in range(draw(st.integers(1, 8))):
            at += timedelta(hours=draw(st.sampled_from([0, 1, 5, 20, 30, 24 * 6, 24 * 10, 24 * 33])))
            kind = draw(st.sampled_from([1, 2, 2]))
            rows.append(
                EventRow(
                    time=at,
                    event_id=uuid.UUID(int=next(ids)),
                    visitor_id=visitor if draw(st.integers(0, 20)) else 0,
                    kind=kind,
                    name="pageview" if kind == 1 else draw(st.sampled_from(["signup", "login"])),
                    path=draw(st.sampled_from(["/", "/docs/a"])),
                    country=draw(st.sampled_from(["", "DE"])),
                    is_bot=visitor == 7,
                )
            )
    return zone, rows


@THROUGH_DATABASE
@given(data=st.data())
async def test_retention_equals_the_reference(query_stack: QueryStack, data: st.DataObject) -> None:
    zone, rows = data.draw(returning_people())
    site_id, _ = await query_stack.site(timezone=zone)
    shuffled = list(rows)
    random.Random(len(rows)).shuffle(shuffled)
    await query_stack.write(site_id, shuffled, batch=max(1, len(rows) // 2))
    period = data.draw(st.sampled_from(retention.PERIODS))
    periods = data.draw(st.integers(1, 5))
    cohort_event = data.draw(st.sampled_from(["", "", "signup", "pageview"]))
    return_event = data.draw(st.sampled_from(["", "", "login"]))
    first = min(r.time for r in rows).astimezone(ZoneInfo(zone)).date()
    start = first + timedelta(days=data.draw(st.integers(-2, 10)))
    end = start + timedelta(days=data.draw(st.integers(0, 40)))
    filters = [a_filter(data.draw, 1)] if data.draw(st.integers(0, 3)) == 0 else []
    request = analysis.stats_request(
        site_id,
        query_pb2.DateRange(start=start.isoformat(), end=end.isoformat()),
        [json_format.ParseDict(f, query_pb2.Filter()) for f in filters],
    )
    async with query_stack.pool.connection() as conn:
        query = await Reports.parse(conn, request, site_id, zone)
        got = await retention.retention(
            conn, query, period=period, periods=periods, cohort_event=cohort_event, return_event=return_event
        )
    want = product_reference.retention(
        query, period=period, periods=periods, cohort_event=cohort_event, return_event=return_event, rows=rows
    )
    assert [
        (
            c.date,
            c.size,
            [p.returned for p in c.periods],
            [p.percentage for p in c.periods],
            [p.date for p in c.periods],
        )
        for c in got
    ] == [(c.date, c.size, c.returned, c.percentages, c.dates) for c in want]


async def test_weekly_cohorts_through_the_rpc(query_stack: QueryStack) -> None:
    """Two people sign up in the week of 2024-03-04 (Berlin); one comes back the next week and
    two weeks later, the other never; one more signs up the week after."""
    site_id, key = await query_stack.site(timezone="Europe/Berlin")

    def event(visitor: int, day: int, name: str) -> EventRow:
        return EventRow(
            time=datetime(2024, 3, day, 12, tzinfo=UTC),
            event_id=uuid.uuid4(),
            visitor_id=visitor,
            kind=2,
            name=name,
        )

    await query_stack.write(
        site_id,
        [
            event(1, 4, "signup"),
            event(1, 12, "login"),
            event(1, 19, "login"),
            event(2, 6, "signup"),
            event(3, 13, "signup"),
            event(3, 13, "login"),
        ],
    )
    answer = await query_stack.product.QueryRetention(
        json_format.ParseDict(
            {
                "site_id": site_id,
                "date_range": {"start": "2024-03-04", "end": "2024-03-17"},
                "period": "week",
                "periods": 2,
                "cohort_event": "signup",
            },
            product_pb2.QueryRetentionRequest(),
        ),
        metadata=(("x-api-key", key),),
    )
    table = [
        (c.date, c.size, [(p.date, p.returned, p.percentage) for p in c.periods])
        for c in answer.report.cohorts
    ]
    assert table == [
        ("2024-03-04", 2, [("2024-03-04", 2, 100.0), ("2024-03-11", 1, 50.0), ("2024-03-18", 1, 50.0)]),
        ("2024-03-11", 1, [("2024-03-11", 1, 100.0), ("2024-03-18", 0, 0.0), ("2024-03-25", 0, 0.0)]),
    ]

    seed = await query_stack.product.GetRetention(
        product_pb2.GetRetentionRequest(
            cohort="signup", days=1, start_date="2024-03-04", end_date="2024-03-06"
        ),
        metadata=(("x-api-key", key),),
    )
    assert [(c.date, c.size, [p.returned for p in c.periods]) for c in seed.report.cohorts] == [
        ("2024-03-04", 1, [1, 0]),
        ("2024-03-05", 0, [0, 0]),
        ("2024-03-06", 1, [1, 0]),
    ]


async def test_bad_retention_questions_name_the_field(query_stack: QueryStack) -> None:
    site_id, key = await query_stack.site()
    day = {"start": "2024-03-04", "end": "2024-03-04"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"date_range": day, "period": "year"}, "period"),
        ({"date_range": day, "periods": 91}, "periods"),
        ({"date_range": {"start": "2020-01-01", "end": "2024-01-01"}}, "date_range"),
        ({"date_range": day, "cohort_event": "x" * 101}, "cohort_event"),
        ({"date_range": {"start": "2024-03-05", "end": "2024-03-04"}}, "date_range"),
    ]
    for body, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await query_stack.product.QueryRetention(
                json_format.ParseDict({"site_id": site_id, **body}, product_pb2.QueryRetentionRequest()),
                metadata=(("x-api-key", key),),
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, body
        assert field in violations(bad.value), (body, bad.value.details())
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await query_stack.product.GetRetention(
            product_pb2.GetRetentionRequest(days=1, end_date="2024-03-06"), metadata=(("x-api-key", key),)
        )
    assert "start_date" in violations(bad.value)
