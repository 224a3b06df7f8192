"""Sites' own traffic-alert rules: validation of SetAlertRule and their rows in query.alert_rules."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

from psycopg import AsyncConnection, sql

from analytics.v1 import live_pb2
from analytics_grpc.errors import FieldViolation, ServiceError
from query_service.live.alerts import ALERT_RULES, SiteRule, site_rule
from query_service.request import shown

MAX_THRESHOLD = 1_000_000_000
MAX_SPIKE_FACTOR = 1000.0
MAX_COOLDOWN_S = 86_400
MAX_URL_LENGTH = 2048

_COLUMNS = sql.SQL(
    "visitors_per_minute, events_per_minute, spike_factor, min_events, cooldown_seconds, enabled, "
    "webhook_url, updated_at"
)


def _webhook_problem(url: str) -> str | None:
    if len(url) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters, got {len(url)}"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "must not hold spaces or control characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - parsing the port is what rejects a bad one
    except ValueError as error:
        return f"is not a valid URL ({error})"
    if parts.scheme not in ("http", "https"):
        return f"must be an http or https URL, got the scheme {shown(parts.scheme, 20)}"
    if not host:
        return "must name a host"
    return None


def parse_rule(request: live_pb2.SetAlertRuleRequest) -> SiteRule:
    """The site's own rule from the request, every bad field named (INVALID_ARGUMENT)."""
    violations: list[FieldViolation] = []
    for name in ("visitors_per_minute", "events_per_minute", "min_events"):
        value = getattr(request, name)
        if request.HasField(name) and not 1 <= value <= MAX_THRESHOLD:
            violations.append(FieldViolation(name, f"must be between 1 and {MAX_THRESHOLD}, got {value}"))
    factor = request.spike_factor
    if request.HasField("spike_factor") and not (math.isfinite(factor) and 0 <= factor <= MAX_SPIKE_FACTOR):
        violations.append(
            FieldViolation("spike_factor", f"must be between 0 and {MAX_SPIKE_FACTOR:g}, got {factor}")
        )
    if request.HasField("cooldown_seconds") and request.cooldown_seconds > MAX_COOLDOWN_S:
        violations.append(
            FieldViolation(
                "cooldown_seconds", f"must be between 0 and {MAX_COOLDOWN_S}, got {request.cooldown_seconds}"
            )
        )
    url = request.webhook_url
    problem = _webhook_problem(url) if url else None
    if problem is not None:
        violations.append(FieldViolation("webhook_url", problem))
    if violations:
        raise ServiceError.invalid(violations)

    def given(name: str) -> Any:
        return getattr(request, name) if request.HasField(name) else None

    return SiteRule(
        visitors_per_minute=given("visitors_per_minute"),
        events_per_minute=given("events_per_minute"),
        spike_factor=given("spike_factor"),
        min_events=given("min_events"),
        cooldown_seconds=given("cooldown_seconds"),
        enabled=request.enabled if request.HasField("enabled") else True,
        webhook_url=url or None,
    )


async def get_rule(conn: AsyncConnection[Any], site_id: str) -> SiteRule | None:
    """The site's own rule, None when it has none."""
    cur = await conn.execute(
        sql.SQL("SELECT {} FROM {} WHERE site_id = %s").format(_COLUMNS, ALERT_RULES), (site_id,)
    )
    row = await cur.fetchone()
    return site_rule(row) if row is not None else None


async def set_rule(conn: AsyncConnection[Any], site_id: str, rule: SiteRule) -> SiteRule:
    """Replaces (or creates) the site's own rule; returns it as stored."""
    cur = await conn.execute(
        sql.SQL(
            "INSERT INTO {rules} (site_id, visitors_per_minute, events_per_minute, spike_factor, "
            "min_events, cooldown_seconds, enabled, webhook_url, updated_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now()) "
            "ON CONFLICT (site_id) DO UPDATE SET visitors_per_minute = EXCLUDED.visitors_per_minute, "
            "events_per_minute = EXCLUDED.events_per_minute, spike_factor = EXCLUDED.spike_factor, "
            "min_events = EXCLUDED.min_events, cooldown_seconds = EXCLUDED.cooldown_seconds, "
            "enabled = EXCLUDED.enabled, webhook_url = EXCLUDED.webhook_url, updated_at = now() "
            "RETURNING {columns}"
        ).format(rules=ALERT_RULES, columns=_COLUMNS),
        (
            site_id,
            rule.visitors_per_minute,
            rule.events_per_minute,
            rule.spike_factor,
            rule.min_events,
            rule.cooldown_seconds,
            rule.enabled,
            rule.webhook_url,
        ),
    )
    row = await cur.fetchone()
    assert row is not None  # INSERT … RETURNING answers one row
    return site_rule(row)


async def delete_rule(conn: AsyncConnection[Any], site_id: str) -> bool:
    """Removes the site's own rule; whether it had one."""
    cur = await conn.execute(sql.SQL("DELETE FROM {} WHERE site_id = %s").format(ALERT_RULES), (site_id,))
    return cur.rowcount > 0
