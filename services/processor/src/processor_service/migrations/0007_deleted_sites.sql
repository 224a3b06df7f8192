-- Sites auth deleted (analytics_bus.sites): the processor deletes every row of the site in this
-- schema when told, records the site here, and deletes again whatever of it still arrives (events
-- that were queued in JetStream at the time) on its sweeps, for as long as the events stream keeps
-- messages (processor_service.site_data.SWEEP_FOR).
CREATE TABLE analytics.deleted_sites (
    site_id     uuid        PRIMARY KEY,
    deleted_at  timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE analytics.deleted_sites IS
    'Processor-internal: sites whose data was deleted, swept again for late arrivals.';
