"""Goals: their CRUD through ProductService, and event:goal and conversion_rate in Query, held to
the reference implementation on generated traffic and goals."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

from analytics.v1 import auth_pb2, product_pb2, query_pb2
from analytics_testing.grpc_errors import violations
from query_service import reference
from query_service.answer import run
from query_service.product.definitions import site_goals
from query_service.reference import EventRow
from query_service.request import parse_query

from .conftest import ADMIN_MD, QueryStack
from .test_differential import THROUGH_DATABASE, a_filter, expected, normal, traffic

pytestmark = pytest.mark.integration

GOALS = [
    {"event_name": "signup"},
    {"event_name": "download"},
    {"event_name": "never_sent"},
    {"page_path": "/docs/*"},
    {"page_path": "/**"},
    {"page_path": "/b/*"},
    {"page_path": "/a"},
    {"page_path": "/*", "display_name": "Top level"},
]


async def _create(stack: QueryStack, site_id: str, definition: dict[str, str]) -> product_pb2.Goal:
    made = await stack.product.CreateGoal(
        product_pb2.CreateGoalRequest(site_id=site_id, goal=product_pb2.GoalDefinition(**definition)),
        metadata=ADMIN_MD,
    )
    return made.goal


async def test_goals_are_created_listed_updated_and_deleted(query_stack: QueryStack) -> None:
    site_id, key = await query_stack.site()
    signup = await _create(query_stack, site_id, {"event_name": "signup"})
    blog = await _create(query_stack, site_id, {"page_path": "/blog/**"})
    assert (signup.display_name, blog.display_name) == ("signup", "Visit /blog/**")
    key_md = (("x-api-key", key),)
    listed = await query_stack.product.ListGoals(
        product_pb2.ListGoalsRequest(site_id=site_id), metadata=key_md
    )
    assert [g.goal_id for g in listed.goals] == [signup.goal_id, blog.goal_id]

    changed = await query_stack.product.UpdateGoal(
        product_pb2.UpdateGoalRequest(
            site_id=site_id,
            goal_id=blog.goal_id,
            goal=product_pb2.GoalDefinition(page_path="/blog/*", display_name="Blog"),
        ),
        metadata=ADMIN_MD,
    )
    assert (changed.goal.page_path, changed.goal.display_name) == ("/blog/*", "Blog")
    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await _create(query_stack, site_id, {"event_name": "x", "display_name": "Blog"})
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS

    await query_stack.product.DeleteGoal(
        product_pb2.DeleteGoalRequest(site_id=site_id, goal_id=signup.goal_id), metadata=ADMIN_MD
    )
    listed = await query_stack.product.ListGoals(
        product_pb2.ListGoalsRequest(site_id=site_id), metadata=key_md
    )
    assert [g.display_name for g in listed.goals] == ["Blog"]
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await query_stack.product.DeleteGoal(
            product_pb2.DeleteGoalRequest(site_id=site_id, goal_id=signup.goal_id), metadata=ADMIN_MD
        )
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND

    # Another site sees none of them.
    other, _ = await query_stack.site()
    listed = await query_stack.product.ListGoals(
        product_pb2.ListGoalsRequest(site_id=other), metadata=ADMIN_MD
    )
    assert list(listed.goals) == []


async def test_goal_writes_need_the_admin_scope(query_stack: QueryStack) -> None:
    site_id, key = await query_stack.site()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await query_stack.product.CreateGoal(
            product_pb2.CreateGoalRequest(site_id=site_id, goal=product_pb2.GoalDefinition(event_name="a")),
            metadata=(("x-api-key", key),),
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    admin_key = await query_stack.auth.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(site_id=site_id, scopes=[auth_pb2.SCOPE_ADMIN, auth_pb2.SCOPE_READ]),
        metadata=ADMIN_MD,
    )
    made = await query_stack.product.CreateGoal(
        product_pb2.CreateGoalRequest(site_id=site_id, goal=product_pb2.GoalDefinition(event_name="a")),
        metadata=(("x-api-key", admin_key.api_key),),
    )
    assert made.goal.event_name == "a"


@pytest.mark.parametrize(
    ("definition", "field"),
    [
        ({}, "goal"),
        ({"event_name": "a", "page_path": "/a"}, "goal"),
        ({"page_path": "blog/*"}, "goal.page_path"),
        ({"page_path": "/a/***"}, "goal.page_path"),
        ({"event_name": "x" * 101}, "goal.event_name"),
        ({"event_name": "a", "display_name": "d" * 121}, "goal.display_name"),
        ({"event_name": "a\x00b"}, "goal.event_name"),
    ],
)
async def test_bad_goals_are_refused_naming_the_field(
    query_stack: QueryStack, definition: dict[str, str], field: str
) -> None:
    site_id, _ = await query_stack.site()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _create(query_stack, site_id, definition)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(refused.value)


async def test_unknown_goals_and_misplaced_goal_filters_are_refused(query_stack: QueryStack) -> None:
    site_id, key = await query_stack.site()
    await _create(query_stack, site_id, {"event_name": "signup"})
    cases = [
        (
            {"metrics": ["visitors"], "filters": [_goal_filter("is", ["nope"])]},
            "filters[0].condition.values[0]",
        ),
        (
            {"metrics": ["visitors"], "filters": [_goal_filter("matches", ["s.*"])]},
            "filters[0].condition.operator",
        ),
        ({"metrics": ["conversion_rate"]}, "metrics[0]"),
        (
            {"metrics": ["conversion_rate"], "filters": [{"negation": _goal_filter("is", ["signup"])}]},
            "metrics[0]",
        ),
        ({"metrics": ["bounce_rate"], "dimensions": ["event:goal"]}, "metrics[0]"),
    ]
    for body, field in cases:
        request = json_format.ParseDict(
            {"site_id": site_id, "date_range": {"period": "7d"}, **body}, query_pb2.QueryRequest()
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await query_stack.query.Query(request, metadata=(("x-api-key", key),))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, body
        assert field in violations(refused.value), (body, refused.value.details())


def _goal_filter(operator: str, values: list[str]) -> dict[str, Any]:
    return {"condition": {"operator": operator, "dimension": "event:goal", "values": values}}


@st.composite
def goal_questions(draw: st.DrawFn, first: date, names: list[str]) -> dict[str, Any]:
    grouped = draw(st.booleans())
    other = draw(st.sampled_from([[], ["visit:source"], ["visit:country"], ["event:page"], ["time:day"]]))
    dimensions = (["event:goal"] if grouped else []) + other
    top_goal = draw(st.booleans()) or not grouped
    filters: list[dict[str, Any]] = []
    if top_goal:
        operator = draw(st.sampled_from(["is", "is", "is_not", "contains"]))
        values = (
            draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
            if operator.startswith("is")
            else [draw(st.sampled_from(["o", "Visit", "/", "zzz"]))]
        )
        filters.append(_goal_filter(operator, values))
    if draw(st.booleans()):
        filters.append(a_filter(draw, 1))
    metrics = draw(
        st.lists(
            st.sampled_from(["conversion_rate", "visitors", "events", "pageviews", "visits", "percentage"]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    if not dimensions and "percentage" in metrics:
        metrics.remove("percentage")
    if "conversion_rate" not in metrics:
        metrics.append("conversion_rate")
    nested = not any(f["condition"]["dimension"] == "event:goal" for f in filters if "condition" in f)
    if nested and not grouped:
        metrics.remove("conversion_rate")
        filters.append({"any_of": {"filters": [_goal_filter("is", [names[0]]), a_filter(draw, 2)]}})
        metrics = metrics or ["visitors"]
    start = first + timedelta(days=draw(st.integers(-1, 1)))
    end = start + timedelta(days=draw(st.integers(0, 3)))
    body: dict[str, Any] = {
        "date_range": {"start": start.isoformat(), "end": end.isoformat()},
        "metrics": metrics,
        "dimensions": dimensions,
        "filters": filters,
        "pagination": {"limit": draw(st.sampled_from([0, 1, 3])), "offset": draw(st.sampled_from([0, 0, 1]))},
        "include": {"total_rows": True},
    }
    if draw(st.booleans()):
        fields = [*metrics, *dimensions]
        keys = draw(st.lists(st.sampled_from(fields), min_size=1, max_size=2, unique=True))
        body["order_by"] = [{"field": k, "direction": draw(st.sampled_from(["asc", "desc"]))} for k in keys]
    if draw(st.integers(0, 3)) == 0:
        body["include"]["comparison"] = {"mode": "previous_period"}
    return body


@THROUGH_DATABASE
@given(data=st.data())
async def test_goal_answers_equal_the_reference(query_stack: QueryStack, data: st.DataObject) -> None:
    zone, rows = data.draw(traffic())
    site_id, _ = await query_stack.site(timezone=zone)
    chosen = data.draw(st.lists(st.sampled_from(range(len(GOALS))), min_size=1, max_size=4, unique=True))
    for index in chosen:
        await _create(query_stack, site_id, GOALS[index])
    shuffled = list(rows)
    random.Random(len(rows)).shuffle(shuffled)
    await query_stack.write(site_id, shuffled, batch=max(1, len(rows) // 2))
    async with query_stack.pool.connection() as conn:
        goals = await site_goals(conn, site_id)
        body = data.draw(goal_questions(min(r.time for r in rows).date(), [g.name for g in goals]))
        request = json_format.ParseDict({"site_id": site_id, **body}, query_pb2.QueryRequest())

        async def no_first_day() -> date | None:
            return None

        query, _ = await parse_query(request, site_id, zone, no_first_day, goals)
        got = await run(conn, query)
    assert normal(got) == expected(reference.answer(query, rows)), body


async def test_conversion_rate_through_the_query_rpc(query_stack: QueryStack) -> None:
    """Three visitors, two of whom sign up, one from each source: the rates Plausible shows."""
    site_id, key = await query_stack.site()
    await _create(query_stack, site_id, {"event_name": "signup"})
    await _create(query_stack, site_id, {"page_path": "/pricing/**"})
    base = datetime(2024, 5, 1, 12, tzinfo=UTC)
    rows = [
        EventRow(time=base, event_id=uuid.uuid4(), visitor_id=1, path="/pricing/pro"),
        EventRow(time=base, event_id=uuid.uuid4(), visitor_id=1, kind=2, name="signup"),
        EventRow(time=base, event_id=uuid.uuid4(), visitor_id=2, kind=2, name="signup"),
        EventRow(time=base, event_id=uuid.uuid4(), visitor_id=3, path="/"),
    ]
    await query_stack.write(site_id, rows)
    body = {
        "site_id": site_id,
        "date_range": {"start": "2024-05-01", "end": "2024-05-01"},
        "metrics": ["visitors", "events", "conversion_rate"],
        "dimensions": ["event:goal"],
    }
    answer = await query_stack.query.Query(
        json_format.ParseDict(body, query_pb2.QueryRequest()), metadata=(("x-api-key", key),)
    )
    assert [(list(r.dimensions), list(r.metrics)) for r in answer.results] == [
        (["signup"], [2, 2, 66.67]),
        (["Visit /pricing/**"], [1, 1, 33.33]),
    ]
