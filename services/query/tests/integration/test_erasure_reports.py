"""After an erasure (the processor's), every report answers what a recomputation from the remaining
raw events gives: Query's (raw rows and rollups alike) and the session list, held to the Python
references on generated traffic."""

from __future__ import annotations

import dataclasses
from datetime import date

import pytest
from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st

from analytics.v1 import query_pb2
from processor_service.erasure import erase
from query_service import reference, reference_people
from query_service.answer import run
from query_service.reports import sessions
from query_service.request import parse_query

from .conftest import QueryStack
from .test_differential import THROUGH_DATABASE, expected, normal, questions, rollup_questions, traffic
from .test_people import chosen, some_filters, stored, with_users

pytestmark = pytest.mark.integration


@THROUGH_DATABASE
@given(data=st.data())
async def test_every_report_equals_a_recomputation_after_an_erasure(
    query_stack: QueryStack, data: st.DataObject
) -> None:
    zone, rows = data.draw(traffic())
    rows = with_users(rows)
    site = await stored(query_stack, rows)
    target = data.draw(st.integers(1, 5))
    by_user = target % 2 == 1 and data.draw(st.booleans())
    async with query_stack.pool.connection() as conn:
        if by_user:
            await erase(conn, site, user_id=f"u{target}")
        else:
            await erase(conn, site, visitor_id=target)
    remaining = [r for r in rows if r.visitor_id != target]
    first = min(r.time for r in rows).date()

    async def no_first_day() -> date | None:
        return None

    for body in (data.draw(questions(first)), data.draw(rollup_questions(first))):
        request = json_format.ParseDict({"site_id": site, **body}, query_pb2.QueryRequest())
        async with query_stack.pool.connection() as conn:
            query, _ = await parse_query(request, site, zone, no_first_day)
            got = await run(conn, query)
        assert normal(got) == expected(reference.answer(query, remaining)), body

    span = json_format.ParseDict(data.draw(questions(first))["date_range"], query_pb2.DateRange())
    query = await chosen(query_stack, site, zone, span, some_filters(data.draw), limit=50, offset=0)
    async with query_stack.pool.connection() as conn:
        listed = await sessions.list_sessions(conn, query)
    want, total = reference_people.sessions(query, remaining)
    assert listed.total == total
    assert [dataclasses.astuple(s) for s in listed.sessions] == [dataclasses.astuple(s) for s in want]
