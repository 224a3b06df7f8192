"""The report rollups stay equal to a recomputation from raw events and visits, in either edition.

Under the Apache license they are tables the writer maintains; under the TSL license continuous
aggregates (the suite runs in both modes where the TSL library is installed). The cases materialize
what was written first, so later late events, merges and redeliveries land below the continuous
aggregates' watermark: the writer's refresh after its commit is what keeps them exact there.
"""

from __future__ import annotations

import asyncio
import io
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import AsyncConnectionPool

from analytics.v1 import bus_pb2
from processor_service import rollups
from processor_service.rebuild import main as rebuild_main
from processor_service.rebuild import rebuild
from processor_service.writer import EventWriter

from .test_sessions import CUSTOM, PV, T0, deliver_at_random, event, write

pytestmark = pytest.mark.integration

# Minutes from T0 (08:00 UTC) to the next midnight.
MIDNIGHT = 16 * 60
EVERYTHING = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


async def mode_of(pool: AsyncConnectionPool) -> rollups.Mode:
    async with pool.connection() as conn:
        return await rollups.detect(conn)


async def materialize(pool: AsyncConnectionPool) -> None:
    """Continuous aggregates: materialize everything written so far (tables: nothing to do)."""
    if await mode_of(pool) is not rollups.Mode.CONTINUOUS:
        return
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        for name in rollups.AGGREGATES:
            await conn.execute(
                "CALL refresh_continuous_aggregate(%s, %s, %s)", (f"analytics.{name}", *EVERYTHING)
            )
        await conn.set_autocommit(False)


async def stored(pool: AsyncConnectionPool, name: str, *sites: uuid.UUID) -> list[tuple[Any, ...]]:
    params = {"sites": list(sites), "start": EVERYTHING[0], "end": EVERYTHING[1]}
    async with pool.connection() as conn:
        return await (await conn.execute(rollups.stored_sql(name), params)).fetchall()


async def assert_exact(pool: AsyncConnectionPool, *sites: uuid.UUID) -> None:
    params = {"sites": list(sites), "start": EVERYTHING[0], "end": EVERYTHING[1]}
    async with pool.connection() as conn:
        for name in rollups.RELATIONS:
            kept = await (await conn.execute(rollups.stored_sql(name), params)).fetchall()
            fresh = await (await conn.execute(rollups.recompute_sql(name), params)).fetchall()
            assert kept == fresh, name


async def test_every_rollup_follows_events_visits_and_late_merges(
    analytics_pool: AsyncConnectionPool,
) -> None:
    site = uuid.uuid4()
    writer = EventWriter(analytics_pool)
    await write(writer, event(site, 1, 0, "/a"), event(site, 1, 50, "/b"), event(site, 2, 10, "/a"))
    await write(writer, event(site, 3, MIDNIGHT - 5, "/night"), event(site, 0, 5, "/unknown"))
    await write(writer, event(site, 4, 20, "/bot", is_bot=True))
    await assert_exact(analytics_pool, site)
    await materialize(analytics_pool)
    # A late event merges visitor 1's two visits into one (the later one's bucket loses a visit)…
    result = await write(writer, event(site, 1, 25, "/middle"))
    assert result.sessions.deleted == 1
    # …and one just after midnight extends visitor 3's visit into the next UTC day.
    await write(writer, event(site, 3, MIDNIGHT + 10, "/morning", kind=CUSTOM))
    await assert_exact(analytics_pool, site)
    async with analytics_pool.connection() as conn:
        cur = await conn.execute(
            "SELECT sum(visits), sum(bounces), sum(visit_pageviews), sum(duration)"
            " FROM analytics.visit_counts_15m WHERE site_id = %s",
            (site,),
        )
        # visits: 1 (merged, 50 min), 2 (bounce), 3 (15 min across midnight, a custom event too)
        assert await cur.fetchone() == (3, 1, 5, timedelta(minutes=65))
        cur = await conn.execute(
            "SELECT visitor_id, day FROM analytics.visitor_days WHERE site_id = %s ORDER BY 1, 2", (site,)
        )
        day = datetime(T0.year, T0.month, T0.day, tzinfo=UTC)
        assert await cur.fetchall() == [(1, day), (2, day), (3, day), (3, day + timedelta(days=1))]


