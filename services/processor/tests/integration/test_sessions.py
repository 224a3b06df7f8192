"""Sessions kept by the writer equal a from-scratch recomputation, whatever the delivery order."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import AsyncConnectionPool

from analytics.v1 import bus_pb2
from processor_service.sessions import (
    CHUNK_INTERVAL,
    FAST,
    INPUT_TABLE,
    RECOMPUTE,
    SESSION_GAP,
    STORED,
    TEMP_TABLES,
    chunk_start,
)
from processor_service.writer import EventWriter, rows_of

pytestmark = pytest.mark.integration

T0 = datetime(2024, 3, 1, 8, tzinfo=UTC)
PV = bus_pb2.EVENT_KIND_PAGEVIEW
CUSTOM = bus_pb2.EVENT_KIND_CUSTOM


def event(
    site: uuid.UUID,
    visitor: int,
    minute: float,
    path: str = "/",
    *,
    kind: int = PV,
    is_bot: bool = False,
    event_id: uuid.UUID | None = None,
    referrer_host: str = "",
) -> bus_pb2.EnrichedEvent:
    made = bus_pb2.EnrichedEvent(
        event_id=(event_id or uuid.uuid4()).bytes,
        site_id=site.bytes,
        kind=kind,
        name="pageview" if kind == PV else "click",
        path=path,
        visitor_id=visitor,
        is_bot=is_bot,
        referrer_host=referrer_host,
        country=f"C{visitor % 7}",
        utm_source=path.strip("/"),
    )
    at = T0 + timedelta(minutes=minute)
    made.occurred_at.FromDatetime(at)
    made.received_at.FromDatetime(at)
    return made


async def write(writer: EventWriter, *events: bus_pb2.EnrichedEvent) -> Any:
    return await writer.write(rows_of([bus_pb2.EventBatch(events=list(events))]))


async def stored(pool: AsyncConnectionPool, *sites: uuid.UUID) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cur = await conn.execute(STORED, {"sites": list(sites)})
        return await cur.fetchall()


async def recomputed(pool: AsyncConnectionPool, *sites: uuid.UUID) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cur = await conn.execute(RECOMPUTE, {"sites": list(sites), "gap": SESSION_GAP})
        return await cur.fetchall()


async def sessions(pool: AsyncConnectionPool, site: uuid.UUID) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT visitor_id, session_id, started_at, ended_at, pageviews, events, entry_path, exit_path, "
            "duration_s, is_bounce, referrer_host FROM analytics.sessions WHERE site_id = %s "
            "ORDER BY visitor_id, started_at",
            (site,),
        )
        names = [c.name for c in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]


async def test_in_order_events_extend_the_session_on_the_fast_path(
    analytics_pool: AsyncConnectionPool,
) -> None:
    site = uuid.uuid4()
    writer = EventWriter(analytics_pool)
    first = event(site, 7, 0, "/a", referrer_host="search.example")
    result = await write(writer, first)
    assert (result.sessions.created, result.sessions.extended) == (1, 0)
    result = await write(writer, event(site, 7, 10, "/b"), event(site, 7, 12, "/x", kind=CUSTOM))
    assert (result.sessions.created, result.sessions.extended, result.sessions.slow_visitors) == (0, 1, 0)
    result = await write(writer, event(site, 7, 41.5, "/c"))  # 29.5 minutes later: same session
    assert result.sessions.extended == 1
    result = await write(writer, event(site, 7, 72, "/d"))  # 30.5 minutes later: a new one
    assert (result.sessions.created, result.sessions.extended) == (1, 0)
    rows = await sessions(analytics_pool, site)
    assert [(r["pageviews"], r["events"], r["entry_path"], r["exit_path"], r["is_bounce"]) for r in rows] == [
        (3, 4, "/a", "/c", False),
        (1, 1, "/d", "/d", True),
    ]
    assert rows[0]["session_id"] == uuid.UUID(bytes=first.event_id)
    assert rows[0]["duration_s"] == 41.5 * 60
    assert rows[0]["referrer_host"] == "search.example"
    assert await stored(analytics_pool, site) == await recomputed(analytics_pool, site)


async def test_late_event_merges_two_sessions_and_an_early_one_moves_the_start(
    analytics_pool: AsyncConnectionPool,
) -> None:
    site = uuid.uuid4()
    writer = EventWriter(analytics_pool)
    await write(writer, event(site, 1, 0, "/a"), event(site, 1, 50, "/b"))
    assert len(await sessions(analytics_pool, site)) == 2
    result = await write(writer, event(site, 1, 25, "/middle"))
    assert (result.sessions.slow_visitors, result.sessions.updated, result.sessions.deleted) == (1, 1, 1)
    rows = await sessions(analytics_pool, site)
    assert [(r["pageviews"], r["entry_path"], r["exit_path"]) for r in rows] == [(3, "/a", "/b")]
    early = event(site, 1, -20, "/early", kind=CUSTOM)
    result = await write(writer, early)
    assert (result.sessions.inserted, result.sessions.deleted) == (1, 1)
    rows = await sessions(analytics_pool, site)
    assert rows[0]["session_id"] == uuid.UUID(bytes=early.event_id)
    assert (rows[0]["events"], rows[0]["pageviews"], rows[0]["entry_path"]) == (4, 3, "/a")
    assert await stored(analytics_pool, site) == await recomputed(analytics_pool, site)


async def test_redelivery_bots_and_unknown_visitors_leave_sessions_alone(
    analytics_pool: AsyncConnectionPool,
) -> None:
    site = uuid.uuid4()
    writer = EventWriter(analytics_pool)
    batch = [event(site, 3, 0), event(site, 3, 1, "/b"), event(site, 0, 2), event(site, 4, 3, is_bot=True)]
    first = await write(writer, *batch)
    assert first.inserted == 4
    assert first.sessions.created == 1
    again = await write(writer, *batch)
    assert again.inserted == 0
    assert again.sessions == type(again.sessions)()
    assert again.sites == {}
    rows = await sessions(analytics_pool, site)
    assert [(r["visitor_id"], r["events"]) for r in rows] == [(3, 2)]


async def test_a_backfilled_old_event_creates_an_old_session(analytics_pool: AsyncConnectionPool) -> None:
    site = uuid.uuid4()
    writer = EventWriter(analytics_pool)
    await write(writer, event(site, 5, 0), event(site, 5, 3 * 24 * 60))
    await write(writer, event(site, 5, 2 * 24 * 60), event(site, 5, 2 * 24 * 60 + 29))
    rows = await sessions(analytics_pool, site)
    assert [r["events"] for r in rows] == [1, 2, 1]
    assert await stored(analytics_pool, site) == await recomputed(analytics_pool, site)


async def deliver_at_random(
    writer: EventWriter,
    rng: random.Random,
    sites: list[uuid.UUID],
    specs: list[tuple[int, float, str, int, bool]],
    between: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Writes the events of (visitor, minute, path, kind, bot) specs, alternating between the sites,
    shuffled, in batches of random sizes, some redelivered (possibly mixed with a new batch);
    ``between`` runs after a batch now and then."""
    events = [
        event(sites[i % len(sites)], visitor, minute, path, kind=kind, is_bot=bot)
        for i, (visitor, minute, path, kind, bot) in enumerate(specs)
    ]
    rng.shuffle(events)
    delivered: list[list[bus_pb2.EnrichedEvent]] = []
    rest = list(events)
    while rest:
        size = rng.randint(1, max(1, len(rest)))
        batch, rest = rest[:size], rest[size:]
        delivered.append(batch)
        await write(writer, *batch)
        if rng.random() < 0.3:
            await write(writer, *rng.choice(delivered), *batch)
        if between is not None and rng.random() < 0.3:
            await between()


