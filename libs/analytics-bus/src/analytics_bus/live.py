"""Live-update subjects: core NATS (no JetStream), one subject per site."""

from __future__ import annotations

LIVE_PREFIX = "analytics.live"


def live_subject(site_id: str) -> str:
    """Subject of the site's live updates (the site id as a canonical UUID string)."""
    return f"{LIVE_PREFIX}.{site_id}"
