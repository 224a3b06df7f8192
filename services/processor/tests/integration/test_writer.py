"""The processor's write path against real TimescaleDB: idempotent inserts, conversion, summaries."""

from __future__ import annotations

import asyncio
import struct
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from analytics.v1 import bus_pb2
from processor_service import event_ids
from processor_service.writer import EventWriter, InvalidEvent, rows_of, to_row

pytestmark = pytest.mark.integration


async def count(pool: AsyncConnectionPool, site: uuid.UUID) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM analytics.events WHERE site_id = %s", (site,))
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_events_and_sessions_are_hypertables(analytics_pool: AsyncConnectionPool) -> None:
    async with analytics_pool.connection() as conn:
        cur = await conn.execute(
            "SELECT hypertable_name FROM timescaledb_information.hypertables "
            "WHERE hypertable_schema = 'analytics' ORDER BY 1"
        )
        assert await cur.fetchall() == [("events",), ("sessions",)]


async def test_no_time_only_index_costs_a_write_per_row(analytics_pool: AsyncConnectionPool) -> None:
    async with analytics_pool.connection() as conn:
        cur = await conn.execute(
            "SELECT tablename, indexname FROM pg_indexes WHERE schemaname = 'analytics' "
            "AND tablename IN ('events', 'sessions') ORDER BY 1, 2"
        )
        assert await cur.fetchall() == [
            ("events", "events_identity"),
            ("events", "events_site_time"),
            ("sessions", "sessions_pkey"),
            ("sessions", "sessions_site_time"),
        ]


async def test_writing_the_same_events_twice_stores_them_once(
    analytics_pool: AsyncConnectionPool, make_event: Any
) -> None:
    site = uuid.uuid4()
    at = datetime(2024, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
    batch = bus_pb2.EventBatch(
        batch_id="b1",
        events=[
            make_event(site, "/a", user_id="u1", at=at),
            make_event(site, "/b"),
            make_event(site, "/signup", kind=bus_pb2.EVENT_KIND_CUSTOM, name="signup"),
            make_event(site, "/bot", is_bot=True),
        ],
    )
    writer = EventWriter(analytics_pool)
    first = await writer.write(rows_of([batch]))
    assert first.inserted == 4
    activity = first.sites[site]
    assert (activity.events, activity.pageviews, activity.paths) == (3, 2, {"/a": 1, "/b": 1})
    # The same rows again, twice in one batch: nothing new, nothing announced.
    again = await writer.write(rows_of([batch, batch]))
    assert (again.inserted, again.sites) == (0, {})
    assert await count(analytics_pool, site) == 4
    async with analytics_pool.connection() as conn:
        cur = await conn.execute(
            "SELECT path, user_id, kind, name, properties, time FROM analytics.events "
            "WHERE site_id = %s AND NOT is_bot ORDER BY path",
            (site,),
        )
        rows = await cur.fetchall()
    assert [row[:5] for row in rows] == [
        ("/a", "u1", 1, "pageview", {}),
        ("/b", None, 1, "pageview", {}),
        ("/signup", None, 2, "signup", {"k": "v"}),
    ]
    assert rows[0][5] == at


async def test_a_batch_partly_stored_before_takes_the_exact_path(
    analytics_pool: AsyncConnectionPool, make_event: Any
) -> None:
    site = uuid.uuid4()
    old = [make_event(site, f"/old{i}") for i in range(3)]
    new = [make_event(site, f"/new{i}") for i in range(2)]
    writer = EventWriter(analytics_pool)
    await writer.write(rows_of([bus_pb2.EventBatch(events=old)]))
    mixed = await writer.write(rows_of([bus_pb2.EventBatch(events=[*old, *new])]))
    assert mixed.inserted == 2
    assert set(mixed.sites[site].paths) == {"/new0", "/new1"}
    assert await count(analytics_pool, site) == 5


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda e: setattr(e, "site_id", b"abc"), "events[1].site_id must be 16 bytes"),
        (lambda e: setattr(e, "event_id", b""), "events[1].event_id must be 16 bytes"),
        (lambda e: e.ClearField("occurred_at"), "events[1].occurred_at is missing"),
        (lambda e: e.ClearField("received_at"), "events[1].received_at is missing"),
        (lambda e: setattr(e.occurred_at, "seconds", 10**12), "events[1].occurred_at is out of range"),
    ],
)
def test_events_that_cannot_be_stored_are_named(make_event: Any, mutate: Any, error: str) -> None:
    site = uuid.uuid4()
    bad = make_event(site)
    mutate(bad)
    with pytest.raises(InvalidEvent, match=error.replace("[", r"\[").replace("]", r"\]")):
        rows_of([bus_pb2.EventBatch(events=[make_event(site), bad])])


