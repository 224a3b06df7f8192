"""Page views, distinct users and top paths of one site on one UTC day (bots excluded)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from psycopg_pool import AsyncConnectionPool

PAGEVIEW_KIND = 1

_TOTALS = """
SELECT count(*), count(DISTINCT user_id)
FROM analytics.events
WHERE site_id = %(site)s AND time >= %(start)s AND time < %(end)s AND kind = %(kind)s AND NOT is_bot
"""

_TOP_PATHS = """
SELECT path, count(*) AS views
FROM analytics.events
WHERE site_id = %(site)s AND time >= %(start)s AND time < %(end)s AND kind = %(kind)s AND NOT is_bot
GROUP BY path
ORDER BY views DESC, path
LIMIT %(limit)s
"""


@dataclass(frozen=True, slots=True)
class DailyStats:
    total_views: int
    unique_users: int
    top_paths: list[tuple[str, int]]


async def daily_stats(
    pool: AsyncConnectionPool, site_id: uuid.UUID, day: date, limit: int, *, timeout_ms: int
) -> DailyStats:
    start = datetime.combine(day, time.min, tzinfo=UTC)
    params = {
        "site": site_id,
        "start": start,
        "end": start + timedelta(days=1),
        "kind": PAGEVIEW_KIND,
        "limit": limit,
    }
    # One snapshot for both statements, so the totals and the top list agree.
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        await conn.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
        cur = await conn.execute(_TOTALS, params)
        totals = await cur.fetchone()
        cur = await conn.execute(_TOP_PATHS, params)
        top = await cur.fetchall()
    total_views, unique_users = totals if totals else (0, 0)
    return DailyStats(int(total_views), int(unique_users), [(path, int(views)) for path, views in top])
