-- A site's own traffic-alert rule (LiveService.SetAlertRule). A NULL field follows the configured
-- default (ANALYTICS_ALERT_*), so changing the configuration changes every rule that left it out;
-- a site without a row has the defaults. Deleting a site deletes its row with the definitions.
CREATE TABLE query.alert_rules (
    site_id             uuid             PRIMARY KEY,
    visitors_per_minute integer          CHECK (visitors_per_minute >= 1),
    events_per_minute   integer          CHECK (events_per_minute >= 1),
    spike_factor        double precision CHECK (spike_factor BETWEEN 0 AND 1000),
    min_events          integer          CHECK (min_events >= 1),
    cooldown_seconds    integer          CHECK (cooldown_seconds BETWEEN 0 AND 86400),
    enabled             boolean          NOT NULL DEFAULT true,
    -- Where the site's alerts are POSTed (http or https); NULL: the configured webhook, if any.
    webhook_url         text             CHECK (length(webhook_url) <= 2048),
    updated_at          timestamptz      NOT NULL DEFAULT now()
);