def test_a_timestamp_set_to_the_unix_epoch_is_present_not_missing(make_event: Any) -> None:
    event = make_event(uuid.uuid4())
    event.occurred_at.FromSeconds(0)  # reads as 0 s, 0 ns: the same as unset, but present
    assert event.HasField("occurred_at")
    row = to_row(event)
    assert row[0] == struct.pack(">q", -946_684_800 * 1_000_000)  # microseconds since 2000-01-01


async def test_the_database_rejects_a_nul_byte(analytics_pool: AsyncConnectionPool, make_event: Any) -> None:
    row = to_row(make_event(uuid.uuid4(), "/a\x00b"))
    with pytest.raises(psycopg.DataError):
        await EventWriter(analytics_pool).write([row])


async def test_writer_without_sessions_stores_events_only(
    analytics_pool: AsyncConnectionPool, make_event: Any
) -> None:
    site = uuid.uuid4()
    event = make_event(site)
    event.visitor_id = 42
    result = await EventWriter(analytics_pool, sessions=False).write(
        rows_of([bus_pb2.EventBatch(events=[event])])
    )
    assert result.inserted == 1
    async with analytics_pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM analytics.sessions WHERE site_id = %s", (site,))
        assert await cur.fetchone() == (0,)


def _attempt(site: uuid.UUID, event_id: uuid.UUID, minute: int, make_event: Any, **flags: bool) -> Any:
    event = make_event(site, "/r", at=datetime(2024, 7, 1, 12, minute, tzinfo=UTC), event_id=event_id)
    event.client_event_id = flags.get("client_event_id", True)
    event.server_time = flags.get("server_time", True)
    event.visitor_id = 9
    return event


async def test_an_event_id_names_one_event_whatever_its_time(
    analytics_pool: AsyncConnectionPool, make_event: Any
) -> None:
    site = uuid.uuid4()
    event_id = uuid.uuid4()
    writer = EventWriter(analytics_pool)

    async def write(*events: Any) -> int:
        return (await writer.write(rows_of([bus_pb2.EventBatch(events=list(events))]))).inserted

    def attempt(minute: int, the_id: uuid.UUID = event_id, **flags: bool) -> Any:
        return _attempt(site, the_id, minute, make_event, **flags)

    assert await write(attempt(5)) == 1
    # Retries arrive later (and one, delivered out of order, earlier), alone or twice in a batch.
    assert await write(attempt(7)) == 0
    assert await write(attempt(3), attempt(9)) == 0
    assert await count(analytics_pool, site) == 1
    # Two copies new in one batch: the earlier one is kept.
    other = uuid.uuid4()
    assert await write(attempt(21, other), attempt(20, other)) == 1
    # The first attempt had a server-chosen id, the retry sends it back: one row, in either order.
    third, fourth = uuid.uuid4(), uuid.uuid4()
    assert await write(attempt(41, third), attempt(40, third, client_event_id=False)) == 1
    assert await write(attempt(42, third)) == 0
    assert await write(attempt(45, fourth)) == 1
    assert await write(attempt(44, fourth, client_event_id=False)) == 0
    # A copy the client timestamped itself, hours or days away: still the same event.
    assert await write(attempt(30, server_time=False)) == 0
    late = make_event(site, "/r", at=datetime(2024, 7, 8, 11, tzinfo=UTC), event_id=event_id)
    assert await write(late) == 0
    async with analytics_pool.connection() as conn:
        cur = await conn.execute(
            "SELECT event_id, extract(minute FROM time)::int FROM analytics.events "
            "WHERE site_id = %s ORDER BY 2",
            (site,),
        )
        assert await cur.fetchall() == [(event_id, 5), (other, 20), (third, 40), (fourth, 45)]
        cur = await conn.execute("SELECT sum(events) FROM analytics.sessions WHERE site_id = %s", (site,))
        assert await cur.fetchone() == (4,)
    # The same id on another site is another event.
    elsewhere = _attempt(uuid.uuid4(), event_id, 5, make_event)
    assert (await writer.write(rows_of([bus_pb2.EventBatch(events=[elsewhere])]))).inserted == 1


