-- Rollups for reports: three relations with the same names and columns in both TimescaleDB editions.
-- Counted are the events reports count (not bots, a visitor id) and every stored visit.
--
--   analytics.event_counts_15m  (site_id, bucket, pageviews, events): events per 15-minute UTC bucket
--   analytics.visit_counts_15m  (site_id, bucket, visits, bounces, visit_pageviews, duration): visits
--                                by the 15-minute UTC bucket they start in; duration sums
--                                ended_at - started_at (an interval: exact to the microsecond)
--   analytics.visitor_days      (site_id, day, visitor_id, first_at, last_at, prev_last_at): one row
--                                per visitor and UTC day they had events on, with the first and last
--                                event time, and the latest event time of their earlier days (NULL:
--                                none), which lets a count of rows count each visitor once
--
-- Every time zone's offset is a multiple of 15 minutes, so a range of whole local days, hours or
-- quarters is a whole number of 15-minute buckets. Visitors are not additive: the query service
-- counts a visitor at the first of their days in a range, the one whose prev_last_at lies before it
-- (see query_service.reports.rollups).
--
-- TSL edition (timescaledb.license = timescale): the counts are continuous aggregates with
-- real-time aggregation and refresh policies; the processor refreshes the buckets a late event or a
-- visit merge touched below the invalidation threshold right after its commit. Raw events are
-- compressed after 30 days. visitor_days is a table the processor keeps in both editions: a row's
-- prev_last_at depends on the visitor's other days, which a continuous aggregate cannot read.
-- Apache edition: all three are tables the processor maintains in the transaction of the event
-- insert, by adding what the transaction changed (processor_service.rollups).
DO $rollups$
BEGIN
    IF current_setting('timescaledb.license', true) = 'timescale' THEN
        EXECUTE $$
            CREATE MATERIALIZED VIEW analytics.event_counts_15m
            WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
            SELECT site_id, time_bucket(INTERVAL '15 minutes', time) AS bucket,
                   count(*) FILTER (WHERE kind = 1) AS pageviews, count(*) AS events
              FROM analytics.events
             WHERE NOT is_bot AND visitor_id <> 0
             GROUP BY site_id, time_bucket(INTERVAL '15 minutes', time)
            WITH NO DATA$$;
        EXECUTE $$
            CREATE MATERIALIZED VIEW analytics.visit_counts_15m
            WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
            SELECT site_id, time_bucket(INTERVAL '15 minutes', started_at) AS bucket,
                   count(*) AS visits, count(*) FILTER (WHERE is_bounce) AS bounces,
                   sum(pageviews) AS visit_pageviews, sum(ended_at - started_at) AS duration
              FROM analytics.sessions
             GROUP BY site_id, time_bucket(INTERVAL '15 minutes', started_at)
            WITH NO DATA$$;
        -- Each policy refreshes whatever changed up to its end offset; real-time aggregation reads
        -- what lies above from the raw relations.
        PERFORM add_continuous_aggregate_policy('analytics.event_counts_15m',
            start_offset => NULL, end_offset => INTERVAL '15 minutes', schedule_interval => INTERVAL '1 minute');
        -- A visit keeps growing while it is active: materialized only once it is hours old, so the
        -- writer's refresh after a change below the threshold (processor_service.rollups) is rare.
        PERFORM add_continuous_aggregate_policy('analytics.visit_counts_15m',
            start_offset => NULL, end_offset => INTERVAL '6 hours', schedule_interval => INTERVAL '5 minutes');
        ALTER TABLE analytics.events SET (
            timescaledb.compress, timescaledb.compress_segmentby = 'site_id',
            timescaledb.compress_orderby = 'time DESC, event_id');
        PERFORM add_compression_policy('analytics.events', compress_after => INTERVAL '30 days');
    ELSE
        CREATE TABLE analytics.event_counts_15m (
            site_id    uuid        NOT NULL,
            bucket     timestamptz NOT NULL,
            pageviews  bigint      NOT NULL,
            events     bigint      NOT NULL,
            PRIMARY KEY (site_id, bucket)
        );
        CREATE TABLE analytics.visit_counts_15m (
            site_id          uuid        NOT NULL,
            bucket           timestamptz NOT NULL,
            visits           bigint      NOT NULL,
            bounces          bigint      NOT NULL,
            visit_pageviews  bigint      NOT NULL,
            duration         interval    NOT NULL,
            PRIMARY KEY (site_id, bucket)
        );
        INSERT INTO analytics.event_counts_15m
        SELECT site_id, time_bucket(INTERVAL '15 minutes', time),
               count(*) FILTER (WHERE kind = 1), count(*)
          FROM analytics.events WHERE NOT is_bot AND visitor_id <> 0 GROUP BY 1, 2;
        INSERT INTO analytics.visit_counts_15m
        SELECT site_id, time_bucket(INTERVAL '15 minutes', started_at),
               count(*), count(*) FILTER (WHERE is_bounce), sum(pageviews), sum(ended_at - started_at)
          FROM analytics.sessions GROUP BY 1, 2;
    END IF;
END
$rollups$;

CREATE TABLE analytics.visitor_days (
    site_id       uuid        NOT NULL,
    day           timestamptz NOT NULL,
    visitor_id    bigint      NOT NULL,
    first_at      timestamptz NOT NULL,
    last_at       timestamptz NOT NULL,
    prev_last_at  timestamptz,
    PRIMARY KEY (site_id, day, visitor_id)
);
-- The writer's look-ups of a visitor's earlier and later days.
CREATE INDEX visitor_days_visitor ON analytics.visitor_days (site_id, visitor_id, day);

INSERT INTO analytics.visitor_days
SELECT site_id, day, visitor_id, first_at, last_at,
       max(last_at) OVER (PARTITION BY site_id, visitor_id ORDER BY day ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
  FROM (SELECT site_id, time_bucket(INTERVAL '1 day', time) AS day, visitor_id, min(time) AS first_at,
               max(time) AS last_at
          FROM analytics.events WHERE NOT is_bot AND visitor_id <> 0 GROUP BY 1, 2, 3) days;