# Minutes on a coarse grid, so equal timestamps (ordered by event id) and exact 30-minute gaps occur.
_minutes = st.integers(min_value=0, max_value=24).map(lambda m: m * 7.5)
_events = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=2),  # visitor; 0 = unknown
        _minutes,
        st.sampled_from(["/", "/a", "/b", "/c"]),
        st.sampled_from([PV, PV, CUSTOM]),
        st.sampled_from([False, False, False, False, True]),  # occasionally a bot
    ),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(specs=_events, seed=st.integers(min_value=0, max_value=2**32 - 1))
async def test_incremental_sessions_equal_a_recomputation(
    analytics_pool: AsyncConnectionPool, specs: list[tuple[int, float, str, int, bool]], seed: int
) -> None:
    rng = random.Random(seed)
    sites = [uuid.uuid4(), uuid.uuid4()]
    await deliver_at_random(EventWriter(analytics_pool), rng, sites, specs)
    assert await stored(analytics_pool, *sites) == await recomputed(analytics_pool, *sites)


async def test_concurrent_writers_on_the_same_visitors_stay_exact(
    analytics_pool: AsyncConnectionPool,
) -> None:
    rng = random.Random(7)
    site = uuid.uuid4()
    events = [
        event(site, rng.randint(1, 5), rng.randint(0, 300), rng.choice(["/", "/x"])) for _ in range(600)
    ]
    batches = [events[i : i + 25] for i in range(0, len(events), 25)]
    writers = [EventWriter(analytics_pool), EventWriter(analytics_pool)]

    async def worker(writer: EventWriter, mine: list[list[bus_pb2.EnrichedEvent]]) -> None:
        for batch in mine:
            await write(writer, *batch)

    # Every batch is written by both writers (a redelivery racing the original), in different orders.
    await asyncio.gather(worker(writers[0], batches), worker(writers[1], batches[::-1]))
    assert await stored(analytics_pool, site) == await recomputed(analytics_pool, site)
    async with analytics_pool.connection() as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM analytics.events WHERE site_id = %s), "
            "(SELECT sum(events) FROM analytics.sessions WHERE site_id = %s)",
            (site, site),
        )
        assert await cur.fetchone() == (600, 600)


