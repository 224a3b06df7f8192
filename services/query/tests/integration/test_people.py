"""The people reports (sessions, a person's timeline, page flows, raw export) against their Python
reference (query_service.reference_people) on generated traffic stored by the processor's writer,
and PeopleService through a real server and stub: answers, paging and refusals."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

from analytics.v1 import people_pb2, people_pb2_grpc, query_pb2
from analytics_grpc import GrpcServer
from query_service import reference_people
from query_service.people import PeopleServicer, select
from query_service.reference import EventRow
from query_service.reports import export, flows, sessions, stats
from query_service.reports.timeline import timeline
from query_service.snapshot import Snapshots
from query_service.spec import StatsQuery

from .conftest import QueryStack
from .test_differential import PATHS, THROUGH_DATABASE, a_filter, traffic

pytestmark = pytest.mark.integration


def with_users(rows: list[EventRow]) -> list[EventRow]:
    """Odd visitors are signed in (one user_id each, as ingest's identity ids make them)."""
    return [dataclasses.replace(r, user_id=f"u{r.visitor_id}" if r.visitor_id % 2 else None) for r in rows]


async def stored(stack: QueryStack, rows: list[EventRow]) -> str:
    site = str(uuid.uuid4())
    shuffled = list(rows)
    random.Random(len(rows)).shuffle(shuffled)
    await stack.write(site, shuffled, batch=max(1, len(rows) // 3))
    return site


def a_range(draw: st.DrawFn, first: date) -> query_pb2.DateRange:
    start = first + timedelta(days=draw(st.integers(-1, 1)))
    end = start + timedelta(days=draw(st.integers(0, 3)))
    return query_pb2.DateRange(start=start.isoformat(), end=end.isoformat())


def some_filters(draw: st.DrawFn) -> list[query_pb2.Filter]:
    return [json_format.ParseDict(a_filter(draw), query_pb2.Filter()) for _ in range(draw(st.integers(0, 2)))]


async def chosen(
    stack: QueryStack,
    site: str,
    zone: str,
    given_range: query_pb2.DateRange,
    filters: list[query_pb2.Filter],
    **page: int,
) -> StatsQuery:
    async with stack.pool.connection() as conn:
        return await select(conn, site, zone, given_range, filters, **page)


@THROUGH_DATABASE
@given(data=st.data())
async def test_sessions_equal_the_reference(query_stack: QueryStack, data: st.DataObject) -> None:
    zone, rows = data.draw(traffic())
    rows = with_users(rows)
    site = await stored(query_stack, rows)
    first = min(r.time for r in rows).date()
    limit, offset = data.draw(st.sampled_from([1, 3, 50])), data.draw(st.sampled_from([0, 0, 1, 2, 9]))
    query = await chosen(
        query_stack,
        site,
        zone,
        a_range(data.draw, first),
        some_filters(data.draw),
        limit=limit,
        offset=offset,
    )
    async with query_stack.pool.connection() as conn:
        got = await sessions.list_sessions(conn, query)
    want, total = reference_people.sessions(query, rows)
    assert got.total == total
    assert [dataclasses.astuple(s) for s in got.sessions] == [dataclasses.astuple(s) for s in want]


@THROUGH_DATABASE
@given(data=st.data())
async def test_timelines_equal_the_reference(query_stack: QueryStack, data: st.DataObject) -> None:
    zone, rows = data.draw(traffic())
    rows = with_users(rows)
    site = await stored(query_stack, rows)
    first = min(r.time for r in rows).date()
    user = data.draw(st.sampled_from(["u1", "u3", "u5", "nobody"]))
    limit, offset = data.draw(st.sampled_from([1, 2, 100])), data.draw(st.sampled_from([0, 0, 1, 3]))
    query = await chosen(query_stack, site, zone, a_range(data.draw, first), [])
    async with query_stack.pool.connection() as conn:
        max_span = await stats.max_session_span(conn)
        got = await timeline(conn, site, user, query.range, limit=limit, offset=offset, max_span=max_span)
    want, total = reference_people.timeline(user, query.range, rows, limit, offset)
    assert got.total == total
    assert [
        (v.session_id, v.started_at, v.ended_at, [e.event_id for e in v.events]) for v in got.visits
    ] == want


@THROUGH_DATABASE
@given(data=st.data())
async def test_page_flows_equal_the_reference(query_stack: QueryStack, data: st.DataObject) -> None:
    zone, rows = data.draw(traffic())
    site = await stored(query_stack, rows)
    first = min(r.time for r in rows).date()
    page = data.draw(st.sampled_from(PATHS))
    direction = data.draw(st.sampled_from(["next", "previous"]))
    steps, limit = data.draw(st.integers(1, 3)), data.draw(st.sampled_from([1, 3, 10]))
    query = await chosen(query_stack, site, zone, a_range(data.draw, first), some_filters(data.draw))
    async with query_stack.pool.connection() as conn:
        got = await flows.page_flows(conn, query, page, direction, steps=steps, limit=limit)
    views, visits, ranked = reference_people.flows(query, rows, page, direction, steps=steps, limit=limit)
    assert (got.page_views, got.visits) == (views, visits)
    assert [(f.pages, f.page_views, f.visits) for f in got.flows] == ranked


def _expected_record(row: EventRow) -> dict[str, Any]:
    return {
        "event_id": str(row.event_id),
        "time": row.time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "name": row.name,
        "path": row.path,
        "url": row.url,
        "user_id": row.user_id or "",
        "visitor_id": str(row.visitor_id),
        "country": row.country,
        "properties": row.properties,
    }


@THROUGH_DATABASE
@given(data=st.data())
async def test_exports_equal_the_reference(query_stack: QueryStack, data: st.DataObject) -> None:
    zone, rows = data.draw(traffic())
    rows = with_users(rows)
    site = await stored(query_stack, rows)
    first = min(r.time for r in rows).date()
    form = data.draw(st.sampled_from(export.FORMATS))
    batch = data.draw(st.sampled_from([1, 2, 1000]))
    query = await chosen(query_stack, site, zone, a_range(data.draw, first), some_filters(data.draw))
    async with query_stack.pool.connection() as conn, conn.transaction():
        max_span = await stats.max_session_span(conn)
        parts = [
            chunk
            async for chunk in export.chunks(conn, query, form, query.range.start - max_span, batch=batch)
        ]
    want = [_expected_record(r) for r in reference_people.exported(query, rows)]
    # One chunk per batch of rows (and the first even when empty): streamed, never gathered.
    assert len(parts) == max(1, -(-len(want) // batch))
    text = b"".join(parts).decode()
    if form == "ndjson":
        records = [json.loads(line) for line in text.splitlines()]
    else:
        records = list(csv.DictReader(io.StringIO(text, newline="")))
        assert text.startswith(",".join(export.COLUMNS) + "\r\n")
        for record in records:
            record["properties"] = json.loads(record["properties"])
    assert [{k: r[k] for k in _expected_record(rows[0])} for r in records] == want


# --- PeopleService through a real server ---------------------------------------------------------


@pytest.fixture
async def people(query_stack: QueryStack) -> AsyncIterator[people_pb2_grpc.PeopleServiceStub]:
    server = GrpcServer("query", "127.0.0.1:0", grace_s=1)
    snapshots = Snapshots(query_stack.pool, query_stack.health, 10_000)
    server.add(
        people_pb2_grpc.add_PeopleServiceServicer_to_server,
        PeopleServicer(snapshots, query_stack.auth_client),
        "analytics.v1.PeopleService",
    )
    port = await server.start()
    await server.set_serving()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield people_pb2_grpc.PeopleServiceStub(channel)
    await server.stop()


def _visit(start: datetime, visitor: int, user: str | None, paths: list[str], **attrs: Any) -> list[EventRow]:
    return [
        EventRow(
            time=start + timedelta(minutes=5 * i),
            event_id=uuid.uuid4(),
            visitor_id=visitor,
            path=path,
            user_id=user,
            **attrs,
        )
        for i, path in enumerate(paths)
    ]


async def test_people_service_answers_over_grpc(
    query_stack: QueryStack, people: people_pb2_grpc.PeopleServiceStub
) -> None:
    site, key = await query_stack.site("Europe/Berlin")
    day = datetime(2024, 5, 6, 10, tzinfo=UTC)
    rows = [
        *_visit(day, 1, "alice", ["/", "/pricing", "/signup"], country="DE", device="desktop"),
        *_visit(day + timedelta(hours=1), 2, None, ["/", "/pricing"], country="US"),
        *_visit(day + timedelta(hours=2), 1, "alice", ["/docs"], country="DE"),
    ]
    await query_stack.write(site, rows)
    md = (("x-api-key", key),)
    span = query_pb2.DateRange(start="2024-05-06", end="2024-05-06")

    listed = await people.ListSessions(
        people_pb2.ListSessionsRequest(
            site_id=site,
            date_range=span,
            filters=[
                query_pb2.Filter(
                    condition=query_pb2.Condition(operator="is", dimension="visit:country", values=["DE"])
                )
            ],
        ),
        metadata=md,
    )
    assert listed.total == 2 and listed.timezone == "Europe/Berlin"
    assert [list(s.pages) for s in listed.sessions] == [["/docs"], ["/", "/pricing", "/signup"]]
    assert listed.sessions[1].entry_page == "/" and listed.sessions[1].exit_page == "/signup"
    assert listed.sessions[1].duration_s == 600 and listed.sessions[0].bounce
    assert listed.sessions[1].user_id == "alice" and listed.sessions[1].country == "DE"

    person = await people.GetUserTimeline(
        people_pb2.GetUserTimelineRequest(site_id=site, user_id="alice", date_range=span), metadata=md
    )
    assert person.total_sessions == 2
    assert [[e.path for e in s.events] for s in person.sessions] == [["/", "/pricing", "/signup"], ["/docs"]]

    after = await people.GetPageFlows(
        people_pb2.GetPageFlowsRequest(site_id=site, page="/", date_range=span, steps=2), metadata=md
    )
    assert (after.page_views, after.visits) == (2, 2)
    assert [(list(f.pages), f.page_views) for f in after.flows] == [
        (["/pricing"], 1),
        (["/pricing", "/signup"], 1),
    ]
    before = await people.GetPageFlows(
        people_pb2.GetPageFlowsRequest(
            site_id=site, page="/signup", direction="previous", date_range=span, steps=5
        ),
        metadata=md,
    )
    assert [list(f.pages) for f in before.flows] == [["/pricing", "/"]]

    chunks = [
        chunk
        async for chunk in people.ExportEvents(
            people_pb2.ExportEventsRequest(site_id=site, date_range=span, format="csv"), metadata=md
        )
    ]
    assert {c.content_type for c in chunks} == {"text/csv; charset=utf-8"}
    lines = b"".join(c.data for c in chunks).decode().splitlines()
    assert len(lines) == 1 + len(rows) and lines[0].startswith("time,event_id,name,path")


@pytest.mark.parametrize(
    ("method", "body", "field"),
    [
        ("ListSessions", {"pagination": {"limit": 1001}}, "pagination.limit"),
        (
            "ListSessions",
            {"filters": [{"condition": {"operator": "is", "dimension": "visit:nope", "values": ["x"]}}]},
            "filters[0].condition.dimension",
        ),
        (
            "ListSessions",
            {"filters": [{"condition": {"operator": "matches", "dimension": "event:page", "values": ["("]}}]},
            "filters[0].condition.values[0]",
        ),
        ("ListSessions", {"date_range": {"start": "2024-05-07", "end": "2024-05-01"}}, "date_range"),
        ("GetUserTimeline", {"user_id": ""}, "user_id"),
        ("GetUserTimeline", {"user_id": "x" * 257}, "user_id"),
        ("GetPageFlows", {"page": ""}, "page"),
        ("GetPageFlows", {"page": "/", "direction": "sideways"}, "direction"),
        ("GetPageFlows", {"page": "/", "steps": 6}, "steps"),
        ("GetPageFlows", {"page": "/", "limit": 101}, "limit"),
        ("ExportEvents", {"format": "xml"}, "format"),
    ],
)
async def test_bad_input_is_refused_naming_the_field(
    query_stack: QueryStack,
    people: people_pb2_grpc.PeopleServiceStub,
    method: str,
    body: dict[str, Any],
    field: str,
) -> None:
    site, key = await query_stack.site()
    requests = {
        "ListSessions": people_pb2.ListSessionsRequest,
        "GetUserTimeline": people_pb2.GetUserTimelineRequest,
        "GetPageFlows": people_pb2.GetPageFlowsRequest,
        "ExportEvents": people_pb2.ExportEventsRequest,
    }
    base: dict[str, Any] = {"site_id": site, "date_range": {"period": "7d"}, **body}
    if method == "GetUserTimeline" and "user_id" not in body:
        base["user_id"] = "u"
    request = json_format.ParseDict(base, requests[method]())
    call = getattr(people, method)

    async def ask() -> None:
        if method == "ExportEvents":
            async for _ in call(request, metadata=(("x-api-key", key),)):
                pass
        else:
            await call(request, metadata=(("x-api-key", key),))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ask()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(field), caught.value.details()


async def test_another_sites_key_is_refused(
    query_stack: QueryStack, people: people_pb2_grpc.PeopleServiceStub
) -> None:
    site, _ = await query_stack.site()
    _, other_key = await query_stack.site()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await people.ListSessions(
            people_pb2.ListSessionsRequest(site_id=site, date_range={"period": "7d"}),
            metadata=(("x-api-key", other_key),),
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_seed_journey_route_is_the_timeline_of_the_keys_site(
    query_stack: QueryStack, people: people_pb2_grpc.PeopleServiceStub
) -> None:
    site, key = await query_stack.site("UTC")
    day = datetime(2024, 5, 6, 10, tzinfo=UTC)
    await query_stack.write(site, [*_visit(day, 1, "alice", ["/", "/a"]), *_visit(day, 2, "bob", ["/b"])])
    md = (("x-api-key", key),)
    journey = await people.GetUserJourney(
        people_pb2.GetUserJourneyRequest(user_id="alice", start_date="2024-05-06", end_date="2024-05-06"),
        metadata=md,
    )
    assert journey.total_sessions == 1 and journey.user_id == "alice"
    assert [e.path for e in journey.sessions[0].events] == ["/", "/a"]
    for fields, field in (
        ({"start_date": "2024-05-06"}, "end_date"),
        ({"start_date": "2024-05-07", "end_date": "2024-05-01"}, "start_date"),
        ({"limit": 5000}, "limit"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await people.GetUserJourney(
                people_pb2.GetUserJourneyRequest(user_id="alice", **fields), metadata=md
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details().startswith(field), caught.value.details()
