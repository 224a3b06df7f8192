"""Keeps the report rollups (migration 0006) equal to what the raw events and visits say.

Two mechanisms behind the same relation names, chosen by what the migration created:

- **Tables** (Apache edition): the writer adds what its transaction changed, in that transaction.
  Events: the rows the insert really added (``session_input``: never a redelivered copy) are
  counted into ``event_counts_15m`` and folded into ``visitor_days`` (least first, greatest last).
  Visits: every stored visit the sessionizer may touch lies in the look-up window of the batch's
  visitors (sessions.near_sessions), before and after it runs; the window is read once before
  (subtracted) and once after (added), so whatever the sessionizer extended, merged, moved or
  created lands in ``visit_counts_15m`` as an exact difference and the untouched visits cancel.
  The advisory locks of the sessionizer keep other writers away from those visitors in between.
  The upserts add, so concurrent writers commute; they run as three statements in a fixed order,
  each in key order, so two writers never wait for each other's rows in opposite orders.
- **Continuous aggregates** (TSL edition): TimescaleDB materializes them by policy and answers
  the rest in real time from the raw relations. A change below the invalidation threshold (a late
  event, a visit that grew back into a materialized bucket) would wait for the next policy run, so
  the writer refreshes the buckets it touched there right after its commit (``refresh_late``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from psycopg import AsyncConnection, AsyncCursor, sql

from processor_service.sessions import (
    DELTA_TABLE,
    INPUT_TABLE,
    LOCK_BUCKETS,
    LOCK_CLASS,
    SESSION_GAP,
    SLOW_TABLE,
    chunk_start,
    near_sessions,
)

log = structlog.get_logger("analytics.processor")

EVENT_COUNTS = "event_counts_15m"
VISIT_COUNTS = "visit_counts_15m"
VISITOR_DAYS = "visitor_days"
RELATIONS = (EVENT_COUNTS, VISIT_COUNTS, VISITOR_DAYS)
# Continuous aggregates in the TSL edition; visitor_days is a table the writer keeps in both.
AGGREGATES = (EVENT_COUNTS, VISIT_COUNTS)
BUCKET = timedelta(minutes=15)
DAY = timedelta(days=1)


class Mode(enum.Enum):
    NONE = "none"  # the relations do not exist (an older schema)
    TABLES = "tables"
    CONTINUOUS = "continuous"


_MODE = """
SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass('analytics.event_counts_15m')
"""


async def detect(conn: AsyncConnection[Any]) -> Mode:
    cur = await conn.execute(_MODE)
    row = await cur.fetchone()
    if row is None or row[0] is None:
        return Mode.NONE
    return Mode.TABLES if row[0] == "r" else Mode.CONTINUOUS


# The visits in the look-up window of the visitors routed to the sessionizer's slow path, with a
# sign: -1 before SLOW runs, +1 after (FAST records its own changes: sessions.FAST_WITH_DELTA).
# Parameters: SLOW's (gap, lower) and sign.
SNAPSHOT = f"""
INSERT INTO {DELTA_TABLE} (site_id, bucket, visits, bounces, visit_pageviews, duration)
SELECT s.site_id, time_bucket(INTERVAL '15 minutes', s.started_at), %(sign)s,
       CASE WHEN s.is_bounce THEN %(sign)s ELSE 0 END, %(sign)s * s.pageviews,
       %(sign)s * (s.ended_at - s.started_at)
  FROM (SELECT i.site_id, i.visitor_id, min(i.time) AS lo, max(i.time) AS hi
          FROM {INPUT_TABLE} i JOIN {SLOW_TABLE} USING (site_id, visitor_id)
         GROUP BY i.site_id, i.visitor_id) v
{near_sessions("v")}
"""  # noqa: S608 - constants only

# A visitor's days: each row's first and last event, and prev_last_at, the latest event of the
# visitor's earlier days. New rows take it from the stored earlier days and from the batch's own;
# rows of later days then take the batch's last events where they are later (a late event).
# Only the batch's visitors are touched, and the sessionizer's locks keep other writers off them.
VISITOR_DAYS_UPSERT = f"""
WITH days AS (
    SELECT site_id, time_bucket(INTERVAL '1 day', time) AS day, visitor_id, min(time) AS first_at,
           max(time) AS last_at
      FROM {INPUT_TABLE} GROUP BY 1, 2, 3
)
INSERT INTO analytics.{VISITOR_DAYS} AS t (site_id, day, visitor_id, first_at, last_at, prev_last_at)
SELECT d.site_id, d.day, d.visitor_id, d.first_at, d.last_at,
       greatest(
           (SELECT p.last_at FROM analytics.{VISITOR_DAYS} p
             WHERE p.site_id = d.site_id AND p.visitor_id = d.visitor_id AND p.day < d.day
             ORDER BY p.day DESC LIMIT 1),
           max(d.last_at) OVER (PARTITION BY d.site_id, d.visitor_id ORDER BY d.day
                                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING))
  FROM days d
 ORDER BY 1, 2, 3
    ON CONFLICT (site_id, day, visitor_id) DO UPDATE
   SET first_at = least(t.first_at, excluded.first_at), last_at = greatest(t.last_at, excluded.last_at)
 WHERE excluded.first_at < t.first_at OR excluded.last_at > t.last_at
