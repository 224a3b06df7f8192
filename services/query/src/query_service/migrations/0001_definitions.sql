-- The query service's own definitions: goals and funnels of a site. Every row carries its site_id
-- and is found by it (primary key site_id first), so deleting a site deletes its definitions with
-- DELETE FROM query.goals WHERE site_id = $1 (and the same for query.funnels).
CREATE TABLE query.goals (
    site_id      uuid        NOT NULL,
    goal_id      uuid        NOT NULL,
    event_name   text        NOT NULL DEFAULT '',
    page_path    text        NOT NULL DEFAULT '',
    display_name text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, goal_id),
    UNIQUE (site_id, display_name),
    CHECK ((event_name = '') <> (page_path = ''))
);

CREATE TABLE query.funnels (
    site_id        uuid        NOT NULL,
    funnel_id      uuid        NOT NULL,
    name           text        NOT NULL,
    -- [{"event_name": …, "page_path": …, "filters": {…}}, …], validated by the service.
    steps          jsonb       NOT NULL,
    window_seconds integer     NOT NULL CHECK (window_seconds > 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, funnel_id)
);
