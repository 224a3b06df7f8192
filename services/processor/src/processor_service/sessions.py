"""Set-based sessionization: folds the events a transaction inserted into analytics.sessions.

Definition (also in migration 0002): per (site, visitor) with visitor_id <> 0 and is_bot = false, a
session is a maximal run of events in time order whose consecutive events are at most SESSION_GAP
apart. Ties are ordered by event_id, so the result never depends on arrival order.

Per batch, whatever its size, the writer runs:

1. the events insert, whose ``RETURNING`` rows (only those really added: a redelivered event is not
   returned, so it can never be counted twice) fill the temp table ``session_input``;
2. ``LOCK``: a transaction-scoped advisory lock per hash bucket of (site, visitor), taken in bucket
   order, so replicas serialise on shared visitors without deadlocks and the lock table use per
   transaction is bounded;
3. ``FAST``: one aggregate row per visitor of the new events (no sort: first/last are min/max over
   row-valued arrays) and a bounded index look-up of the stored sessions within ``gap`` of them. If
   the new events span at most ``gap`` and either no session is near (INSERT one) or the only near
   session ended before the first new event (UPDATE it in place, HOT: no indexed column changes),
   the visitor is done. Everyone else is routed to ``session_slow``;
4. ``SLOW``, only when step 3 routed someone: each new event is a one-event session and each near
   stored session an aggregate; sorted by start, an island begins where the start is more than
   ``gap`` after every earlier end. That is exact because a stored session has no internal gap above
   ``gap``, so merging its aggregate equals merging its events. Islands holding new events replace
   the sessions they absorbed: the one with the same start is updated, the others deleted, a new
   start is inserted (rows never move between chunks).

Both statements also return the earliest start of a visit they changed (continuous aggregates
refresh from there when it lies below their invalidation threshold: processor_service.rollups).

Every look-up is bounded below by ``min(new time) - gap - session_bounds.max_span``: a session that
can absorb an event at t ends at or after t - gap, so it starts no earlier than that. The writer
reads the bound between LOCK and FAST and passes it, rounded down to its chunk's start, as a
parameter (see BOUND).

That bound is exact whatever the ids are; how far back it reaches depends on max_span, which
activity bounds, not the ids: a session ends after ``gap`` without events. Anonymous ids change
with the day's salt, so their sessions also end with the day ingest received them on. A signed-in
visitor (an event with a user_id) keeps one id across days, so their sessions may cross midnight,
and the chunk boundary with it (rows that move to an earlier start are deleted and re-inserted, as
for any late event). People pause: their spans stay within hours. A sender that stays active under
one user_id without a 30-minute pause for days widens max_span for every later look-up, which then
probes more chunks: slower, never a wrong session.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

SESSION_GAP = timedelta(minutes=30)
# Advisory-lock buckets: bounded lock-table use per transaction whatever the batch size.
LOCK_BUCKETS = 256
# First key of the writer's two-key advisory locks, apart from other users of advisory locks.
LOCK_CLASS = 0x5E55_0000

INPUT_TABLE = "session_input"
SLOW_TABLE = "session_slow"
# Changes to visits for the rollups (processor_service.rollups), emptied at commit.
DELTA_TABLE = "visit_delta"
_HEAD = "referrer_host, referrer_source, utm_source, utm_medium, utm_campaign, country, browser, os, device"
_HEAD_NAMES = _HEAD.split(", ")
INPUT_COLUMNS = (
    "site_id uuid, visitor_id bigint, time timestamptz, event_id uuid, kind smallint, path text, "
    + ", ".join(f"{name} text" for name in _HEAD_NAMES)
)
# Columns of analytics.events, in INPUT_COLUMNS order, copied from the insert's RETURNING rows.
FEED_COLUMNS = f"site_id, visitor_id, time, event_id, kind, path, {_HEAD}"
FEED_FILTER = "visitor_id <> 0 AND NOT is_bot"
TEMP_TABLES = (
    f"CREATE TEMP TABLE IF NOT EXISTS {INPUT_TABLE} ({INPUT_COLUMNS}) ON COMMIT DELETE ROWS;"
    f"CREATE TEMP TABLE IF NOT EXISTS {SLOW_TABLE} (site_id uuid, visitor_id bigint) ON COMMIT DELETE ROWS;"
    f"CREATE TEMP TABLE IF NOT EXISTS {DELTA_TABLE} (site_id uuid, bucket timestamptz, visits int, "
    "bounces int, visit_pageviews bigint, duration interval) ON COMMIT DELETE ROWS"
)

LOCK = f"""
SELECT count(pg_advisory_xact_lock({LOCK_CLASS}, bucket))
  FROM (SELECT DISTINCT abs(hashtextextended(site_id::text, visitor_id) %% %(buckets)s)::int AS bucket
          FROM {INPUT_TABLE}
         ORDER BY 1) AS buckets