"""  # noqa: S608 - constants only
VISITOR_DAYS_LATER = f"""
UPDATE analytics.{VISITOR_DAYS} n
   SET prev_last_at = later.last_at
  FROM (SELECT n2.site_id, n2.visitor_id, n2.day, max(d.last_at) AS last_at
          FROM (SELECT site_id, visitor_id, time_bucket(INTERVAL '1 day', time) AS day, max(time) AS last_at
                  FROM {INPUT_TABLE} GROUP BY 1, 2, 3) d
          -- Only days before a site's latest stored day can have later rows: in real time, none.
          JOIN (SELECT site_id,
                       (SELECT max(x.day) FROM analytics.{VISITOR_DAYS} x
                         WHERE x.site_id = s.site_id) AS latest
                  FROM (SELECT DISTINCT site_id FROM {INPUT_TABLE}) s) sites
            ON sites.site_id = d.site_id AND d.day < sites.latest
          JOIN analytics.{VISITOR_DAYS} n2
            ON n2.site_id = d.site_id AND n2.visitor_id = d.visitor_id AND n2.day > d.day
         GROUP BY 1, 2, 3) later
 WHERE n.site_id = later.site_id AND n.visitor_id = later.visitor_id AND n.day = later.day
   AND (n.prev_last_at IS NULL OR n.prev_last_at < later.last_at)
"""  # noqa: S608 - constants only

APPLY = f"""
INSERT INTO analytics.{VISIT_COUNTS} AS t (site_id, bucket, visits, bounces, visit_pageviews, duration)
SELECT site_id, bucket, sum(visits), sum(bounces), sum(visit_pageviews), sum(duration)
  FROM {DELTA_TABLE} GROUP BY 1, 2
HAVING sum(visits) <> 0 OR sum(bounces) <> 0 OR sum(visit_pageviews) <> 0 OR sum(duration) <> INTERVAL '0'
 ORDER BY 1, 2
    ON CONFLICT (site_id, bucket) DO UPDATE
   SET visits = t.visits + excluded.visits, bounces = t.bounces + excluded.bounces,
       visit_pageviews = t.visit_pageviews + excluded.visit_pageviews,
       duration = t.duration + excluded.duration;
-- A bucket whose visits all moved away (a merge re-started them earlier) holds no row, as in the
-- continuous aggregate: a row of zeros would still make a group of its own in a report.
DELETE FROM analytics.{VISIT_COUNTS} t
 USING (SELECT DISTINCT site_id, bucket FROM {DELTA_TABLE}) d
 WHERE t.site_id = d.site_id AND t.bucket = d.bucket
   AND t.visits = 0 AND t.bounces = 0 AND t.visit_pageviews = 0 AND t.duration = INTERVAL '0';
INSERT INTO analytics.{EVENT_COUNTS} AS t (site_id, bucket, pageviews, events)
SELECT site_id, time_bucket(INTERVAL '15 minutes', time), count(*) FILTER (WHERE kind = 1), count(*)
  FROM {INPUT_TABLE} GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (site_id, bucket) DO UPDATE
   SET pageviews = t.pageviews + excluded.pageviews, events = t.events + excluded.events
"""  # noqa: S608 - constants only


async def keep_visitor_days(cur: AsyncCursor[Any]) -> None:
    await cur.execute(VISITOR_DAYS_UPSERT)
    if cur.rowcount:
        await cur.execute(VISITOR_DAYS_LATER)


async def snapshot(cur: AsyncCursor[Any], params: dict[str, object], sign: int) -> None:
    await cur.execute(SNAPSHOT, {**params, "sign": sign})


async def apply(cur: AsyncCursor[Any]) -> None:
    await cur.execute(APPLY)


@dataclass(frozen=True, slots=True)
class Touched:
    """What one committed transaction changed, for the continuous aggregates' late refresh."""

    events_from: datetime
    events_to: datetime  # inclusive: the last event's time
    visits_from: datetime | None  # the earliest start of a visit the sessionizer changed


