"""Raw-event retention drops old events and leaves the rollups' counts of those days intact."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from psycopg_pool import AsyncConnectionPool

from processor_service import retention, rollups
from processor_service.writer import EventWriter

from .test_rollups import materialize, stored
from .test_sessions import T0, event, write

pytestmark = pytest.mark.integration


_JOBS = "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'"


def minutes_ago(days: float) -> float:
    """event()'s minute offset from T0 of the moment ``days`` ago."""
    return (datetime.now(UTC) - timedelta(days=days) - T0) / timedelta(minutes=1)


async def test_old_raw_events_go_and_their_rollups_stay(analytics_pool: AsyncConnectionPool) -> None:
    site = uuid.uuid4()
    writer = EventWriter(analytics_pool)
    await write(writer, event(site, 1, minutes_ago(10)), event(site, 1, minutes_ago(10) + 5))
    await write(writer, event(site, 2, minutes_ago(0.01)))
    await materialize(analytics_pool)
    counts = await stored(analytics_pool, rollups.EVENT_COUNTS, site)
    days = await stored(analytics_pool, rollups.VISITOR_DAYS, site)
    assert sum(row[3] for row in counts) == 3 and len(days) == 2
    keep = timedelta(days=3)
    async with analytics_pool.connection() as conn:
        tsl = await retention.is_tsl(conn)
        assert await retention.configure(conn, keep) == ("3 days" if tsl else None)
        before = await (await conn.execute(_JOBS)).fetchall()
        assert await retention.configure(conn, keep) == ("3 days" if tsl else None)
        assert await (await conn.execute(_JOBS)).fetchall() == before  # the same job, left as it was
    if tsl:  # TimescaleDB's policy job: run it now rather than wait for its schedule
        async with analytics_pool.connection() as conn:
            await conn.set_autocommit(True)
            row = await (
                await conn.execute(
                    "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'"
                    " AND hypertable_name = 'events'"
                )
            ).fetchone()
            assert row is not None
            await conn.execute("CALL run_job(%s)", (row[0],))
    else:
        assert await retention.drop_old(analytics_pool, keep) >= 1
    async with analytics_pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FILTER (WHERE time < now() - INTERVAL '3 days'), count(*)"
            " FROM analytics.events WHERE site_id = %s",
            (site,),
        )
        assert await cur.fetchone() == (0, 1)
    # The counts of the dropped days are still there.
    assert await stored(analytics_pool, rollups.EVENT_COUNTS, site) == counts
    assert await stored(analytics_pool, rollups.VISITOR_DAYS, site) == days
    async with analytics_pool.connection() as conn:
        assert await retention.configure(conn, None) is None
