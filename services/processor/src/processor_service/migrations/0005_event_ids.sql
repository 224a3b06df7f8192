-- An event id names one event per site, whatever its time: the first copy stored wins, a later one
-- (a client's retry with another timestamp, or without one) is acknowledged and dropped. The
-- events' own unique index is (site_id, event_id, time), so it cannot say that across times; this
-- table can. The writer claims every staged event's id here, in the event insert's transaction,
-- and stores only the events whose claim was new. Ids are kept for at least 8 days
-- (processor_service.event_ids.KEEP), then forgotten by the processor: the window in which a copy
-- is recognised. A plain table, not a hypertable: uniqueness must span every time partition.
CREATE TABLE analytics.event_ids (
    site_id     uuid        NOT NULL,
    event_id    uuid        NOT NULL,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, event_id)
);
-- Rows arrive in first_seen order, so a block range index finds the expired ones for next to nothing.
CREATE INDEX event_ids_first_seen ON analytics.event_ids USING brin (first_seen);

-- Events stored before this table existed keep their claims for the window.
INSERT INTO analytics.event_ids (site_id, event_id, first_seen)
SELECT site_id, event_id, min(received_at)
  FROM analytics.events
 WHERE received_at > now() - INTERVAL '8 days' AND time > now() - INTERVAL '1 year'
 GROUP BY site_id, event_id
ON CONFLICT DO NOTHING;

COMMENT ON TABLE analytics.event_ids IS
    'Processor-internal: the event ids claimed in the last 8 days or more, one row per (site, id).';
