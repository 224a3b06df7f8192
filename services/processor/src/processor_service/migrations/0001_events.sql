-- Raw events: one row per accepted event, partitioned by event time in daily chunks.
-- Optional text fields are '' rather than NULL so binary COPY rows need no per-field branching;
-- user_id stays NULL when absent so count(DISTINCT user_id) ignores anonymous events.
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE analytics.events (
    time            timestamptz NOT NULL,
    site_id         uuid        NOT NULL,
    event_id        uuid        NOT NULL,
    received_at     timestamptz NOT NULL,
    kind            smallint    NOT NULL,
    name            text        NOT NULL,
    path            text        NOT NULL,
    url             text        NOT NULL DEFAULT '',
    title           text        NOT NULL DEFAULT '',
    referrer        text        NOT NULL DEFAULT '',
    referrer_host   text        NOT NULL DEFAULT '',
    referrer_source text        NOT NULL DEFAULT '',
    utm_source      text        NOT NULL DEFAULT '',
    utm_medium      text        NOT NULL DEFAULT '',
    utm_campaign    text        NOT NULL DEFAULT '',
    utm_term        text        NOT NULL DEFAULT '',
    utm_content     text        NOT NULL DEFAULT '',
    user_id         text,
    visitor_id      bigint      NOT NULL DEFAULT 0,
    country         text        NOT NULL DEFAULT '',
    browser         text        NOT NULL DEFAULT '',
    os              text        NOT NULL DEFAULT '',
    device          text        NOT NULL DEFAULT '',
    is_bot          boolean     NOT NULL DEFAULT false,
    screen_width    integer     NOT NULL DEFAULT 0,
    screen_height   integer     NOT NULL DEFAULT 0,
    language        text        NOT NULL DEFAULT '',
    properties      jsonb       NOT NULL DEFAULT '{}'
);

SELECT create_hypertable('analytics.events', 'time', chunk_time_interval => INTERVAL '1 day');

-- The idempotency key: a redelivered or re-sent event (same site, id and time) is stored once.
CREATE UNIQUE INDEX events_identity ON analytics.events (site_id, event_id, time);
CREATE INDEX events_site_time ON analytics.events (site_id, time DESC);

COMMENT ON TABLE analytics.events IS
    'Contract: read by the query service. kind 1 = page view, 2 = custom event; is_bot rows are excluded from stats.';
