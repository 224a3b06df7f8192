-- One secret per site keying the visitor ids of identified visitors (events with a user_id).
-- Unlike the daily salts it never rotates, so a signed-in person keeps one visitor id across days;
-- anonymous visitors keep their daily ids. Made with the site, or on first use for sites older
-- than this table. Only internal services may read it (GetIdentitySecret); it is never logged.
CREATE TABLE auth.identity_secrets (
    site_id    uuid PRIMARY KEY REFERENCES auth.sites (site_id) ON DELETE CASCADE,
    secret     bytea NOT NULL CHECK (length(secret) = 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
