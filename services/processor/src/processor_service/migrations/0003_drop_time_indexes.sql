-- create_hypertable adds an index on the time column alone. Every reader names a site (the query
-- service, the session look-ups, the retry check), so (site_id, time) and the identity and session
-- keys serve them all, and chunks are found and dropped by their time ranges, not by an index. The
-- time-only indexes would cost one more index insertion per event and per session and serve nothing.
DROP INDEX IF EXISTS analytics.events_time_idx;
DROP INDEX IF EXISTS analytics.sessions_started_at_idx;