"""  # noqa: S608 - constants only

# The lower time bound of every look-up, read after LOCK (so max_span includes whatever the sessions
# of the locked visitors widened it to), rounded down to the start of its chunk (chunk_start) and
# passed to FAST and SLOW as the parameter ``lower``. As a parameter, TimescaleDB excludes older
# chunks once per statement: at plan time in a custom plan, at executor start-up in a generic one.
# Computed inside the statement, the bound was only known at run time, and the exclusion then ran
# again on every index probe of the join: 5 of the 7 us each probe cost. Rounded down, because a
# custom plan compares the bound with the chunk's statistics, whose histogram never covers the
# newest times: with a bound inside the chunk, the planner took the (site_id, started_at) index for
# the probes as if the window held one row, and read a site's whole window per visitor (batches 20
# times slower). From the chunk's start the window is the whole chunk, and the primary key's
# (site_id, visitor_id) prefix wins. Any bound at or below the exact one is correct; rounding only
# lets a probe see more of one visitor's sessions: those of one chunk interval (a day by default).
BOUND = f"""
SELECT (SELECT min(time) FROM {INPUT_TABLE}) - %(gap)s - max_span FROM analytics.session_bounds
"""  # noqa: S608 - constants only
# The sessions hypertable's chunk interval, which chunk_start rounds to.
CHUNK_INTERVAL = """
SELECT time_interval FROM timescaledb_information.dimensions
 WHERE hypertable_schema = 'analytics' AND hypertable_name = 'sessions' AND column_name = 'started_at'
