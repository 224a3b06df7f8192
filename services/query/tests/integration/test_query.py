"""Query through a real server and stub, on events stored by the processor's writer: metrics,
dimensions, filters, time zones, comparisons, validation and authorization."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from analytics.v1 import auth_pb2, query_pb2
from query_service.reference import EventRow

from .conftest import ADMIN_MD, QueryStack

pytestmark = pytest.mark.integration


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def row(when: datetime, visitor: int, path: str = "/", **fields: Any) -> EventRow:
    return EventRow(time=when, event_id=uuid.uuid4(), visitor_id=visitor, path=path, **fields)


def request(site_id: str, **fields: Any) -> query_pb2.QueryRequest:
    return json_format.ParseDict({"site_id": site_id, **fields}, query_pb2.QueryRequest())


async def query(stack: QueryStack, site_id: str, **fields: Any) -> list[tuple[list[str], list[float]]]:
    reply = await stack.query.Query(request(site_id, **fields), metadata=ADMIN_MD)
    return [(list(r.dimensions), list(r.metrics)) for r in reply.results]


async def refused(stack: QueryStack, site_id: str, code: grpc.StatusCode, **fields: Any) -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.query.Query(request(site_id, **fields), metadata=ADMIN_MD)
    assert caught.value.code() == code, caught.value.details()
    status = rpc_status.from_call(caught.value)
    found: dict[str, str] = {}
    for detail in status.details if status else []:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found.update({v.field: v.description for v in bad.field_violations})
    return found


DAY = {"start": "2024-03-10", "end": "2024-03-10"}
ALL = ["visitors", "visits", "pageviews", "views_per_visit", "bounce_rate", "visit_duration", "events"]


async def test_aggregate_metrics_follow_their_definitions(query_stack: QueryStack) -> None:
    site, _ = await query_stack.site()
    await query_stack.write(
        site,
        [
            # Visitor 1: one visit of three page views and a custom event over 10 minutes.
            row(at(2024, 3, 10, 9), 1, "/"),
            row(at(2024, 3, 10, 9, 4), 1, "/pricing"),
            row(at(2024, 3, 10, 9, 8), 1, "/signup", kind=2, name="signup"),
            row(at(2024, 3, 10, 9, 10), 1, "/thanks"),
            # ... and a second visit after 31 minutes of silence: a bounce.
            row(at(2024, 3, 10, 9, 41), 1, "/blog"),
            # Visitor 2: one bounce.
            row(at(2024, 3, 10, 12), 2, "/"),
            # Visitor 6: one page view and a custom event: engaged, not a bounce.
            row(at(2024, 3, 10, 13), 6, "/"),
            row(at(2024, 3, 10, 13, 1), 6, "/", kind=2, name="play"),
            # Bots and events without a visitor count nowhere; other days and sites neither.
            row(at(2024, 3, 10, 12), 3, "/", is_bot=True),
            row(at(2024, 3, 10, 12), 0, "/"),
            row(at(2024, 3, 11, 0), 4, "/"),
            row(at(2024, 3, 9, 23, 59, 59), 5, "/"),
        ],
    )
    other, _ = await query_stack.site()
    await query_stack.write(other, [row(at(2024, 3, 10, 12), 1, "/")])
    rows = await query(query_stack, site, date_range=DAY, metrics=ALL)
    # 4 visits: 6 page views, 2 bounces, durations 600 + 0 + 0 + 60 s.
    assert rows == [([], [3, 4, 6, 1.5, 50, 165, 8])]
    empty = await query(
        query_stack, site, date_range={"start": "2024-03-12", "end": "2024-03-12"}, metrics=ALL
    )
    assert empty == [([], [0, 0, 0, 0, 0, 0, 0])]


async def test_breakdowns_sort_paginate_and_count_rows(query_stack: QueryStack) -> None:
    site, _ = await query_stack.site()
    rows = [row(at(2024, 3, 10, 8, i), 10 + i, "/a") for i in range(3)]
    rows += [row(at(2024, 3, 10, 9, i), 20 + i, "/b") for i in range(2)]
    rows += [row(at(2024, 3, 10, 10), 30, "/c"), row(at(2024, 3, 10, 10, 1), 30, "/c")]
    rows += [row(at(2024, 3, 10, 11), 40, "/d")]
    await query_stack.write(site, rows)
    reply = await query_stack.query.Query(
        request(
            site,
            date_range=DAY,
            metrics=["visitors", "pageviews", "percentage"],
            dimensions=["event:page"],
            pagination={"limit": 3},
            include={"total_rows": True},
        ),
        metadata=ADMIN_MD,
    )
    assert [(list(r.dimensions), list(r.metrics)) for r in reply.results] == [
        (["/a"], [3, 3, 42.86]),
        (["/b"], [2, 2, 28.57]),
        (["/c"], [1, 2, 14.29]),  # ties on visitors go by page: /c before /d
    ]
    assert reply.meta.total_rows == 4
    by_views = await query(
        query_stack,
        site,
        date_range=DAY,
        metrics=["pageviews"],
        dimensions=["event:page"],
        order_by=[{"field": "pageviews", "direction": "asc"}, {"field": "event:page", "direction": "desc"}],
        pagination={"limit": 2, "offset": 1},
    )
    assert by_views == [(["/c"], [2]), (["/b"], [2])]  # /d (1 view) is skipped by the offset


async def test_visit_dimensions_come_from_the_first_event(query_stack: QueryStack) -> None:
    site, _ = await query_stack.site()
    google = {
        "referrer": "https://www.google.com/search",
        "referrer_host": "google.com",
        "referrer_source": "search",
    }
    await query_stack.write(
        site,
        [
            row(
                at(2024, 3, 10, 9),
                1,
                "/landing",
                country="DE",
                utm_source="newsletter",
                utm_term="x",
                **google,
            ),
            row(at(2024, 3, 10, 9, 5), 1, "/next", country="FR"),
            row(at(2024, 3, 10, 10), 2, "/", country="US", **google),
            row(at(2024, 3, 10, 11), 3, "/", country="US"),
        ],
    )
    by_source = await query(
        query_stack, site, date_range=DAY, metrics=["visits", "pageviews"], dimensions=["visit:source"]
    )
    assert by_source == [([""], [1, 1]), (["google.com"], [1, 1]), (["newsletter"], [1, 2])]
    by_entry = await query(
        query_stack,
        site,
        date_range=DAY,
        metrics=["visitors"],
        dimensions=[
            "visit:entry_page",
            "visit:exit_page",
            "visit:country",
            "visit:utm_term",
            "visit:referrer",
        ],
    )
    assert (["/landing", "/next", "DE", "x", "https://www.google.com/search"], [1]) in by_entry
    assert len(by_entry) == 3


async def test_filters_on_events_select_visits_that_have_such_an_event(query_stack: QueryStack) -> None:
    site, _ = await query_stack.site()
    await query_stack.write(
        site,
        [
            row(at(2024, 3, 10, 9), 1, "/", country="DE"),
            row(at(2024, 3, 10, 9, 1), 1, "/pricing", country="DE"),
            row(at(2024, 3, 10, 10), 2, "/", country="US"),
            row(at(2024, 3, 10, 11), 3, "/docs/a", country="US"),
            row(
                at(2024, 3, 10, 11, 2),
                3,
                "/docs/b",
                country="US",
                kind=2,
                name="copy",
                properties={"lang": "py"},
            ),
        ],
    )

    async def counts(*filters: Any) -> list[float]:
        rows = await query(
            query_stack,
            site,
            date_range=DAY,
            metrics=["visitors", "visits", "pageviews"],
            filters=list(filters),
        )
        return rows[0][1]

    # Visits that viewed /pricing: visitor 1's, all of it; page views: only the matching one.
    assert await counts(
        {"condition": {"operator": "is", "dimension": "event:page", "values": ["/pricing"]}}
    ) == [
        1,
        1,
        1,
    ]
    assert await counts(
        {"condition": {"operator": "is", "dimension": "visit:country", "values": ["US"]}}
    ) == [
        2,
        2,
        2,
    ]
    assert await counts(
        {"condition": {"operator": "contains", "dimension": "event:page", "values": ["doc"]}}
    ) == [
        1,
        1,
        1,
    ]
    assert await counts(
        {"condition": {"operator": "matches", "dimension": "event:page", "values": ["^/docs/[a-z]$"]}},
        {"condition": {"operator": "is", "dimension": "event:name", "values": ["pageview"]}},
    ) == [1, 1, 1]
    assert await counts(
        {"negation": {"condition": {"operator": "is", "dimension": "visit:country", "values": ["US"]}}}
    ) == [1, 1, 2]
    assert await counts(
        {
            "any_of": {
                "filters": [
                    {"condition": {"operator": "is", "dimension": "event:props:lang", "values": ["py"]}},
                    {
                        "condition": {
                            "operator": "is_not",
                            "dimension": "visit:country",
                            "values": ["US", "DE"],
                        }
                    },
                ]
            }
        }
    ) == [1, 1, 0]
    assert await counts(
        {"condition": {"operator": "contains_not", "dimension": "event:page", "values": ["/", "x"]}}
    ) == [0, 0, 0]


async def test_days_and_hours_are_the_sites_across_dst_and_odd_offsets(query_stack: QueryStack) -> None:
    # New York leaves DST on 2024-11-03: that day has 25 hours and 01:xx happens twice.
    site, _ = await query_stack.site("America/New_York")
    await query_stack.write(
        site,
        [
            row(at(2024, 11, 3, 4), 1),  # 00:00 EDT: the day's first instant
            row(at(2024, 11, 3, 5, 30), 2),  # 01:30 EDT
            row(at(2024, 11, 3, 6, 30), 3),  # 01:30 EST, the same local hour again
            row(at(2024, 11, 4, 4, 59), 4),  # 23:59 EST: still that day
            row(at(2024, 11, 4, 5), 5),  # 00:00 EST on the 4th
            row(at(2024, 11, 3, 3, 59), 6),  # 23:59 on the 2nd
        ],
    )
    reply = await query_stack.query.Query(
        request(
            site,
            date_range={"period": "day", "relative_to": "2024-11-03"},
            metrics=["visitors"],
            dimensions=["time:hour"],
            include={"time_labels": True},
        ),
        metadata=ADMIN_MD,
    )
    labels = list(reply.meta.time_labels)
    assert len(labels) == 24 and labels[0] == "2024-11-03 00:00:00" and labels[-1] == "2024-11-03 23:00:00"
    hours = {r.dimensions[0]: r.metrics[0] for r in reply.results}
    assert list(hours) == labels  # zero-filled, in order
    assert (hours["2024-11-03 00:00:00"], hours["2024-11-03 01:00:00"], hours["2024-11-03 23:00:00"]) == (
        1,
        2,
        1,
    )
    assert sum(hours.values()) == 4
    assert (reply.meta.start, reply.meta.end) == ("2024-11-03T04:00:00Z", "2024-11-04T05:00:00Z")

    # Kathmandu is UTC+05:45 and Kolkata UTC+05:30: days and hours start at odd UTC minutes.
    kathmandu, _ = await query_stack.site("Asia/Kathmandu")
    await query_stack.write(
        kathmandu,
        [row(at(2024, 3, 9, 18, 14), 1), row(at(2024, 3, 9, 18, 15), 2), row(at(2024, 3, 10, 18, 14), 3)],
    )
    days = await query(
        query_stack,
        kathmandu,
        date_range={"start": "2024-03-09", "end": "2024-03-10"},
        metrics=["visitors"],
        dimensions=["time:day"],
    )
    assert days == [(["2024-03-09"], [1]), (["2024-03-10"], [2])]
    hourly = await query(
        query_stack, kathmandu, date_range=DAY, metrics=["visitors"], dimensions=["time:hour"]
    )
    assert hourly == [(["2024-03-10 00:00:00"], [1]), (["2024-03-10 23:00:00"], [1])]
    kolkata, _ = await query_stack.site("Asia/Kolkata")
    await query_stack.write(kolkata, [row(at(2024, 3, 9, 18, 29), 1), row(at(2024, 3, 9, 18, 30), 2)])
    assert await query(query_stack, kolkata, date_range=DAY, metrics=["visitors"]) == [([], [1])]


async def test_weeks_months_and_named_periods(query_stack: QueryStack) -> None:
    site, _ = await query_stack.site("Europe/Berlin")
    await query_stack.write(
        site, [row(at(2024, 1, 31, 23, 30), 1), row(at(2024, 2, 5, 12), 2), row(at(2024, 3, 31, 1, 30), 3)]
    )
    weeks = await query(
        query_stack,
        site,
        date_range={"period": "6mo", "relative_to": "2024-03-31"},
        metrics=["visitors"],
        dimensions=["time:week"],
    )
    # 2024-01-31 23:30 UTC is Thursday 1 February in Berlin: its week starts Monday 29 January.
    assert weeks == [(["2024-01-29"], [1]), (["2024-02-05"], [1]), (["2024-03-25"], [1])]
    months = await query(
        query_stack,
        site,
        date_range={"period": "year", "relative_to": "2024-07-01"},
        metrics=["visitors"],
        dimensions=["time"],
    )
    assert months == [(["2024-02-01"], [2]), (["2024-03-01"], [1])]
    assert await query(
        query_stack, site, date_range={"period": "7d", "relative_to": "2024-02-07"}, metrics=["visitors"]
    ) == [([], [2])]
    assert await query(
        query_stack, site, date_range={"period": "7d", "relative_to": "2024-02-08"}, metrics=["visitors"]
    ) == [([], [1])]
    assert await query(query_stack, site, date_range={"period": "all"}, metrics=["visitors"]) == [([], [3])]


async def test_previous_period_comparison(query_stack: QueryStack) -> None:
    site, _ = await query_stack.site()
    await query_stack.write(
        site,
        [
            row(at(2024, 3, 9, 9), 1, "/a"),
            row(at(2024, 3, 9, 10), 2, "/a"),
            row(at(2024, 3, 10, 9), 3, "/a"),
            row(at(2024, 3, 10, 10), 4, "/b"),
        ],
    )
    reply = await query_stack.query.Query(
        request(
            site,
            date_range=DAY,
            metrics=["visitors", "bounce_rate"],
            dimensions=["visit:entry_page"],
            include={"comparison": {"mode": "previous_period"}},
        ),
        metadata=ADMIN_MD,
    )
    assert (reply.meta.comparison_start, reply.meta.comparison_end) == (
        "2024-03-09T00:00:00Z",
        "2024-03-10T00:00:00Z",
    )
    compared = {
        r.dimensions[0]: (
            list(r.metrics),
            list(r.comparison.metrics),
            json_format.MessageToDict(r.comparison)["change"],
        )
        for r in reply.results
    }
    assert compared == {"/a": ([1, 100], [2, 100], [-50, 0]), "/b": ([1, 100], [0, 0], [100, None])}


async def test_bad_requests_name_the_field_and_value(query_stack: QueryStack) -> None:
    site, _ = await query_stack.site()
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"date_range": DAY, "metrics": []}, "metrics", "at least one"),
        ({"date_range": DAY, "metrics": ["visitorz"]}, "metrics[0]", "'visitorz'"),
        (
            {"date_range": DAY, "metrics": ["visitors"], "dimensions": ["visit:city"]},
            "dimensions[0]",
            "'visit:city'",
        ),
        (
            {"date_range": DAY, "metrics": ["bounce_rate"], "dimensions": ["event:page"]},
            "metrics[0]",
            "event:page",
        ),
        ({"date_range": DAY, "metrics": ["percentage"]}, "metrics[0]", "dimension"),
        ({"date_range": {"period": "5d"}, "metrics": ["visitors"]}, "date_range.period", "'5d'"),
        (
            {"date_range": {"start": "2024-03-10", "end": "2024-03-01"}, "metrics": ["visitors"]},
            "date_range",
            "before",
        ),
        (
            {"date_range": {"start": "2024-13-01", "end": "2024-03-01"}, "metrics": ["visitors"]},
            "date_range",
            "2024-13-01",
        ),
        (
            {"date_range": DAY, "metrics": ["visitors"], "pagination": {"limit": 10001}},
            "pagination.limit",
            "10001",
        ),
        (
            {
                "date_range": DAY,
                "metrics": ["visitors"],
                "order_by": [{"field": "pageviews", "direction": "asc"}],
            },
            "order_by[0].field",
            "'pageviews'",
        ),
        (
            {
                "date_range": DAY,
                "metrics": ["visitors"],
                "filters": [{"condition": {"operator": "like", "dimension": "event:page", "values": ["/"]}}],
            },
            "filters[0].condition.operator",
            "'like'",
        ),
        (
            {
                "date_range": DAY,
                "metrics": ["visitors"],
                "filters": [
                    {
                        "all_of": {
                            "filters": [
                                {"condition": {"operator": "is", "dimension": "time", "values": ["x"]}}
                            ]
                        }
                    }
                ],
            },
            "filters[0].all_of.filters[0].condition.dimension",
            "time",
        ),
        (
            {
                "date_range": DAY,
                "metrics": ["visitors"],
                "filters": [
                    {"condition": {"operator": "matches", "dimension": "event:page", "values": ["(unclosed"]}}
                ],
            },
            "filters[0].condition.values[0]",
            "regular expression",
        ),
        (
            {"date_range": DAY, "metrics": ["visitors"], "include": {"time_labels": True}},
            "include.time_labels",
            "time",
        ),
        (
            {"date_range": DAY, "metrics": ["visitors"], "include": {"comparison": {"mode": "last_year"}}},
            "include.comparison.mode",
            "'last_year'",
        ),
    ]
    for fields, field, shown in cases:
        found = await refused(query_stack, site, grpc.StatusCode.INVALID_ARGUMENT, **fields)
        assert field in found, (fields, found)
        assert shown in found[field], (fields, found)
    await refused(
        query_stack, "not-a-uuid", grpc.StatusCode.INVALID_ARGUMENT, date_range=DAY, metrics=["visitors"]
    )


async def test_only_readers_of_the_site_may_query(query_stack: QueryStack) -> None:
    site, key = await query_stack.site()
    other, other_key = await query_stack.site()
    question = request(site, date_range=DAY, metrics=["visitors"])
    reply = await query_stack.query.Query(question, metadata=(("x-api-key", key),))
    assert list(reply.results[0].metrics) == [0]
    ingest_only = await query_stack.auth.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(site_id=site, scopes=[auth_pb2.SCOPE_INGEST]), metadata=ADMIN_MD
    )
    for metadata, code in [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        ((("x-api-key", other_key),), grpc.StatusCode.PERMISSION_DENIED),
        ((("x-api-key", ingest_only.api_key),), grpc.StatusCode.PERMISSION_DENIED),
        ((("x-api-key", "ak_unknown_" + "x" * 40),), grpc.StatusCode.UNAUTHENTICATED),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await query_stack.query.Query(question, metadata=metadata)
        assert caught.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await query_stack.query.Query(
            request(str(uuid.uuid4()), date_range=DAY, metrics=["visitors"]), metadata=ADMIN_MD
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    del other


async def test_a_statement_past_its_time_is_deadline_exceeded(query_stack: QueryStack) -> None:
    site, _ = await query_stack.site()
    await query_stack.write(site, [row(at(2024, 3, 10, 9), 1)])
    question = request(site, date_range=DAY, metrics=["visits"])
    async with query_stack.other_query_server(statement_timeout_ms=300) as impatient:
        # Another transaction holds the table, so the statement waits until PostgreSQL cancels it.
        async with query_stack.pool.connection() as blocker, blocker.transaction():
            await blocker.execute(
                "LOCK TABLE analytics.sessions, analytics.visit_counts_15m IN ACCESS EXCLUSIVE MODE"
            )
            started = datetime.now(UTC)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await impatient.Query(question, metadata=ADMIN_MD, timeout=30)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, caught.value.details()
            assert "deadline" in (caught.value.details() or "")
            assert datetime.now(UTC) - started < timedelta(seconds=5)
            # The caller's own deadline, shorter than the configured limit, bounds the statement too.
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await query_stack.query.Query(question, metadata=ADMIN_MD, timeout=0.5)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The statements were cancelled, not left waiting: both servers answer at once.
        assert list((await impatient.Query(question, metadata=ADMIN_MD, timeout=5)).results[0].metrics) == [1]
    assert await query(query_stack, site, date_range=DAY, metrics=["visits"]) == [([], [1])]
