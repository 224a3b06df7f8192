-- Deleted sites: the site row goes (its keys and identity secret with it, ON DELETE CASCADE); its
-- id stays here, so asking again to delete it answers as deleted and tells the data owners again
-- (analytics_bus.sites) instead of "not found".
CREATE TABLE auth.deleted_sites (
    site_id     uuid PRIMARY KEY,
    deleted_at  timestamptz NOT NULL DEFAULT now()
);
