"""Raw-event retention: events older than ANALYTICS_RAW_RETENTION_DAYS are dropped, whole chunks at a
time, while the rollups (migration 0006) keep their counts. Off by default.

TSL edition: a TimescaleDB retention policy on analytics.events, set (or removed) at start-up to
match the setting. Apache edition: the processor drops the chunks itself every hour
(``drop_forever``). Either way only raw events go: sessions, the rollups and the event-id claims stay,
so reports that the rollups answer keep answering for dropped days; reports that read raw events
(filters, breakdowns) see nothing there, and a rebuild of such a day would empty its rollups.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import structlog
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

log = structlog.get_logger("analytics.processor")

EVERY_S = 3600.0
# Replicas setting the policy at the same time serialise on this lock.
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('analytics.retention'))"
_LICENSE = "SELECT current_setting('timescaledb.license', true)"
# The policy's drop_after, and whether it is the one wanted (the parameter: an interval, or NULL).
_POLICY = """
SELECT j.config ->> 'drop_after', (j.config ->> 'drop_after')::interval IS NOT DISTINCT FROM %s::interval
  FROM timescaledb_information.jobs j
 WHERE j.proc_name = 'policy_retention' AND j.hypertable_schema = 'analytics' AND j.hypertable_name = 'events'
"""
_DROP = "SELECT count(*) FROM drop_chunks('analytics.events', older_than => now() - %s::interval)"


async def is_tsl(conn: AsyncConnection[Any]) -> bool:
    row = await (await conn.execute(_LICENSE)).fetchone()
    return bool(row and row[0] == "timescale")


async def configure(conn: AsyncConnection[Any], keep: timedelta | None) -> str | None:
    """TSL: makes the retention policy on analytics.events match ``keep`` (None: no policy); returns
    the policy's drop_after now. Apache: nothing to set (the processor drops chunks itself)."""
    if not await is_tsl(conn):
        return None
    async with conn.transaction():
        await conn.execute(_LOCK)
        row = await (await conn.execute(_POLICY, (keep,))).fetchone()
        current, same = (row[0], bool(row[1])) if row else (None, keep is None)
        if same:  # else every start of every replica would replace the job
            return current
        await conn.execute("SELECT remove_retention_policy('analytics.events', if_exists => true)")
        if keep is not None:
            await conn.execute(
                "SELECT add_retention_policy('analytics.events', drop_after => %s::interval)", (keep,)
            )
        row = await (await conn.execute(_POLICY, (keep,))).fetchone()
    now = row[0] if row else None
    log.info("raw-event retention policy set", drop_after=now)
    return now


async def drop_old(pool: AsyncConnectionPool, keep: timedelta) -> int:
    """Apache edition: drops the chunks of analytics.events wholly older than ``keep``; returns how
    many."""
    async with pool.connection() as conn:
        row = await (await conn.execute(_DROP, (keep,))).fetchone()
    return int(row[0]) if row else 0


async def drop_forever(pool: AsyncConnectionPool, keep: timedelta, every_s: float = EVERY_S) -> None:
    """Runs ``drop_old`` every ``every_s`` seconds until cancelled; a failure waits for the next round."""
    while True:
        try:
            dropped = await drop_old(pool, keep)
        except Exception as error:  # the database may be away; the next round tries again
            log.warning("dropping old raw events failed", error=str(error) or type(error).__name__)
        else:
            if dropped:
                log.info("old raw events dropped", chunks=dropped, keep_days=keep.days)
        await asyncio.sleep(every_s)
