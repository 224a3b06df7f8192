-- Sites and their API keys. Only a SHA-256 digest of each key is stored: keys are 256-bit random
-- secrets, so a fast digest is enough and lookups stay a single index probe.
CREATE TABLE auth.sites (
    site_id     uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE auth.api_keys (
    key_id      text PRIMARY KEY,
    site_id     uuid NOT NULL REFERENCES auth.sites (site_id) ON DELETE CASCADE,
    secret_hash bytea NOT NULL UNIQUE,
    scopes      smallint[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE INDEX api_keys_site_id ON auth.api_keys (site_id);
