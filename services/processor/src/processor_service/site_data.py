"""Deleting a site's data: every row of the site in schema analytics, when auth announces the
site deleted (analytics_bus.sites), and again on sweeps for events that were still queued then.

Raw events, visits, visitor days and claimed event ids are deleted by site. The counts per
15-minute bucket: tables (Apache edition) lose the site's rows; continuous aggregates (TSL
edition) lose the site's materialized rows, and the buckets above the watermark are answered from
the raw rows, which are gone. Other sites' rows are untouched, so their reports do not change.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from processor_service import rollups
from processor_service.rollups import AGGREGATES, EVENT_COUNTS, VISIT_COUNTS, VISITOR_DAYS, Mode

log = structlog.get_logger("analytics.processor")

# Events queued before the deletion may be stored after it for as long as the events stream keeps
# them (BusConfig.max_age_s, 7 days): deleted sites are swept again for that long, and a day more.
SWEEP_FOR = timedelta(days=8)
SWEEP_EVERY_S = 3600.0

_TABLES = ("events", "sessions", VISITOR_DAYS, "event_ids")
_COUNT_TABLES = (EVENT_COUNTS, VISIT_COUNTS)
_MARK = "INSERT INTO analytics.deleted_sites (site_id) VALUES (%s) ON CONFLICT (site_id) DO NOTHING"
# Where TimescaleDB keeps a continuous aggregate's materialized rows (same column names).
_MATERIALIZED = """
SELECT h.schema_name, h.table_name
  FROM _timescaledb_catalog.continuous_agg ca
  JOIN _timescaledb_catalog.hypertable h ON h.id = ca.mat_hypertable_id
 WHERE ca.user_view_schema = 'analytics' AND ca.user_view_name = %s
"""
_SWEEP = "SELECT site_id FROM analytics.deleted_sites WHERE deleted_at > now() - %s ORDER BY site_id"


@dataclass(frozen=True, slots=True)
class SiteDataDeleted:
    """Rows deleted, by relation."""

    rows: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.rows.values())


async def _relations(conn: AsyncConnection[Any], mode: Mode) -> list[tuple[str, sql.Identifier]]:
    names = [(name, sql.Identifier("analytics", name)) for name in _TABLES]
    if mode is Mode.TABLES:
        names += [(name, sql.Identifier("analytics", name)) for name in _COUNT_TABLES]
    elif mode is Mode.CONTINUOUS:
        for name in AGGREGATES:
            cur = await conn.execute(_MATERIALIZED, (name,))
            row = await cur.fetchone()
            if row is not None:
                names.append((name, sql.Identifier(row[0], row[1])))
    return names


async def delete_site_data(conn: AsyncConnection[Any], site_id: str) -> SiteDataDeleted:
    """Deletes every row of the site in schema analytics and records the site as deleted, in one
    transaction. ``conn`` must not be in a transaction."""
    mode = await rollups.detect(conn)
    await conn.commit()
    rows: dict[str, int] = {}
    async with conn.transaction():
        await conn.execute(_MARK, (site_id,))
        for name, relation in await _relations(conn, mode):
            cur = await conn.execute(
                sql.SQL("DELETE FROM {} WHERE site_id = %s").format(relation), (site_id,)
            )
            rows[name] = cur.rowcount
    return SiteDataDeleted(rows)


async def deleted(pool: AsyncConnectionPool, site_id: str) -> None:
    """The handler of a site deletion on the bus (analytics_bus.sites.follow_site_deletions)."""
    async with pool.connection() as conn:
        result = await delete_site_data(conn, site_id)
    log.info("site data deleted", site_id=site_id, rows=result.total, **result.rows)


async def sweep(pool: AsyncConnectionPool) -> int:
    """Deletes again whatever arrived for the recently deleted sites; returns the rows deleted."""
    async with pool.connection() as conn:
        cur = await conn.execute(_SWEEP, (SWEEP_FOR,))
        sites = [str(row[0]) for row in await cur.fetchall()]
        await conn.commit()
        total = 0
        for site_id in sites:
            result = await delete_site_data(conn, site_id)
            if result.total:
                log.info("late data of a deleted site deleted", site_id=site_id, rows=result.total)
            total += result.total
    return total


async def sweep_forever(pool: AsyncConnectionPool, every_s: float = SWEEP_EVERY_S) -> None:
    """Runs ``sweep`` every ``every_s`` seconds until cancelled; a failure waits for the next round."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await sweep(pool)
        except Exception as error:  # the database may be away; the next round tries again
            log.warning("sweeping deleted sites failed", error=str(error) or type(error).__name__)
