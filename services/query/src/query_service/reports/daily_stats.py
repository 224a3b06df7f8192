"""Page views, distinct users and top paths of one site on one UTC day (bots excluded)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from psycopg import AsyncConnection, sql

from query_service import relations

_TOTALS = sql.SQL("""
SELECT count(*), count(DISTINCT user_id)
FROM {events}
WHERE site_id = %(site)s AND time >= %(start)s AND time < %(end)s AND kind = %(kind)s AND NOT is_bot
""").format(events=relations.EVENTS)

_TOP_PATHS = sql.SQL("""
SELECT path, count(*) AS views
FROM {events}
WHERE site_id = %(site)s AND time >= %(start)s AND time < %(end)s AND kind = %(kind)s AND NOT is_bot
GROUP BY path
ORDER BY views DESC, path
LIMIT %(limit)s
""").format(events=relations.EVENTS)


@dataclass(frozen=True, slots=True)
class DailyStats:
    total_views: int
    unique_users: int
    top_paths: list[tuple[str, int]]


async def daily_stats(conn: AsyncConnection[Any], site_id: uuid.UUID, day: date, limit: int) -> DailyStats:
    """Both statements run in the caller's snapshot, so the totals and the top list agree."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    params = {
        "site": site_id,
        "start": start,
        "end": start + timedelta(days=1),
        "kind": relations.PAGEVIEW_KIND,
        "limit": limit,
    }
    cur = await conn.execute(_TOTALS, params)
    totals = await cur.fetchone()
    cur = await conn.execute(_TOP_PATHS, params)
    top = await cur.fetchall()
    total_views, unique_users = totals if totals else (0, 0)
    return DailyStats(int(total_views), int(unique_users), [(path, int(views)) for path, views in top])
