"""The realtime report against its reference: generated traffic around a fixed "now" (visits that
start before the window and reach into it, events at its edges and a little in the future, bots,
events without a visitor id) stored by the processor's writer in shuffled batches, generated
windows, limits and filters. Answers must be equal exactly."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from query_service.live import reference
from query_service.live.realtime import RealtimeQuery, realtime
from query_service.reference import EventRow

from .conftest import QueryStack
from .test_differential import COUNTRIES, PATHS, SOURCES, THROUGH_DATABASE, UTMS

pytestmark = pytest.mark.integration

NOW = datetime(2024, 3, 10, 12, tzinfo=UTC)
# Offsets from NOW in seconds: the window's edges for 1, 5 and 10 minutes, exactly and one second
# either side, the last minute's edge, a visit's 30-minute gap, and a little in the future.
OFFSETS = [-3600, -1860, -1801, -900, -601, -600, -599, -301, -300, -299, -61, -60, -59, -1, 0, 1, 30]


@st.composite
def traffic(draw: st.DrawFn) -> list[EventRow]:
    rows: list[EventRow] = []
    ids = iter(range(1, 100_000))
    for visitor in range(1, draw(st.integers(1, 6)) + 1):
        bot = draw(st.integers(0, 7)) == 0
        for _ in range(draw(st.integers(1, 6))):
            kind = draw(st.sampled_from([1, 1, 2]))
            rows.append(
                EventRow(
                    time=NOW + timedelta(seconds=draw(st.sampled_from(OFFSETS))),
                    event_id=uuid.UUID(int=next(ids)),
                    visitor_id=visitor if draw(st.integers(0, 15)) else 0,
                    kind=kind,
                    name="pageview" if kind == 1 else "signup",
                    path=draw(st.sampled_from(PATHS)),
                    country=draw(st.sampled_from(COUNTRIES)),
                    is_bot=bot,
                    **draw(st.sampled_from(SOURCES)),
                    **draw(st.sampled_from(UTMS)),
                )
            )
    return rows


async def stored_traffic(query_stack: QueryStack, data: st.DataObject) -> tuple[str, list[EventRow]]:
    """A new site's generated traffic, stored by the writer in shuffled batches of drawn sizes."""
    rows = data.draw(traffic())
    site = str(uuid.uuid4())
    shuffled = list(rows)
    random.Random(data.draw(st.integers(0, 1000))).shuffle(shuffled)
    await query_stack.write(site, shuffled, batch=data.draw(st.integers(1, 10)))
    return site, rows


@THROUGH_DATABASE
@given(data=st.data())
async def test_realtime_equals_the_reference(query_stack: QueryStack, data: st.DataObject) -> None:
    site, rows = await stored_traffic(query_stack, data)
    query = RealtimeQuery(
        site,
        NOW,
        timedelta(minutes=data.draw(st.sampled_from([1, 5, 10]))),
        data.draw(st.integers(1, 4)),
        data.draw(st.sampled_from(["", *PATHS])),
        data.draw(st.sampled_from(["", *COUNTRIES[1:]])),
    )
    async with query_stack.pool.connection() as conn:
        answer = await realtime(conn, query)
    assert answer == reference.realtime(query, rows), query
