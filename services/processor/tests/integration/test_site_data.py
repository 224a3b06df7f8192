"""A deleted site's data: every row of it in schema analytics goes when the deletion arrives on
the bus, other sites' rows and rollups stay exact, and a sweep deletes what still arrives."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime
from functools import partial

import nats
import pytest
from nats.js.errors import NotFoundError
from psycopg_pool import AsyncConnectionPool

from analytics_bus.sites import SitesBus, ensure_sites_stream, follow_site_deletions, publish_site_deleted
from processor_service import site_data
from processor_service.writer import EventWriter

from .test_rollups import assert_exact, materialize
from .test_sessions import CUSTOM, event, write

pytestmark = pytest.mark.integration

RELATIONS = ("events", "sessions", "visitor_days", "event_ids", "event_counts_15m", "visit_counts_15m")


async def rows_of(pool: AsyncConnectionPool, site: uuid.UUID) -> dict[str, int]:
    found = {}
    async with pool.connection() as conn:
        for name in RELATIONS:
            cur = await conn.execute(f"SELECT count(*) FROM analytics.{name} WHERE site_id = %s", (site,))
            row = await cur.fetchone()
            found[name] = int(row[0]) if row else 0
    return found


async def traffic(pool: AsyncConnectionPool, *sites: uuid.UUID) -> None:
    writer = EventWriter(pool)
    for site in sites:
        await write(
            writer,
            event(site, 1, 0, "/a"),
            event(site, 1, 10, "/b", kind=CUSTOM),
            event(site, 2, 2000, "/c"),
            event(site, 3, 5, "/bot", is_bot=True),
        )


async def test_deleting_a_site_leaves_no_row_of_it_and_others_exact(
    analytics_pool: AsyncConnectionPool,
) -> None:
    site, other = uuid.uuid4(), uuid.uuid4()
    await traffic(analytics_pool, site, other)
    await materialize(analytics_pool)
    before = await rows_of(analytics_pool, other)
    async with analytics_pool.connection() as conn:
        result = await site_data.delete_site_data(conn, str(site))
    assert result.rows["events"] == 4 and result.rows["sessions"] == 2
    assert await rows_of(analytics_pool, site) == dict.fromkeys(RELATIONS, 0)
    assert await rows_of(analytics_pool, other) == before
    await assert_exact(analytics_pool, site, other)

    # Events that were still queued arrive after the deletion: the sweep deletes them.
    await traffic(analytics_pool, site)
    assert (await rows_of(analytics_pool, site))["events"] == 4
    assert await site_data.sweep(analytics_pool) >= 4
    assert await rows_of(analytics_pool, site) == dict.fromkeys(RELATIONS, 0)
    assert await rows_of(analytics_pool, other) == before


async def test_the_processor_deletes_a_site_announced_on_the_bus(
    analytics_pool: AsyncConnectionPool, nats_url: str
) -> None:
    suffix = uuid.uuid4().hex[:8]
    bus = SitesBus(stream=f"TEST_SITES_{suffix}", subject=f"test.{suffix}.sites.deleted", retry_delay_s=0.1)
    site, other = uuid.uuid4(), uuid.uuid4()
    await traffic(analytics_pool, site, other)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_sites_stream(js, bus)  # auth declares it at start-up
    follower = asyncio.create_task(
        follow_site_deletions(js, bus, "processor", partial(site_data.deleted, analytics_pool))
    )
    try:
        await publish_site_deleted(js, bus, str(site), datetime.now(UTC))
        info = None
        for _ in range(200):
            with contextlib.suppress(NotFoundError):  # the follower declares its consumer first
                info = await js.consumer_info(bus.stream, "processor")
            if (
                info
                and info.num_pending == 0
                and info.num_ack_pending == 0
                and info.ack_floor.stream_seq == 1
            ):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"the deletion was never acknowledged: {info}")
        assert await rows_of(analytics_pool, site) == dict.fromkeys(RELATIONS, 0)
        assert (await rows_of(analytics_pool, other))["events"] == 4
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        await js.delete_stream(bus.stream)
        await nc.close()
