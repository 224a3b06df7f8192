-- A site's domain (lower-case host name, unique when set) and the IANA time zone its statistics
-- are read in. The service validates both (the zone against the system's tz database, which
-- PostgreSQL shares on Debian); the checks here only keep impossible values out.
ALTER TABLE auth.sites
    ADD COLUMN domain   text UNIQUE CHECK (domain = lower(domain) AND length(domain) BETWEEN 1 AND 253),
    ADD COLUMN timezone text NOT NULL DEFAULT 'UTC' CHECK (length(timezone) BETWEEN 1 AND 64);