"""
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def chunk_start(at: datetime, interval: timedelta | None) -> datetime:
    """The start of the chunk holding ``at``: TimescaleDB aligns fixed-interval time chunks to
    multiples of the interval from the Unix epoch. ``at`` itself when the interval is unknown."""
    if not interval:
        return at
    return _UNIX_EPOCH + ((at - _UNIX_EPOCH) // interval) * interval


_HEAD_ROW = f"ROW(time, event_id, {_HEAD})::analytics.session_head"
_OLD_HEAD = ", ".join("s." + name for name in _HEAD_NAMES)
_MARK_ROW = "ROW(time, event_id, path)::analytics.session_mark"
_SESSION_COLUMNS = (
    "site_id, visitor_id, started_at, session_id, ended_at, pageviews, events, "
    f"entry_path, entry_at, entry_event_id, exit_path, exit_at, exit_event_id, {_HEAD}"
)


def _session_values(start: str, end: str) -> str:
    """SELECT list matching _SESSION_COLUMNS from a row with head, entry and exit marks."""
    return (
        f"site_id, visitor_id, {start}, (head).event_id, {end}, pageviews, events, "
        "coalesce((entry).path, ''), (entry).at, (entry).event_id, "
        "coalesce((exit).path, ''), (exit).at, (exit).event_id, "
        + ", ".join(f"(head).{name}" for name in _HEAD_NAMES)
    )


def near_sessions(visitor: str) -> str:
    """The stored sessions an aggregate row (site_id, visitor_id, lo, hi) of new events can touch:
    ending at most ``gap`` before its first event, starting at most ``gap`` after its last. The
    fast path's routing and the slow path's merge must use the same window."""
    return f"""      JOIN analytics.sessions s
        ON s.site_id = {visitor}.site_id AND s.visitor_id = {visitor}.visitor_id
       AND s.started_at >= %(lower)s
       AND s.started_at <= {visitor}.hi + %(gap)s
       AND s.ended_at >= {visitor}.lo - %(gap)s"""


FAST = f"""
WITH news AS (
    SELECT site_id, visitor_id, min(time) AS lo, max(time) AS hi,
           count(*)::int AS events, (count(*) FILTER (WHERE kind = 1))::int AS pageviews,
           (min(ARRAY[{_HEAD_ROW}]))[1] AS head,
           (min(ARRAY[{_MARK_ROW}]) FILTER (WHERE kind = 1))[1] AS entry,
           (max(ARRAY[{_MARK_ROW}]) FILTER (WHERE kind = 1))[1] AS exit
      FROM {INPUT_TABLE}
     GROUP BY site_id, visitor_id
),
near AS (
    SELECT n.site_id, n.visitor_id, count(*) AS sessions,
           max(s.started_at) AS started_at, max(s.ended_at) AS ended_at
      FROM news n
{near_sessions("n")}
     GROUP BY n.site_id, n.visitor_id
),
plan AS MATERIALIZED (
    SELECT n.*, near.started_at AS old_start, near.ended_at AS old_end,
           CASE WHEN n.hi - n.lo > %(gap)s THEN 'slow'
                WHEN near.sessions IS NULL THEN 'new'
                WHEN near.sessions = 1 AND near.ended_at < n.lo THEN 'extend'
                ELSE 'slow' END AS route
      FROM news n
      LEFT JOIN near USING (site_id, visitor_id)
),
extended AS (
    UPDATE analytics.sessions s
       SET ended_at = p.hi,
           pageviews = s.pageviews + p.pageviews,
           events = s.events + p.events,
           exit_path = coalesce((p.exit).path, s.exit_path),
           exit_at = coalesce((p.exit).at, s.exit_at),
           exit_event_id = coalesce((p.exit).event_id, s.exit_event_id),
           entry_path = CASE WHEN s.entry_at IS NULL THEN coalesce((p.entry).path, '') ELSE s.entry_path END,
           entry_at = coalesce(s.entry_at, (p.entry).at),
           entry_event_id = coalesce(s.entry_event_id, (p.entry).event_id)
      FROM plan p
     WHERE p.route = 'extend'
       AND s.site_id = p.site_id AND s.visitor_id = p.visitor_id AND s.started_at = p.old_start
       AND s.started_at >= %(lower)s
    RETURNING s.site_id, s.started_at, s.ended_at - s.started_at AS span, s.is_bounce,
              s.pageviews - p.pageviews = 1 AND s.events - p.events = 1 AS was_bounce,
              p.pageviews AS added_pageviews, s.ended_at - p.old_end AS added_duration
),
created AS (
    INSERT INTO analytics.sessions ({_SESSION_COLUMNS})
    SELECT {_session_values("lo", "hi")} FROM plan WHERE route = 'new'
    RETURNING site_id, started_at, ended_at - started_at AS span, is_bounce, pageviews
),
slow AS (
    INSERT INTO {SLOW_TABLE} (site_id, visitor_id)
    SELECT site_id, visitor_id FROM plan WHERE route = 'slow'
    RETURNING 1
),
widened AS (
    UPDATE analytics.session_bounds b
       SET max_span = w.span
      FROM (SELECT max(span) AS span FROM (SELECT span FROM extended UNION ALL SELECT span FROM created) x) w
     WHERE w.span > b.max_span
){{delta}}
SELECT (SELECT count(*) FROM extended), (SELECT count(*) FROM created), (SELECT count(*) FROM slow),
       (SELECT min(started_at)
          FROM (SELECT started_at FROM extended UNION ALL SELECT started_at FROM created) changed)
