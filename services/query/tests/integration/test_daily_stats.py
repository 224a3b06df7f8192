"""The daily stats report against real rows in the events hypertable."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import pytest
from psycopg_pool import AsyncConnectionPool

from analytics_db import create_pool, migrate, open_pool
from query_service.reports.daily_stats import DailyStats, daily_stats

pytestmark = pytest.mark.integration

DAY = date(2024, 3, 10)
NOON = datetime(2024, 3, 10, 12, tzinfo=UTC)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    # The processor owns schema analytics; its migrations create the relations this report reads.
    await migrate(database_url, "analytics", "processor_service.migrations")
    pool = create_pool(database_url, name="query-test", max_size=2)
    await open_pool(pool)
    yield pool
    await pool.close()


async def day_stats(pool: AsyncConnectionPool, site: uuid.UUID, day: date, limit: int) -> DailyStats:
    async with pool.connection() as conn:
        return await daily_stats(conn, site, day, limit)


async def insert(
    pool: AsyncConnectionPool,
    site: uuid.UUID,
    path: str,
    at: datetime,
    *,
    user_id: str | None = None,
    kind: int = 1,
    is_bot: bool = False,
) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO analytics.events "
            "(time, site_id, event_id, received_at, kind, name, path, user_id, is_bot) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (at, site, uuid.uuid4(), at, kind, "pageview" if kind == 1 else "signup", path, user_id, is_bot),
        )


async def test_counts_page_views_of_the_day_only(pool: AsyncConnectionPool) -> None:
    site, other = uuid.uuid4(), uuid.uuid4()
    for path, user in [("/a", "u1"), ("/a", "u2"), ("/b", "u1"), ("/c", None), ("/a", None)]:
        await insert(pool, site, path, NOON, user_id=user)
    await insert(
        pool, site, "/a", datetime(2024, 3, 10, 0, 0, tzinfo=UTC), user_id="u3"
    )  # first instant counts
    await insert(pool, site, "/a", datetime(2024, 3, 11, 0, 0, tzinfo=UTC), user_id="u4")  # next day
    await insert(pool, site, "/a", NOON - timedelta(days=1), user_id="u5")
    await insert(pool, site, "/bot", NOON, user_id="u6", is_bot=True)
    await insert(pool, site, "/signup", NOON, user_id="u7", kind=2)
    await insert(pool, other, "/a", NOON, user_id="u8")

    stats = await day_stats(pool, site, DAY, 10)
    assert stats.total_views == 6
    assert stats.unique_users == 3
    assert stats.top_paths == [("/a", 4), ("/b", 1), ("/c", 1)]


async def test_limit_and_tie_order(pool: AsyncConnectionPool) -> None:
    site = uuid.uuid4()
    for path in ["/z", "/y", "/x", "/x"]:
        await insert(pool, site, path, NOON)
    stats = await day_stats(pool, site, DAY, 2)
    assert stats.top_paths == [("/x", 2), ("/y", 1)]
    assert stats.total_views == 4


async def test_empty_day(pool: AsyncConnectionPool) -> None:
    stats = await day_stats(pool, uuid.uuid4(), DAY, 10)
    assert (stats.total_views, stats.unique_users, stats.top_paths) == (0, 0, [])
