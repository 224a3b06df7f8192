"""Funnels: definitions CRUD through ProductService, and the funnel report held to the brute-force
reference on generated traffic, steps, windows, filters and breakdowns."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
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
from query_service.product import analysis, definitions, funnels
from query_service.product import reference as product_reference
from query_service.reference import EventRow
from query_service.servicer import Reports

from .conftest import ADMIN_MD, QueryStack
from .test_differential import THROUGH_DATABASE, ZONES, a_filter

pytestmark = pytest.mark.integration

NAMES = ["signup", "add", "buy"]
PATHS = ["/", "/docs/a", "/docs/b/c", "/shop"]
STEPS: list[dict[str, Any]] = [
    {"event_name": "signup"},
    {"event_name": "add"},
    {"event_name": "buy", "filters": {"plan": "pro"}},
    {"event_name": "buy"},
    {"page_path": "/docs/*"},
    {"event_name": "page_view"},
    {"page_path": "/**", "filters": {"plan": "free"}},
]
# Seconds between a person's events: the same instant, within a visit, across visits and days.
GAPS = [0, 1, 30, 30, 600, 600, 1801, 3600, 86_400, 200_000]
BREAKDOWNS = ["", "visit:country", "visit:source", "visit:device", "visit:entry_page"]
# A step's own window: none (the greedy pass answers when no step has one), or seconds around GAPS.
STEP_WINDOWS = [None, None, None, 1, 30, 600, 1800, 3600, 86_400]


@st.composite
def people(draw: st.DrawFn) -> tuple[str, list[EventRow]]:
    """A few people, each a run of events seconds to days apart, some at the same instant."""
    zone = draw(st.sampled_from(sorted(ZONES)))
    rows: list[EventRow] = []
    ids = iter(range(1, 100_000))
    for visitor in range(1, draw(st.integers(1, 6)) + 1):
        at = ZONES[zone] + timedelta(minutes=draw(st.integers(-24 * 60, 24 * 60)))
        country = draw(st.sampled_from(["", "DE", "US"]))
        for _ in range(draw(st.integers(2, 12))):
            at += timedelta(seconds=draw(st.sampled_from(GAPS)))
            kind = draw(st.sampled_from([1, 1, 2, 2]))
            rows.append(
                EventRow(
                    time=at,
                    event_id=uuid.UUID(int=next(ids) * 7919 % 100_003),
                    visitor_id=visitor if draw(st.integers(0, 20)) else 0,
                    kind=kind,
                    name="pageview" if kind == 1 else draw(st.sampled_from(NAMES)),
                    path=draw(st.sampled_from(PATHS)),
                    country=country if draw(st.integers(0, 3)) else "FR",
                    device=draw(st.sampled_from(["", "mobile"])),
                    is_bot=visitor == 6,
                    properties=draw(st.sampled_from([{}, {"plan": "pro"}, {"plan": "free"}])),
                    **draw(
                        st.sampled_from(
                            [
                                {},
                                {
                                    "referrer_host": "t.co",
                                    "referrer_source": "social",
                                    "referrer": "https://t.co/",
                                },
                            ]
                        )
                    ),
                )
            )
    return zone, rows


def _step(definition: dict[str, Any]) -> product_pb2.FunnelStep:
    return product_pb2.FunnelStep(**definition)


@THROUGH_DATABASE
@given(data=st.data())
async def test_funnels_equal_the_reference(query_stack: QueryStack, data: st.DataObject) -> None:
    zone, rows = data.draw(people())
    site_id, _ = await query_stack.site(timezone=zone)
    shuffled = list(rows)
    random.Random(len(rows)).shuffle(shuffled)
    await query_stack.write(site_id, shuffled, batch=max(1, len(rows) // 2))
    common = [STEPS[0], STEPS[1], STEPS[3], STEPS[5], STEPS[6]]
    chosen = data.draw(st.lists(st.sampled_from(STEPS) | st.sampled_from(common), min_size=2, max_size=4))
    if data.draw(st.booleans()):
        chosen = [chosen[0]] + [
            {**s, "time_window_seconds": gap} if (gap := data.draw(st.sampled_from(STEP_WINDOWS))) else s
            for s in chosen[1:]
        ]
    steps = definitions.check_steps([_step(s) for s in chosen])
    window = data.draw(st.sampled_from([1, 60, 3600, 86_400, 604_800, 604_800]))
    first = min(r.time for r in rows).astimezone(ZoneInfo(zone)).date()
    start = first + timedelta(days=data.draw(st.sampled_from([-1, 0, 0, 1])))
    end = start + timedelta(days=data.draw(st.integers(1, 5)))
    filters = [a_filter(data.draw, 1)] if data.draw(st.integers(0, 2)) == 0 else []
    request = analysis.stats_request(
        site_id,
        query_pb2.DateRange(start=start.isoformat(), end=end.isoformat()),
        [json_format.ParseDict(f, query_pb2.Filter()) for f in filters],
        data.draw(st.sampled_from(BREAKDOWNS)),
    )
    async with query_stack.pool.connection() as conn:
        query = await Reports.parse(conn, request, site_id, zone)
        got = await funnels.funnel(conn, query, steps, window)
    want_steps, want_groups = product_reference.funnel(query, steps, window, rows)

    def shown(
        results: Sequence[funnels.StepResult] | Sequence[product_reference.RefStep],
    ) -> list[tuple[Any, ...]]:
        fields = ("entered", "converted", "conversion_rate", "conversion_rate_from_start", "drop_off")
        return [
            (*(getattr(r, f) for f in fields), r.drop_off_rate, r.median_seconds_to_convert) for r in results
        ]

    assert shown(got.steps) == shown(want_steps), (chosen, window)
    assert [(v, shown(g)) for v, g in got.groups] == [(v, shown(g)) for v, g in want_groups]


async def _create(stack: QueryStack, site_id: str, **fields: Any) -> product_pb2.Funnel:
    made = await stack.product.CreateFunnel(
        json_format.ParseDict({"site_id": site_id, **fields}, product_pb2.CreateFunnelRequest()),
        metadata=ADMIN_MD,
    )
    return made.funnel


async def _update(stack: QueryStack, site_id: str, funnel_id: str, **fields: Any) -> product_pb2.Funnel:
    changed = await stack.product.UpdateFunnel(
        json_format.ParseDict(
            {"site_id": site_id, "funnel_id": funnel_id, **fields}, product_pb2.UpdateFunnelRequest()
        ),
        metadata=ADMIN_MD,
    )
    return changed.funnel


async def test_a_saved_funnel_is_answered_step_by_step(query_stack: QueryStack) -> None:
    """Three people: one buys within the window, one adds to the cart only, one buys too late."""
    site_id, key = await query_stack.site()
    base = datetime(2024, 5, 1, 10, tzinfo=UTC)

    def event(visitor: int, minutes: int, name: str) -> EventRow:
        return EventRow(
            time=base + timedelta(minutes=minutes),
            event_id=uuid.uuid4(),
            visitor_id=visitor,
            kind=1 if name == "pageview" else 2,
            name=name,
            path="/",
        )

    await query_stack.write(
        site_id,
        [
            event(1, 0, "pageview"),
            event(1, 2, "add_to_cart"),
            event(1, 10, "purchase"),
            event(2, 0, "pageview"),
            event(2, 4, "add_to_cart"),
            event(3, 0, "pageview"),
            event(3, 1, "add_to_cart"),
            event(3, 90, "purchase"),
        ],
    )
    funnel = await _create(
        query_stack,
        site_id,
        name="Shop",
        steps=[{"eventName": "page_view"}, {"eventName": "add_to_cart"}, {"eventName": "purchase"}],
        window_seconds=3600,
    )
    assert [s.event_name for s in funnel.steps] == ["pageview", "add_to_cart", "purchase"]
    answer = await query_stack.product.QueryFunnel(
        json_format.ParseDict(
            {
                "site_id": site_id,
                "funnel_id": funnel.funnel_id,
                "date_range": {"start": "2024-05-01", "end": "2024-05-01"},
            },
            product_pb2.QueryFunnelRequest(),
        ),
        metadata=(("x-api-key", key),),
    )
    figures = [
        (
            s.name,
            s.entered,
            s.converted,
            s.conversion_rate,
            s.drop_off,
            s.drop_off_rate,
            s.median_seconds_to_convert,
        )
        for s in answer.report.steps
    ]
    assert figures == [
        ("pageview", 3, 3, 100.0, 0, 0.0, 0.0),
        ("add_to_cart", 3, 3, 100.0, 0, 0.0, 120.0),
        ("purchase", 3, 1, 33.33, 2, 66.67, 480.0),
    ]
    assert answer.report.steps[2].conversion_rate_from_start == 33.33


async def test_funnel_definitions_crud_and_refusals(query_stack: QueryStack) -> None:
    site_id, key = await query_stack.site()
    made = await _create(
        query_stack,
        site_id,
        name="Docs",
        steps=[{"pagePath": "/docs/*"}, {"eventName": "signup", "filters": {"plan": "pro"}}],
    )
    assert made.window_seconds == definitions.DEFAULT_WINDOW_S
    key_md = (("x-api-key", key),)
    listed = await query_stack.product.ListFunnels(
        product_pb2.ListFunnelsRequest(site_id=site_id), metadata=key_md
    )
    assert [f.funnel_id for f in listed.funnels] == [made.funnel_id]
    got = await query_stack.product.GetFunnel(
        product_pb2.GetFunnelRequest(site_id=site_id, funnel_id=made.funnel_id), metadata=key_md
    )
    assert dict(got.funnel.steps[1].filters) == {"plan": "pro"}
    changed = await _update(
        query_stack,
        site_id,
        made.funnel_id,
        name="Docs 2",
        steps=[{"pagePath": "/docs/**"}, {"eventName": "signup"}, {"eventName": "buy"}],
        window_seconds=60,
    )
    assert (changed.name, len(changed.steps), changed.window_seconds) == (
        "Docs 2",
        3,
        60,
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await query_stack.product.DeleteFunnel(
            product_pb2.DeleteFunnelRequest(site_id=site_id, funnel_id=made.funnel_id), metadata=key_md
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await query_stack.product.DeleteFunnel(
        product_pb2.DeleteFunnelRequest(site_id=site_id, funnel_id=made.funnel_id), metadata=ADMIN_MD
    )
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await query_stack.product.GetFunnel(
            product_pb2.GetFunnelRequest(site_id=site_id, funnel_id=made.funnel_id), metadata=key_md
        )
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND

    bad_creates: list[tuple[dict[str, Any], str]] = [
        ({"name": "x", "steps": [{"eventName": "a"}]}, "steps"),
        ({"name": "x", "steps": [{"eventName": "a"}] * 9}, "steps"),
        ({"name": "", "steps": [{"eventName": "a"}, {"eventName": "b"}]}, "name"),
        ({"name": "x", "steps": [{"eventName": "a"}, {"pagePath": "docs"}]}, "steps[1].page_path"),
        ({"name": "x", "steps": [{"eventName": "a"}, {}]}, "steps[1]"),
        (
            {"name": "x", "steps": [{"eventName": "a"}, {"eventName": "b"}], "window_seconds": 0},
            "window_seconds",
        ),
        (
            {"name": "x", "steps": [{"eventName": "a"}, {"eventName": "b", "filters": {"k": "\x00"}}]},
            "steps[1].filters",
        ),
        (
            {"name": "x", "steps": [{"eventName": "a"}, {"eventName": "b"}], "window_seconds": 10**8},
            "window_seconds",
        ),
    ]
    for body, field in bad_creates:
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await _create(query_stack, site_id, **body)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, body
        assert field in violations(bad.value), (body, bad.value.details())

    day = {"start": "2024-05-01", "end": "2024-05-01"}
    bad_queries: list[tuple[dict[str, Any], str]] = [
        ({"funnel_id": str(uuid.uuid4()), "date_range": day}, "funnel_id"),
        ({"steps": [{"eventName": "a"}], "date_range": day}, "steps"),
        (
            {"steps": [{"eventName": "a"}, {"eventName": "b"}], "date_range": day, "breakdown": "event:page"},
            "breakdown",
        ),
        (
            {
                "steps": [{"eventName": "a"}, {"eventName": "b"}],
                "date_range": {"period": "all", "start": "x"},
            },
            "date_range.period",
        ),
        (
            {
                "steps": [{"eventName": "a"}, {"eventName": "b"}],
                "date_range": {"start": "2020-01-01", "end": "2024-01-01"},
            },
            "date_range",
        ),
        (
            {
                "steps": [{"eventName": "a"}, {"eventName": "b"}],
                "date_range": day,
                "filters": [
                    {"condition": {"operator": "matches", "dimension": "event:page", "values": ["("]}}
                ],
            },
            "filters[0].condition.values[0]",
        ),
    ]
    for body, field in bad_queries:
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await query_stack.product.QueryFunnel(
                json_format.ParseDict({"site_id": site_id, **body}, product_pb2.QueryFunnelRequest()),
                metadata=key_md,
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, body
        assert field in violations(bad.value), (body, bad.value.details())


async def test_seed_funnel_analytics_uses_the_keys_site(query_stack: QueryStack) -> None:
    site_id, key = await query_stack.site()
    funnel = await _create(query_stack, site_id, name="F", steps=[{"eventName": "a"}, {"eventName": "b"}])
    base = datetime(2024, 6, 3, 9, tzinfo=UTC)
    await query_stack.write(
        site_id,
        [
            EventRow(time=base, event_id=uuid.uuid4(), visitor_id=5, kind=2, name="a"),
            EventRow(time=base + timedelta(seconds=5), event_id=uuid.uuid4(), visitor_id=5, kind=2, name="b"),
        ],
    )
    answer = await query_stack.product.GetFunnelAnalytics(
        product_pb2.GetFunnelAnalyticsRequest(
            funnel_id=funnel.funnel_id, start_date="2024-06-03", end_date="2024-06-03"
        ),
        metadata=(("x-api-key", key),),
    )
    assert [(s.entered, s.converted, s.median_seconds_to_convert) for s in answer.report.steps] == [
        (1, 1, 0.0),
        (1, 1, 5.0),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await query_stack.product.GetFunnelAnalytics(
            product_pb2.GetFunnelAnalyticsRequest(funnel_id=funnel.funnel_id, start_date="2024-06-03"),
            metadata=(("x-api-key", key),),
        )
    assert "end_date" in violations(bad.value)


async def test_a_sites_definitions_are_deleted_with_it(query_stack: QueryStack) -> None:
    """Site deletion removes the site's goals and funnels, and no other site's."""
    site_id, _ = await query_stack.site()
    other, _ = await query_stack.site()
    for site in (site_id, other):
        await _create(query_stack, site, name="F", steps=[{"eventName": "a"}, {"eventName": "b"}])
        await query_stack.product.CreateGoal(
            product_pb2.CreateGoalRequest(site_id=site, goal=product_pb2.GoalDefinition(event_name="a")),
            metadata=ADMIN_MD,
        )
    async with query_stack.pool.connection() as conn:
        assert await definitions.delete_site_definitions(conn, site_id) == 2
        assert await definitions.list_goals(conn, site_id) == []
        assert await definitions.list_funnels(conn, site_id) == []
        assert len(await definitions.list_goals(conn, other)) == 1
        assert len(await definitions.list_funnels(conn, other)) == 1


async def test_step_windows_take_the_later_event_greedy_would_miss(query_stack: QueryStack) -> None:
    """buy must come within 60 s of add. Person 1's first add (10 s) has no buy within 60 s, their
    second (100 s) has one 50 s later: they convert. Person 2's only add is 140 s before the buy.
    Person 3's add is 200 s after the view, past add's own 120 s window."""
    site_id, key = await query_stack.site()
    base = datetime(2024, 5, 2, 10, tzinfo=UTC)
    rows = [
        EventRow(
            time=base + timedelta(seconds=at), event_id=uuid.uuid4(), visitor_id=visitor, kind=2, name=name
        )
        for visitor, at, name in [
            (1, 0, "view"),
            (1, 10, "add"),
            (1, 100, "add"),
            (1, 150, "buy"),
            (2, 0, "view"),
            (2, 10, "add"),
            (2, 150, "buy"),
            (3, 0, "view"),
            (3, 200, "add"),
            (3, 210, "buy"),
        ]
    ]
    await query_stack.write(site_id, rows)
    funnel = await _create(
        query_stack,
        site_id,
        name="Timed",
        steps=[
            {"eventName": "view"},
            {"eventName": "add", "timeWindow": 120},
            {"eventName": "buy", "timeWindow": 60},
        ],
    )
    assert [s.time_window_seconds for s in funnel.steps[1:]] == [120, 60]
    assert not funnel.steps[0].HasField("time_window_seconds")
    key_md = (("x-api-key", key),)
    day = {"start": "2024-05-02", "end": "2024-05-02"}
    saved = await query_stack.product.QueryFunnel(
        json_format.ParseDict(
            {"site_id": site_id, "funnel_id": funnel.funnel_id, "date_range": day},
            product_pb2.QueryFunnelRequest(),
        ),
        metadata=key_md,
    )
    figures = [(s.entered, s.converted, s.median_seconds_to_convert) for s in saved.report.steps]
    assert figures == [(3, 3, 0.0), (3, 2, 55.0), (2, 1, 50.0)]
    assert [
        s.time_window_seconds if s.HasField("time_window_seconds") else None for s in saved.report.steps
    ] == [
        None,
        120,
        60,
    ]
    # The same steps ad hoc, with the proto field name, give the same answer; so does the reference.
    ad_hoc = await query_stack.product.QueryFunnel(
        json_format.ParseDict(
            {
                "site_id": site_id,
                "steps": [
                    {"event_name": "view"},
                    {"event_name": "add", "time_window_seconds": 120},
                    {"event_name": "buy", "time_window_seconds": 60},
                ],
                "date_range": day,
            },
            product_pb2.QueryFunnelRequest(),
        ),
        metadata=key_md,
    )
    assert [(s.entered, s.converted, s.median_seconds_to_convert) for s in ad_hoc.report.steps] == figures
    steps = definitions.check_steps(list(funnel.steps))
    async with query_stack.pool.connection() as conn:
        query = await Reports.parse(
            conn, analysis.stats_request(site_id, query_pb2.DateRange(**day), []), site_id, "UTC"
        )
    want, _ = product_reference.funnel(query, steps, funnel.window_seconds, rows)
    assert [(r.entered, r.converted, r.median_seconds_to_convert) for r in want] == figures
    # Without step windows the funnel is the greedy one: everyone reaches buy within 7 days.
    plain = await _update(
        query_stack,
        site_id,
        funnel.funnel_id,
        name="Plain",
        steps=[{"eventName": "view"}, {"eventName": "add"}, {"eventName": "buy"}],
    )
    assert not any(s.HasField("time_window_seconds") for s in plain.steps)
    again = await query_stack.product.GetFunnelAnalytics(
        product_pb2.GetFunnelAnalyticsRequest(
            funnel_id=funnel.funnel_id, start_date="2024-05-02", end_date="2024-05-02"
        ),
        metadata=key_md,
    )
    assert [(s.entered, s.converted) for s in again.report.steps] == [(3, 3), (3, 3), (3, 3)]


async def test_rows_saved_before_step_windows_are_read(query_stack: QueryStack) -> None:
    """A definition stored without the time_window_seconds key (as every one was before) reads as
    steps without windows; a window written later is kept in the row."""
    site_id, key = await query_stack.site()
    funnel_id = uuid.uuid4()
    async with query_stack.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO query.funnels (site_id, funnel_id, name, steps, window_seconds)"
            " VALUES (%s, %s, 'Old', %s::jsonb, 3600)",
            (
                site_id,
                funnel_id,
                '[{"event_name": "a", "page_path": "", "filters": {}},'
                ' {"event_name": "b", "page_path": "", "filters": {"plan": "pro"}}]',
            ),
        )
    got = await query_stack.product.GetFunnel(
        product_pb2.GetFunnelRequest(site_id=site_id, funnel_id=str(funnel_id)),
        metadata=(("x-api-key", key),),
    )
    assert [(s.event_name, s.HasField("time_window_seconds")) for s in got.funnel.steps] == [
        ("a", False),
        ("b", False),
    ]
    await _update(
        query_stack,
        site_id,
        str(funnel_id),
        name="Old",
        steps=[{"eventName": "a"}, {"eventName": "b", "timeWindow": 30}],
    )
    async with query_stack.pool.connection() as conn:
        cur = await conn.execute("SELECT steps FROM query.funnels WHERE funnel_id = %s", (funnel_id,))
        row = await cur.fetchone()
    assert row is not None
    assert [step.get("time_window_seconds") for step in row[0]] == [None, 30]


async def test_step_window_refusals_name_the_step(query_stack: QueryStack) -> None:
    site_id, key = await query_stack.site()
    made = await _create(query_stack, site_id, name="F", steps=[{"eventName": "a"}, {"eventName": "b"}])
    cases: list[tuple[list[dict[str, Any]], str]] = [
        ([{"eventName": "a", "timeWindow": 60}, {"eventName": "b"}], "steps[0].time_window_seconds"),
        ([{"eventName": "a"}, {"eventName": "b", "timeWindow": 0}], "steps[1].time_window_seconds"),
        (
            [{"eventName": "a"}, {"eventName": "b"}, {"eventName": "c", "time_window_seconds": 7_776_001}],
            "steps[2].time_window_seconds",
        ),
    ]
    day = {"start": "2024-05-01", "end": "2024-05-01"}
    for steps, field in cases:
        calls = [
            query_stack.product.CreateFunnel(
                json_format.ParseDict(
                    {"site_id": site_id, "name": "x", "steps": steps}, product_pb2.CreateFunnelRequest()
                ),
                metadata=ADMIN_MD,
            ),
            query_stack.product.UpdateFunnel(
                json_format.ParseDict(
                    {"site_id": site_id, "funnel_id": made.funnel_id, "name": "x", "steps": steps},
                    product_pb2.UpdateFunnelRequest(),
                ),
                metadata=ADMIN_MD,
            ),
            query_stack.product.QueryFunnel(
                json_format.ParseDict(
                    {"site_id": site_id, "steps": steps, "date_range": day}, product_pb2.QueryFunnelRequest()
                ),
                metadata=(("x-api-key", key),),
            ),
        ]
        for pending in calls:
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await pending
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, steps
            assert field in violations(bad.value), (steps, bad.value.details())
    # The largest window is accepted.
    widest = [{"eventName": "a"}, {"eventName": "b", "timeWindow": 7_776_000}]
    assert (await _create(query_stack, site_id, name="W", steps=widest)).steps[
        1
    ].time_window_seconds == 7_776_000