"""  # noqa: S608 - constants only

# FAST, and with it the change it made to the visits, for the rollups kept as tables
# (processor_service.rollups): an extended visit keeps its start bucket and adds its new events'
# page views and time, and may stop being a bounce; a created one adds a visit.
_FAST_DELTA = f""",
delta AS (
    INSERT INTO {DELTA_TABLE} (site_id, bucket, visits, bounces, visit_pageviews, duration)
    SELECT site_id, time_bucket(INTERVAL '15 minutes', started_at), 0,
           is_bounce::int - was_bounce::int, added_pageviews, added_duration
      FROM extended
    UNION ALL
    SELECT site_id, time_bucket(INTERVAL '15 minutes', started_at), 1, is_bounce::int, pageviews, span
      FROM created
)"""  # noqa: S608 - constants only
FAST_WITH_DELTA = FAST.replace("{delta}", _FAST_DELTA)
FAST = FAST.replace("{delta}", "")

SLOW = f"""
WITH news AS (
    SELECT i.* FROM {INPUT_TABLE} i JOIN {SLOW_TABLE} USING (site_id, visitor_id)
),
visitors AS (
    SELECT site_id, visitor_id, min(time) AS lo, max(time) AS hi FROM news GROUP BY site_id, visitor_id
),
items AS (
    SELECT s.site_id, s.visitor_id, s.started_at, s.session_id AS first_id, s.ended_at,
           ROW(s.started_at, s.session_id, {_OLD_HEAD})::analytics.session_head AS head,
           ROW(s.entry_at, s.entry_event_id, s.entry_path)::analytics.session_mark AS entry,
           ROW(s.exit_at, s.exit_event_id, s.exit_path)::analytics.session_mark AS exit,
           s.entry_at IS NOT NULL AS has_pageview, s.pageviews, s.events, s.started_at AS old_start
      FROM visitors v
{near_sessions("v")}
    UNION ALL
    SELECT site_id, visitor_id, time, event_id, time, {_HEAD_ROW}, {_MARK_ROW}, {_MARK_ROW},
           kind = 1, (kind = 1)::int, 1, NULL
      FROM news
),
marked AS (
    SELECT i.*,
           coalesce(started_at - max(ended_at) OVER (
               PARTITION BY site_id, visitor_id ORDER BY started_at, first_id
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) > %(gap)s, true) AS starts_island
      FROM items i
),
islands AS (
    SELECT m.*,
           count(*) FILTER (WHERE starts_island) OVER (
               PARTITION BY site_id, visitor_id ORDER BY started_at, first_id ROWS UNBOUNDED PRECEDING
           ) AS island
      FROM marked m
),
merged AS MATERIALIZED (
    SELECT site_id, visitor_id,
           min(started_at) AS started_at,
           max(ended_at) AS ended_at,
           (min(ARRAY[head]))[1] AS head,
           (min(ARRAY[entry]) FILTER (WHERE has_pageview))[1] AS entry,
           (max(ARRAY[exit]) FILTER (WHERE has_pageview))[1] AS exit,
           sum(pageviews)::int AS pageviews,
           sum(events)::int AS events,
           array_agg(old_start) FILTER (WHERE old_start IS NOT NULL) AS old_starts
      FROM islands
     GROUP BY site_id, visitor_id, island
    HAVING bool_or(old_start IS NULL)
),
updated AS (
    UPDATE analytics.sessions s
       SET session_id = (m.head).event_id, ended_at = m.ended_at,
           pageviews = m.pageviews, events = m.events,
           entry_path = coalesce((m.entry).path, ''), entry_at = (m.entry).at,
           entry_event_id = (m.entry).event_id,
           exit_path = coalesce((m.exit).path, ''), exit_at = (m.exit).at,
           exit_event_id = (m.exit).event_id,
           {", ".join(f"{name} = (m.head).{name}" for name in _HEAD_NAMES)}
      FROM merged m
     WHERE s.site_id = m.site_id AND s.visitor_id = m.visitor_id AND s.started_at = m.started_at
       AND m.started_at = ANY (m.old_starts)
       AND s.started_at >= %(lower)s
    RETURNING 1
),
deleted AS (
    DELETE FROM analytics.sessions s
     USING (SELECT site_id, visitor_id, started_at, unnest(old_starts) AS old_start FROM merged) d
     WHERE s.site_id = d.site_id AND s.visitor_id = d.visitor_id AND s.started_at = d.old_start
       AND d.old_start <> d.started_at
       AND s.started_at >= %(lower)s
    RETURNING 1
),
inserted AS (
    INSERT INTO analytics.sessions ({_SESSION_COLUMNS})
    SELECT {_session_values("started_at", "ended_at")}
      FROM merged m
     WHERE NOT (m.started_at = ANY (coalesce(m.old_starts, '{{}}')))
    RETURNING 1
),
widened AS (
    UPDATE analytics.session_bounds b
       SET max_span = w.span
      FROM (SELECT max(ended_at - started_at) AS span FROM merged) w
     WHERE w.span > b.max_span
)
SELECT (SELECT count(*) FROM updated), (SELECT count(*) FROM inserted), (SELECT count(*) FROM deleted),
       (SELECT min(started_at) FROM merged)