async def test_concurrent_copies_of_server_timed_events_are_stored_once(
    analytics_pool: AsyncConnectionPool, make_event: Any
) -> None:
    site = uuid.uuid4()
    ids = [uuid.uuid4() for _ in range(300)]
    originals = [_attempt(site, i, n % 50, make_event, client_event_id=False) for n, i in enumerate(ids)]
    retries = [_attempt(site, i, n % 50 + 1, make_event) for n, i in enumerate(ids)]
    writers = [EventWriter(analytics_pool), EventWriter(analytics_pool)]

    async def deliver(writer: EventWriter, events: list[Any]) -> None:
        for start in range(0, len(events), 30):
            await writer.write(rows_of([bus_pb2.EventBatch(events=events[start : start + 30])]))

    await asyncio.gather(deliver(writers[0], originals), deliver(writers[1], retries[::-1]))
    async with analytics_pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM analytics.events WHERE site_id = %s", (site,)
        )
        assert await cur.fetchone() == (300, 300)


async def test_a_new_chunk_is_analyzed_by_the_next_batch(
    analytics_pool: AsyncConnectionPool, make_event: Any
) -> None:
    site = uuid.uuid4()
    at = datetime(2031, 1, 2, 3, tzinfo=UTC)  # a day no other test writes: a chunk of its own
    writer = EventWriter(analytics_pool)
    for _ in range(2):
        await writer.write(
            rows_of([bus_pb2.EventBatch(events=[make_event(site, at=at) for _ in range(1000)])])
        )
    async with analytics_pool.connection() as conn:
        cur = await conn.execute(
            "SELECT c.reltuples FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid "
            "WHERE i.inhparent = 'analytics.events'::regclass AND c.oid IN "
            "(SELECT tableoid FROM analytics.events WHERE site_id = %s)",
            (site,),
        )
        # Analyzed by the second batch before its insert: it saw the first batch only.
        assert [row[0] for row in await cur.fetchall()] == [1000]


async def test_claims_past_the_window_are_forgotten(
    analytics_pool: AsyncConnectionPool, make_event: Any
) -> None:
    site = uuid.uuid4()
    kept, expired = uuid.uuid4(), uuid.uuid4()
    writer = EventWriter(analytics_pool)
    for the_id in (kept, expired):
        await writer.write(rows_of([bus_pb2.EventBatch(events=[_attempt(site, the_id, 1, make_event)])]))
    async with analytics_pool.connection() as conn:
        await conn.execute(
            "UPDATE analytics.event_ids SET first_seen = now() - %s - interval '1 minute' "
            "WHERE site_id = %s AND event_id = %s",
            (event_ids.KEEP, site, expired),
        )
    assert await event_ids.expire(analytics_pool) >= 1
    async with analytics_pool.connection() as conn:
        cur = await conn.execute("SELECT event_id FROM analytics.event_ids WHERE site_id = %s", (site,))
        assert await cur.fetchall() == [(kept,)]
    # Past the window, a copy with another time is a new event; within it, it is not.
    assert (
        await writer.write(rows_of([bus_pb2.EventBatch(events=[_attempt(site, expired, 9, make_event)])]))
    ).inserted == 1
    assert (
        await writer.write(rows_of([bus_pb2.EventBatch(events=[_attempt(site, kept, 9, make_event)])]))
    ).inserted == 0