async def test_a_session_open_at_midnight_is_extended_across_the_chunk_boundary(
    analytics_pool: AsyncConnectionPool,
) -> None:
    site = uuid.uuid4()
    writer = EventWriter(analytics_pool)
    before_midnight = (datetime(2024, 3, 1, 23, 50, tzinfo=UTC) - T0).total_seconds() / 60
    await write(writer, event(site, 4, before_midnight, "/late"))
    result = await write(writer, event(site, 4, before_midnight + 25, "/after-midnight"))
    assert (result.sessions.extended, result.sessions.created) == (1, 0)
    rows = await sessions(analytics_pool, site)
    assert [(r["events"], r["entry_path"], r["exit_path"]) for r in rows] == [(2, "/late", "/after-midnight")]
    assert await stored(analytics_pool, site) == await recomputed(analytics_pool, site)


async def test_chunk_start_is_where_timescaledb_starts_the_chunk(analytics_pool: AsyncConnectionPool) -> None:
    site = uuid.uuid4()
    writer = EventWriter(analytics_pool)
    first = datetime(2030, 1, 1, tzinfo=UTC)
    times = [first + timedelta(days=d, hours=h) for d in (0, 3, 40) for h in (0, 13)]
    await write(writer, *(event(site, 10 + i, (at - T0).total_seconds() / 60) for i, at in enumerate(times)))
    async with analytics_pool.connection() as conn:
        interval = await (await conn.execute(CHUNK_INTERVAL)).fetchone()
        assert interval is not None
        cur = await conn.execute(
            "SELECT range_start, range_end FROM timescaledb_information.chunks "
            "WHERE hypertable_schema = 'analytics' AND hypertable_name = 'sessions'"
        )
        ranges = await cur.fetchall()
    for at in times:
        (start,) = [start for start, end in ranges if start <= at < end]
        assert chunk_start(at, interval[0]) == start
        assert chunk_start(at - timedelta(microseconds=1), interval[0]) <= at
    assert chunk_start(times[1], None) == times[1]


async def test_the_session_look_up_probes_the_primary_key_when_chunk_statistics_are_stale(
    analytics_pool: AsyncConnectionPool,
) -> None:
    """The histogram of a day's chunk never covers its newest hour. With a bound inside that hour the
    planner once took the (site_id, started_at) index for the per-visitor probes, as if a site's
    window held one row, and batches ran 20 times slower; the writer's bound starts at the chunk."""
    site = uuid.uuid4()
    writer = EventWriter(analytics_pool)
    day = datetime(2031, 6, 1, tzinfo=UTC)

    def minute(at: datetime) -> float:
        return (at - T0).total_seconds() / 60

    early = [event(site, 100_000 + v, minute(day + timedelta(hours=8, seconds=v / 2))) for v in range(3000)]
    await write(writer, *early)
    async with analytics_pool.connection() as conn:
        cur = await conn.execute(
            "SELECT format('%%I.%%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks "
            "WHERE hypertable_schema = 'analytics' AND hypertable_name = 'sessions' "
            "AND range_start <= %s AND range_end > %s",
            (day, day),
        )
        (chunk,) = await cur.fetchone() or ("",)
        await conn.execute(f"ALTER TABLE {chunk} SET (autovacuum_enabled = false)")
        await conn.execute(f"ANALYZE {chunk}")
    later = [event(site, v + 1, minute(day + timedelta(hours=9, seconds=v / 4))) for v in range(30_000)]
    for offset in range(0, len(later), 5000):
        await write(writer, *later[offset : offset + 5000])

    probes = [event(site, v + 1, minute(day + timedelta(hours=11, minutes=5))) for v in range(25_000, 25_500)]
    async with (
        analytics_pool.connection() as conn,
        conn.transaction(force_rollback=True),
        conn.cursor() as cur,
    ):
        await cur.execute(TEMP_TABLES)
        await cur.executemany(
            f"INSERT INTO {INPUT_TABLE} (site_id, visitor_id, time, event_id, kind, path) "
            "VALUES (%s, %s, %s, %s, 1, '/')",
            [
                (site, e.visitor_id, e.occurred_at.ToDatetime(UTC), uuid.UUID(bytes=e.event_id))
                for e in probes
            ],
        )
        params = await writer.session_params(cur)
        assert params is not None
        await cur.execute("EXPLAIN (FORMAT JSON) " + FAST, params)
        (plan,) = await cur.fetchone() or (None,)

    def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [node, *(found for child in node.get("Plans", []) for found in nodes(child))]

    (near,) = [node for node in nodes(plan[0]["Plan"]) if node.get("Alias") == "near"]
    scans = [(n["Node Type"], n.get("Index Name", "")) for n in nodes(near) if "Relation Name" in n]
    assert scans and all(index.endswith("sessions_pkey") for _, index in scans), scans