async def test_a_redelivery_changes_no_rollup(analytics_pool: AsyncConnectionPool) -> None:
    site = uuid.uuid4()
    writer = EventWriter(analytics_pool)
    batch = [event(site, 1, 0), event(site, 1, 3, kind=CUSTOM), event(site, 2, 4)]
    await write(writer, *batch)
    await materialize(analytics_pool)
    before = await stored(analytics_pool, rollups.EVENT_COUNTS, site)
    assert before == [(site, T0, 2, 3)]
    result = await write(writer, *batch)
    assert result.inserted == 0
    assert await stored(analytics_pool, rollups.EVENT_COUNTS, site) == before
    await assert_exact(analytics_pool, site)


# Minutes on a coarse grid around midnight and 15-minute bucket edges; visitor 0 is unknown.
_minutes = st.integers(min_value=-8, max_value=16).map(lambda m: MIDNIGHT - 60 + m * 7.5)
_events = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=3),
        _minutes,
        st.sampled_from(["/", "/a", "/b"]),
        st.sampled_from([PV, PV, CUSTOM]),
        st.sampled_from([False, False, False, False, True]),
    ),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(specs=_events, seed=st.integers(min_value=0, max_value=2**32 - 1))
async def test_rollups_equal_a_recomputation_whatever_the_order(
    analytics_pool: AsyncConnectionPool, specs: list[tuple[int, float, str, int, bool]], seed: int
) -> None:
    sites = [uuid.uuid4(), uuid.uuid4()]

    async def between() -> None:
        await materialize(analytics_pool)

    await deliver_at_random(EventWriter(analytics_pool), random.Random(seed), sites, specs, between)
    await assert_exact(analytics_pool, *sites)


async def test_concurrent_writers_keep_the_rollups_exact(analytics_pool: AsyncConnectionPool) -> None:
    rng = random.Random(11)
    site = uuid.uuid4()
    events = [
        event(site, rng.randint(1, 6), rng.randint(0, 600) / 2, rng.choice(["/", "/x"])) for _ in range(500)
    ]
    batches = [events[i : i + 20] for i in range(0, len(events), 20)]
    writers = [EventWriter(analytics_pool), EventWriter(analytics_pool)]

    async def worker(writer: EventWriter, mine: list[list[bus_pb2.EnrichedEvent]]) -> None:
        for batch in mine:
            await write(writer, *batch)

    await asyncio.gather(worker(writers[0], batches), worker(writers[1], batches[::-1]))
    await assert_exact(analytics_pool, site)


async def test_rebuild_restores_the_rollups_of_a_range(
    analytics_pool: AsyncConnectionPool, database_url: str
) -> None:
    site, other = uuid.uuid4(), uuid.uuid4()
    writer = EventWriter(analytics_pool)
    await write(
        writer, *(event(s, v, m) for s in (site, other) for v in (1, 2) for m in (0, 20, 24 * 60 + 5))
    )
    mode = await mode_of(analytics_pool)
    async with analytics_pool.connection() as conn:  # what an import that bypassed the writer leaves
        tables = rollups.RELATIONS if mode is rollups.Mode.TABLES else (rollups.VISITOR_DAYS,)
        for name in tables:
            await conn.execute(f"DELETE FROM analytics.{name} WHERE site_id = %s", (site,))
        await conn.execute(
            "UPDATE analytics.visitor_days SET prev_last_at = NULL, first_at = first_at - INTERVAL '1 minute'"
            " WHERE site_id = %s",
            (other,),
        )
    out = io.StringIO()
    days = await rebuild(
        database_url, [site], T0.date() - timedelta(days=1), T0.date() + timedelta(days=1), out
    )
    assert days == 3
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("rebuild: 3 days from")
    assert lines[-1].startswith("rebuild: visitors' earlier days brought up to date on ")
    assert [line.split(",")[0] for line in lines[1:-1]] == [
        f"rebuild: {n}/3 days (" + str(100 * n // 3) + "%)" for n in (1, 2, 3)
    ]
    await assert_exact(analytics_pool, site)
    with pytest.raises(AssertionError):  # the other site was not asked for: left as it was
        await assert_exact(analytics_pool, other)
    await rebuild(database_url, None, T0.date(), T0.date() + timedelta(days=1), io.StringIO())
    await assert_exact(analytics_pool, site, other)


def test_rebuild_command_line_rejects_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        rebuild_main(["--site", "nope", "--from", "2024-01-01", "--to", "2024-01-02"])
    assert "'nope' is not a site id" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        rebuild_main(["--all-sites", "--from", "2024-13-01", "--to", "2024-01-02"])
    assert "is not a date" in capsys.readouterr().err
    assert (
        rebuild_main(["--all-sites", "--from", "2024-01-02", "--to", "2024-01-01", "--database-url", "x"])
        == 2
    )
    assert "--to must not be before --from" in capsys.readouterr().err