# Changes to raw rows below a hypertable's invalidation threshold are logged for the next refresh
# instead of being seen by real-time aggregation: those are the ones to refresh now. Read after the
# commit: a policy run that moves the threshold later either logged this change (and the refresh
# below sees the new threshold) or started after the commit and materializes it itself.
_THRESHOLDS = """
SELECT ca.user_view_name, _timescaledb_functions.to_timestamp(it.watermark)
  FROM _timescaledb_catalog.continuous_agg ca
  JOIN _timescaledb_catalog.continuous_aggs_invalidation_threshold it
    ON it.hypertable_id = ca.raw_hypertable_id
 WHERE ca.user_view_schema = 'analytics' AND ca.user_view_name = ANY (%(names)s)
"""


async def refresh_late(conn: AsyncConnection[Any], touched: Touched) -> list[str]:
    """Refreshes, outside any transaction, the continuous aggregates whose materialized part the
    transaction changed; returns their names. ``conn`` must be in autocommit mode."""
    cur = await conn.execute(_THRESHOLDS, {"names": list(AGGREGATES)})
    thresholds = {str(name): at for name, at in await cur.fetchall()}
    windows = {
        EVENT_COUNTS: (
            chunk_start(touched.events_from, BUCKET),
            chunk_start(touched.events_to, BUCKET) + BUCKET,
        ),
    }
    if touched.visits_from is not None:  # a changed visit starts no later than the last event
        # A visit absorbed by a merge may start up to the gap after the last event.
        last = chunk_start(touched.events_to + SESSION_GAP, BUCKET) + BUCKET
        windows[VISIT_COUNTS] = (chunk_start(touched.visits_from, BUCKET), last)
    refreshed: list[str] = []
    for name, (start, end) in windows.items():
        threshold = thresholds.get(name)
        if threshold is None or start >= threshold:
            continue  # never materialized there: real-time aggregation already answers it
        await conn.execute(
            "CALL refresh_continuous_aggregate(%s, %s, %s)",
            (sql.Identifier("analytics", name).as_string(conn), start, min(end, threshold)),
        )
        refreshed.append(name)
    return refreshed


# Each rollup from scratch, for the sites in %(sites)s and buckets starting in [%(start)s, %(end)s):
# what the maintained relations must hold, and what a rebuild
# writes. Column order matches stored_sql.
RECOMPUTE = {
    EVENT_COUNTS: """
SELECT site_id, time_bucket(INTERVAL '15 minutes', time) AS bucket,
       count(*) FILTER (WHERE kind = 1) AS pageviews, count(*) AS events
  FROM analytics.events
 WHERE NOT is_bot AND visitor_id <> 0 AND site_id = ANY (%(sites)s) AND time >= %(start)s AND time < %(end)s
 GROUP BY 1, 2""",
    VISIT_COUNTS: """
SELECT site_id, time_bucket(INTERVAL '15 minutes', started_at) AS bucket, count(*) AS visits,
       count(*) FILTER (WHERE is_bounce) AS bounces, sum(pageviews) AS visit_pageviews,
       sum(ended_at - started_at) AS duration
  FROM analytics.sessions
 WHERE site_id = ANY (%(sites)s) AND started_at >= %(start)s AND started_at < %(end)s
 GROUP BY 1, 2""",
    VISITOR_DAYS: """
SELECT * FROM (
    SELECT site_id, day, visitor_id, first_at, last_at,
           max(last_at) OVER (PARTITION BY site_id, visitor_id ORDER BY day
                              ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_last_at
      FROM (SELECT site_id, time_bucket(INTERVAL '1 day', time) AS day, visitor_id, min(time) AS first_at,
                   max(time) AS last_at
              FROM analytics.events
             WHERE NOT is_bot AND visitor_id <> 0 AND site_id = ANY (%(sites)s)
             GROUP BY 1, 2, 3) days
) all_days
 WHERE day >= %(start)s AND day < %(end)s""",
}
_COLUMNS = {
    EVENT_COUNTS: ("site_id", "bucket", "pageviews", "events"),
    VISIT_COUNTS: ("site_id", "bucket", "visits", "bounces", "visit_pageviews", "duration"),
    VISITOR_DAYS: ("site_id", "day", "visitor_id", "first_at", "last_at", "prev_last_at"),
}


