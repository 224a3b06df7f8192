"""Seed 000's summary and active sessions against their reference, on generated traffic around a
fixed "now" stored by the processor's writer in shuffled batches. Answers must be equal exactly."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from query_service.live import seed, seed_reference

from .conftest import QueryStack
from .test_differential import COUNTRIES, PATHS, THROUGH_DATABASE
from .test_realtime import NOW, stored_traffic

pytestmark = pytest.mark.integration


@THROUGH_DATABASE
@given(data=st.data())
async def test_summary_and_sessions_equal_the_reference(query_stack: QueryStack, data: st.DataObject) -> None:
    site, rows = await stored_traffic(query_stack, data)
    page = data.draw(st.sampled_from(["", *PATHS]))
    country = data.draw(st.sampled_from(["", *COUNTRIES[1:]]))
    # Etc/GMT-12's midnight is NOW itself: events a second either side of it, and at it, are there.
    zone = ZoneInfo(data.draw(st.sampled_from(["UTC", "Asia/Kolkata", "Etc/GMT-12"])))
    now = NOW + timedelta(seconds=data.draw(st.sampled_from([0, 1, 30])))
    limit = data.draw(st.integers(1, 8))
    async with query_stack.pool.connection() as conn:
        day = await seed.today(conn, site, now, zone, page=page, country=country)
        sessions, total = await seed.active_sessions(conn, site, now, limit, page=page, country=country)
    assert day == seed_reference.today(rows, now, zone, page=page, country=country)

    expected = seed_reference.active_visits(rows, now, page=page, country=country)
    assert total == len(expected)
    # Most recently active first; the listed ones are the `limit` latest (ties in any order).
    assert [s.last_activity for s in sessions] == [v.ended_at for v in expected][:limit]
    described = {
        (
            v.ended_at,
            v.attribute("visit:exit_page"),
            tuple(seed_reference.journey(v)),
            (v.ended_at - v.started_at).total_seconds(),
            v.attribute("visit:country"),
            v.attribute("visit:device"),
        )
        for v in expected
    }
    for s in sessions:
        assert (
            s.last_activity,
            s.current_page,
            tuple(s.journey),
            s.duration_s,
            s.country,
            s.device,
        ) in described
