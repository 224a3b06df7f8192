-- Per-key ingestion limits and browser origins (0 / empty = server defaults / any origin).
ALTER TABLE auth.api_keys
    ADD COLUMN rate_limit_per_second integer NOT NULL DEFAULT 0 CHECK (rate_limit_per_second >= 0),
    ADD COLUMN rate_limit_burst      integer NOT NULL DEFAULT 0 CHECK (rate_limit_burst >= 0),
    ADD COLUMN allowed_origins       text[]  NOT NULL DEFAULT '{}';

-- Secret salts for cookieless visitor ids, one per UTC day. Salts older than yesterday are
-- deleted, after which no visitor id can be linked back to an address.
CREATE TABLE auth.visitor_salts (
    day        date PRIMARY KEY,
    salt       bytea NOT NULL CHECK (length(salt) = 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
