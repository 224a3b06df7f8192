"""The processor's write path and consumer loop against real TimescaleDB and NATS JetStream."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import nats
import pytest
from psycopg_pool import AsyncConnectionPool

from analytics.v1 import bus_pb2
from analytics_bus import BusConfig, ensure_consumer, ensure_stream
from processor_service.consumer import Consumer
from processor_service.writer import EventWriter, rows_of

pytestmark = pytest.mark.integration


async def count(pool: AsyncConnectionPool, site: uuid.UUID) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM analytics.events WHERE site_id = %s", (site,))
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_events_table_is_a_hypertable(analytics_pool: AsyncConnectionPool) -> None:
    async with analytics_pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_schema = 'analytics' "
            "AND hypertable_name = 'events'"
        )
        assert await cur.fetchone() == (1,)


async def test_writing_the_same_events_twice_stores_them_once(
    analytics_pool: AsyncConnectionPool, make_event: Any
) -> None:
    site = uuid.uuid4()
    batch = bus_pb2.EventBatch(
        batch_id="b1",
        events=[
            make_event(site, "/a", user_id="u1"),
            make_event(site, "/b"),
            make_event(site, "/signup", kind=bus_pb2.EVENT_KIND_CUSTOM, name="signup"),
        ],
    )
    writer = EventWriter(analytics_pool)
    assert await writer.write(rows_of([batch])) == 3
    assert await writer.write(rows_of([batch, batch])) == 0
    assert await count(analytics_pool, site) == 3
    async with analytics_pool.connection() as conn:
        cur = await conn.execute(
            "SELECT path, user_id, kind, name, properties FROM analytics.events "
            "WHERE site_id = %s ORDER BY path",
            (site,),
        )
        rows = await cur.fetchall()
    assert rows == [
        ("/a", "u1", 1, "pageview", {}),
        ("/b", None, 1, "pageview", {}),
        ("/signup", None, 2, "signup", {"k": "v"}),
    ]


async def test_consumer_stores_each_event_once_and_skips_poison(
    analytics_pool: AsyncConnectionPool, nats_url: str, make_event: Any
) -> None:
    suffix = uuid.uuid4().hex[:8]
    bus = BusConfig(stream=f"TEST_{suffix}", subject=f"test.{suffix}.events", consumer="processor")
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js, bus)
    await ensure_consumer(js, bus)
    site = uuid.uuid4()
    first = bus_pb2.EventBatch(batch_id="1", events=[make_event(site, f"/p{i}") for i in range(50)])
    second = bus_pb2.EventBatch(
        batch_id="2", events=[make_event(site, "/q", at=datetime(2023, 1, 1, tzinfo=UTC))]
    )
    await js.publish(bus.subject, first.SerializeToString())
    await js.publish(bus.subject, b"\xff\xff not a protobuf")
    # A redelivery of the first batch under another message id, as after a crash before the ack.
    await js.publish(bus.subject, first.SerializeToString())
    await js.publish(bus.subject, second.SerializeToString())

    consumer = Consumer(
        js, EventWriter(analytics_pool), bus, fetch_batch=2, fetch_timeout_s=0.2, retry_delay_s=0.2
    )
    task = asyncio.create_task(consumer.run())
    try:
        for _ in range(100):
            info = await js.consumer_info(bus.stream, bus.consumer)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"consumer did not drain the stream: {info}")
    finally:
        consumer.stop()
        await task
        await nc.close()
    assert await count(analytics_pool, site) == 51
    assert consumer.stored == 51