"""  # noqa: S608 - constants only

# The definition applied from scratch to the sites' events: what the incremental path must equal.
RECOMPUTE = f"""
WITH e AS (
    SELECT site_id, visitor_id, time, event_id, kind, path, {_HEAD},
           coalesce(time - lag(time) OVER (PARTITION BY site_id, visitor_id ORDER BY time, event_id)
                    > %(gap)s, true) AS starts_session
      FROM analytics.events
     WHERE visitor_id <> 0 AND NOT is_bot AND site_id = ANY (%(sites)s)
),
n AS (
    SELECT e.*, count(*) FILTER (WHERE starts_session) OVER (
               PARTITION BY site_id, visitor_id ORDER BY time, event_id ROWS UNBOUNDED PRECEDING) AS session
      FROM e
)
SELECT site_id, visitor_id, min(time) AS started_at,
       (array_agg(event_id ORDER BY time, event_id))[1] AS session_id,
       max(time) AS ended_at,
       count(*) FILTER (WHERE kind = 1)::int AS pageviews,
       count(*)::int AS events,
       coalesce((array_agg(path ORDER BY time, event_id) FILTER (WHERE kind = 1))[1], '') AS entry_path,
       coalesce((array_agg(path ORDER BY time DESC, event_id DESC) FILTER (WHERE kind = 1))[1], '')
           AS exit_path,
       min(time) FILTER (WHERE kind = 1) AS entry_at,
       (array_agg(event_id ORDER BY time, event_id) FILTER (WHERE kind = 1))[1] AS entry_event_id,
       max(time) FILTER (WHERE kind = 1) AS exit_at,
       (array_agg(event_id ORDER BY time DESC, event_id DESC) FILTER (WHERE kind = 1))[1] AS exit_event_id,
       {", ".join(f"(array_agg({name} ORDER BY time, event_id))[1] AS {name}" for name in _HEAD_NAMES)},
       extract(epoch FROM max(time) - min(time))::double precision AS duration_s,
       count(*) FILTER (WHERE kind = 1) = 1 AND count(*) = 1 AS is_bounce
  FROM n
 GROUP BY site_id, visitor_id, session
 ORDER BY site_id, visitor_id, started_at
"""  # noqa: S608 - constants only

# The same columns as the writer stored them, in the same order.
STORED = f"""
SELECT site_id, visitor_id, started_at, session_id, ended_at, pageviews, events, entry_path, exit_path,
       entry_at, entry_event_id, exit_at, exit_event_id, {_HEAD}, duration_s, is_bounce
  FROM analytics.sessions
 WHERE site_id = ANY (%(sites)s)
 ORDER BY site_id, visitor_id, started_at
"""  # noqa: S608 - constants only
