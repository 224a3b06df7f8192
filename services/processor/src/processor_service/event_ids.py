"""The event ids the writer has claimed (analytics.event_ids), and forgetting them after KEEP."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog
from psycopg_pool import AsyncConnectionPool

log = structlog.get_logger("analytics.processor")

# How long an event id is recognised, whatever the time its copies carry (README: at least 7 days).
KEEP = timedelta(days=8)
# Expired claims are deleted this many at a time, so no statement holds locks for long.
_EXPIRE_BATCH = 10_000
_EXPIRE = """
DELETE FROM analytics.event_ids
 WHERE ctid = ANY (ARRAY(SELECT ctid FROM analytics.event_ids WHERE first_seen < now() - %(keep)s
                         LIMIT %(batch)s))
"""


async def expire(pool: AsyncConnectionPool, keep: timedelta = KEEP) -> int:
    """Deletes the claims older than ``keep``; returns how many."""
    total = 0
    while True:
        async with pool.connection() as conn:
            cur = await conn.execute(_EXPIRE, {"keep": keep, "batch": _EXPIRE_BATCH})
            deleted = cur.rowcount
        total += deleted
        if deleted < _EXPIRE_BATCH:
            return total


async def expire_forever(pool: AsyncConnectionPool, every_s: float) -> None:
    """Runs ``expire`` every ``every_s`` seconds until cancelled; a failure waits for the next round."""
    while True:
        try:
            deleted = await expire(pool)
        except Exception as error:  # the database may be away; the next round tries again
            log.warning("expiring event ids failed", error=str(error) or type(error).__name__)
        else:
            if deleted:
                log.info("event ids expired", count=deleted)
        await asyncio.sleep(every_s)