def stored_sql(name: str) -> str:
    columns = _COLUMNS[name]
    return (
        f"SELECT {', '.join(columns)} FROM analytics.{name}"  # noqa: S608 - constants only
        f" WHERE site_id = ANY (%(sites)s) AND {columns[1]} >= %(start)s AND {columns[1]} < %(end)s"
        f" ORDER BY {', '.join(columns[:3] if name == VISITOR_DAYS else columns[:2])}"
    )


def recompute_sql(name: str) -> str:
    order = "1, 2, 3" if name == VISITOR_DAYS else "1, 2"
    return f"{RECOMPUTE[name]}\n ORDER BY {order}"


async def rebuild_day(conn: AsyncConnection[Any], mode: Mode, sites: list[Any], day: datetime) -> None:
    """Makes the rollups of the sites for one UTC day what their raw events and visits say (the
    visitor days' prev_last_at from the stored earlier days: rebuild days in order, then
    ``fix_later``).

    Tables are replaced in one transaction, under the locks every writer's sessionizer takes, so no
    batch commits halfway through. Continuous aggregates: TimescaleDB recomputes the whole day (for
    every site: it knows no other unit; ``force`` recomputes even what its invalidation log does
    not list).
    """
    start, end = day, day + DAY
    if mode is Mode.CONTINUOUS:
        await conn.set_autocommit(True)
        try:
            for name in AGGREGATES:
                await conn.execute(
                    "CALL refresh_continuous_aggregate(%s, %s, %s, force => true)",
                    (f"analytics.{name}", start, end),
                )
        finally:
            await conn.set_autocommit(False)
    params = {"sites": sites, "start": start, "end": end}
    async with conn.transaction():
        await conn.execute(_ALL_LOCKS)
        for name in RELATIONS if mode is Mode.TABLES else (VISITOR_DAYS,):
            column = _COLUMNS[name][1]
            await conn.execute(
                f"DELETE FROM analytics.{name} WHERE site_id = ANY (%(sites)s)"  # noqa: S608 - constants only
                f" AND {column} >= %(start)s AND {column} < %(end)s",
                params,
            )
            rows = _REBUILT_DAYS if name == VISITOR_DAYS else RECOMPUTE[name]
            await conn.execute(f"INSERT INTO analytics.{name} ({', '.join(_COLUMNS[name])}) {rows}", params)


async def fix_later(conn: AsyncConnection[Any], sites: list[Any], start: datetime) -> int:
    """Sets prev_last_at of the sites' visitor days from ``start`` on from the stored days (after
    a rebuild, which may have moved a visitor's events in either direction); returns the rows fixed."""
    async with conn.transaction():
        await conn.execute(_ALL_LOCKS)
        cur = await conn.execute(_FIX_LATER, {"sites": sites, "start": start})
        return cur.rowcount


_REBUILT_DAYS = f"""
SELECT d.site_id, d.day, d.visitor_id, d.first_at, d.last_at,
       (SELECT p.last_at FROM analytics.{VISITOR_DAYS} p
         WHERE p.site_id = d.site_id AND p.visitor_id = d.visitor_id AND p.day < d.day
         ORDER BY p.day DESC LIMIT 1)
  FROM (SELECT site_id, time_bucket(INTERVAL '1 day', time) AS day, visitor_id, min(time) AS first_at,
               max(time) AS last_at
          FROM analytics.events
         WHERE NOT is_bot AND visitor_id <> 0 AND site_id = ANY (%(sites)s) AND time >= %(start)s
           AND time < %(end)s
         GROUP BY 1, 2, 3) d
"""  # noqa: S608 - constants only
_FIX_LATER = f"""
UPDATE analytics.{VISITOR_DAYS} n
   SET prev_last_at = w.prev_last_at
  FROM (SELECT site_id, day, visitor_id,
               max(last_at) OVER (PARTITION BY site_id, visitor_id ORDER BY day
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_last_at
          FROM analytics.{VISITOR_DAYS} WHERE site_id = ANY (%(sites)s)) w
 WHERE n.site_id = w.site_id AND n.day = w.day AND n.visitor_id = w.visitor_id AND w.day >= %(start)s
   AND n.prev_last_at IS DISTINCT FROM w.prev_last_at
"""  # noqa: S608 - constants only


# Writers lock (site, visitor) hash buckets (sessions.LOCK); a rebuild takes all of them, in the
# same order, so it waits for the batches in flight and holds the next ones back for one day's work.
_ALL_LOCKS = f"""
SELECT count(pg_advisory_xact_lock({LOCK_CLASS}, bucket))
  FROM generate_series(0, {LOCK_BUCKETS} - 1) AS bucket
"""  # noqa: S608 - constants only
