"""Traffic-spike alerts: evaluated once per site across query replicas, delivered on the live
streams and dashboards, logged, counted, and POSTed to a site's webhook in the background.

Every replica runs the evaluator; the one holding a PostgreSQL advisory lock (on a connection of
its own, so a replica that dies hands it on) evaluates every site with traffic in the last minute,
the others wait for the lock. Each site is judged by its own rule (table query.alert_rules, read
in the same query as the traffic), whose missing fields are the configured defaults. An alert is
published once, on the site's live subject with the header ``Analytics-Kind: alert``, so every
replica's subscribers of the site receive it; it is POSTed to the site's own webhook, else to the
one configured for the site (ANALYTICS_ALERT_WEBHOOKS).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import psycopg
import structlog
from google.protobuf import json_format
from nats.aio.client import Client
from psycopg import sql

from analytics.v1 import live_pb2
from analytics_bus import live_subject
from query_service import relations
from query_service.live import metrics

log = structlog.get_logger("analytics.query")

KIND_HEADER = "Analytics-Kind"
ALERT_KIND = "alert"
# pg_advisory_lock key of the alert evaluator (an arbitrary constant: "alerts" in ASCII).
LOCK_KEY = 0x616C65727473
MINUTE = timedelta(minutes=1)
TRAILING = timedelta(hours=1)
# The sites' own rules (query_service/migrations/0002_alert_rules.sql).
ALERT_RULES = sql.Identifier("query", "alert_rules")


@dataclass(frozen=True)
class AlertRule:
    """Per-site spike rule; the defaults come from configuration."""

    # Alert when a minute has at least this many distinct visitors (seed 000's ALERT_THRESHOLD).
    visitors_per_minute: int = 10
    # …or at least this many events (0: no such threshold)…
    events_per_minute: int = 0
    # …or this many times the trailing hour's events per minute (0: off)…
    spike_factor: float = 3.0
    # …when the minute has at least this many events (a quiet site's first events are no spike).
    min_events: int = 20
    # The same site alerts again only after this long.
    cooldown: timedelta = timedelta(minutes=10)
    # False: the site raises no alerts.
    enabled: bool = True


T = TypeVar("T")


def _given(value: T | None, default: T) -> T:
    return default if value is None else value


@dataclass(frozen=True)
class SiteRule:
    """A site's own rule as stored: a field left None follows the configured default."""

    visitors_per_minute: int | None = None
    events_per_minute: int | None = None
    spike_factor: float | None = None
    min_events: int | None = None
    cooldown_seconds: int | None = None
    enabled: bool = True
    # Where the site's alerts are POSTed; None: the configured webhook of the site, if any.
    webhook_url: str | None = None
    updated_at: datetime | None = None

    def over(self, defaults: AlertRule) -> AlertRule:
        """The rule in effect: this one's fields where set, the defaults' elsewhere."""
        return AlertRule(
            visitors_per_minute=_given(self.visitors_per_minute, defaults.visitors_per_minute),
            events_per_minute=_given(self.events_per_minute, defaults.events_per_minute),
            spike_factor=_given(self.spike_factor, defaults.spike_factor),
            min_events=_given(self.min_events, defaults.min_events),
            cooldown=defaults.cooldown
            if self.cooldown_seconds is None
            else timedelta(seconds=self.cooldown_seconds),
            enabled=self.enabled,
        )


@dataclass(frozen=True)
class SiteMinute:
    site_id: str
    events: int
    visitors: int
    trailing_events: int
    # The site's own rule, when it has one.
    own_rule: SiteRule | None = None

    def rule(self, defaults: AlertRule) -> AlertRule:
        return defaults if self.own_rule is None else self.own_rule.over(defaults)

    @property
    def trailing_rate(self) -> float:
        """Events per minute over the hour before the last minute."""
        return self.trailing_events / (TRAILING / MINUTE)


def crossed(rule: AlertRule, minute: SiteMinute) -> live_pb2.LiveAlert | None:
    """The alert the site's last minute raises under the rule, if any."""
    if not rule.enabled:
        return None
    if minute.visitors >= rule.visitors_per_minute:
        return live_pb2.LiveAlert(
            level="warning",
            message="High visitor activity detected!",
            metric="visitors_per_minute",
            value=minute.visitors,
            threshold=rule.visitors_per_minute,
        )
    if rule.events_per_minute and minute.events >= rule.events_per_minute:
        return live_pb2.LiveAlert(
            level="warning",
            message=f"High event volume: {minute.events} events in the last minute",
            metric="events_per_minute",
            value=minute.events,
            threshold=rule.events_per_minute,
        )
    spike = rule.spike_factor * minute.trailing_rate
    if (
        rule.spike_factor > 0
        and minute.events >= rule.min_events
        and minute.trailing_events
        and minute.events > spike
    ):
        return live_pb2.LiveAlert(
            level="warning",
            message=(
                f"Traffic spike: {minute.events} events in the last minute, "
                f"over {rule.spike_factor:g}x the last hour's rate"
            ),
            metric="events_per_minute",
            value=minute.events,
            threshold=spike,
        )
    return None


# The site's own rule comes with its traffic: one query for every site, whatever their number.
_MINUTES = sql.SQL("""
SELECT m.site_id::text, m.events, m.visitors, m.trailing, r.site_id IS NOT NULL,
       r.visitors_per_minute, r.events_per_minute, r.spike_factor, r.min_events, r.cooldown_seconds,
       r.enabled, r.webhook_url, r.updated_at
FROM (
    SELECT site_id,
           count(*) FILTER (WHERE time > %(minute)s) AS events,
           count(DISTINCT visitor_id) FILTER (WHERE time > %(minute)s AND visitor_id <> 0) AS visitors,
           count(*) FILTER (WHERE time <= %(minute)s) AS trailing
    FROM {events}
    WHERE time > %(start)s AND time <= %(now)s AND NOT is_bot
      AND site_id IN (SELECT DISTINCT site_id FROM {events} WHERE time > %(minute)s AND time <= %(now)s)
    GROUP BY site_id
) m
LEFT JOIN {rules} r ON r.site_id = m.site_id
""").format(events=relations.EVENTS, rules=ALERT_RULES)


def site_rule(row: tuple[Any, ...]) -> SiteRule:
    """A SiteRule from the columns visitors_per_minute … updated_at of query.alert_rules."""
    visitors, events, spike, min_events, cooldown, enabled, webhook_url, updated_at = row
    return SiteRule(
        visitors_per_minute=visitors,
        events_per_minute=events,
        spike_factor=spike,
        min_events=min_events,
        cooldown_seconds=cooldown,
        enabled=bool(enabled),
        webhook_url=webhook_url,
        updated_at=updated_at,
    )


async def site_minutes(conn: psycopg.AsyncConnection[Any], now: datetime) -> list[SiteMinute]:
    """Each site with events in the minute before ``now``: that minute, the hour before it, and
    the site's own rule if it has one."""
    cur = await conn.execute(_MINUTES, {"now": now, "minute": now - MINUTE, "start": now - MINUTE - TRAILING})
    return [
        SiteMinute(site, int(e), int(v), int(t), site_rule(rule) if has_rule else None)
        for site, e, v, t, has_rule, *rule in await cur.fetchall()
    ]


def webhook_host(url: str) -> str:
    """What may be logged or answered of a webhook URL: its host (the rest may hold a secret)."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


class Webhooks:
    """POSTs alerts as JSON, retried with exponential backoff, in background tasks (bounded).

    ``urls`` are the configured webhooks by site; a site's own URL, passed to ``send``, wins."""

    def __init__(
        self, urls: Mapping[str, str], *, attempts: int = 5, backoff_s: float = 1.0, max_pending: int = 100
    ) -> None:
        self._urls = dict(urls)
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._max_pending = max_pending
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.delivered = 0
        self.failed = 0

    def url(self, site_id: str, own: str | None = None) -> str | None:
        """The URL a site's alerts go to: its own, else the configured one, else none."""
        return own or self._urls.get(site_id)

    def send(self, site_id: str, alert: live_pb2.LiveAlert, own_url: str | None = None) -> None:
        url = self.url(site_id, own_url)
        if url is None:
            return
        if len(self._tasks) >= self._max_pending:
            self.failed += 1
            metrics.WEBHOOKS.labels("failed").inc()
            log.warning("alert webhook skipped: too many deliveries pending", site_id=site_id)
            return
        body = {"site_id": site_id, **json_format.MessageToDict(alert, preserving_proto_field_name=True)}
        task = asyncio.create_task(self._deliver(site_id, url, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, site_id: str, url: str, body: dict[str, Any]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        for attempt in range(1, self._attempts + 1):
            try:
                async with self._session.post(url, json=body) as response:
                    if response.status < 300:
                        self.delivered += 1
                        metrics.WEBHOOKS.labels("delivered").inc()
                        return
                    reason = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as error:
                reason = type(error).__name__
            # The URL is the site's secret as much as its address: only its host is logged.
            log.warning(
                "alert webhook failed",
                site_id=site_id,
                host=webhook_host(url),
                attempt=attempt,
                reason=reason,
            )
            if attempt < self._attempts:
                await asyncio.sleep(self._backoff_s * 2 ** (attempt - 1))
        self.failed += 1
        metrics.WEBHOOKS.labels("failed").inc()

    async def flush(self) -> None:
        """Waits for the deliveries under way (tests, shutdown of a caller that wants them)."""
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


class AlertEvaluator:
    def __init__(
        self,
        conninfo: str,
        nc: Client,
        rule: AlertRule,
        webhooks: Webhooks,
        *,
        interval_s: float = 60.0,
    ) -> None:
        self._conninfo = conninfo
        self._nc = nc
        self._rule = rule
        self._webhooks = webhooks
        self._interval_s = interval_s
        self._last: dict[str, datetime] = {}
        self.raised = 0

    async def evaluate(
        self, conn: psycopg.AsyncConnection[Any], now: datetime
    ) -> list[tuple[str, live_pb2.LiveAlert]]:
        """One round over every site with traffic, each under its own rule (else the defaults);
        publishes and returns the alerts raised."""
        raised: list[tuple[str, live_pb2.LiveAlert]] = []
        for minute in await site_minutes(conn, now):
            rule = minute.rule(self._rule)
            alert = crossed(rule, minute)
            last = self._last.get(minute.site_id)
            if alert is None or (last is not None and now - last < rule.cooldown):
                continue
            self._last[minute.site_id] = now
            alert.at.FromDatetime(now)
            self.raised += 1
            metrics.ALERTS.inc()
            log.warning(
                "traffic alert",
                site_id=minute.site_id,
                metric=alert.metric,
                value=alert.value,
                threshold=alert.threshold,
                alerts=self.raised,
            )
            await self._nc.publish(
                live_subject(minute.site_id), alert.SerializeToString(), headers={KIND_HEADER: ALERT_KIND}
            )
            own_url = minute.own_rule.webhook_url if minute.own_rule is not None else None
            self._webhooks.send(minute.site_id, alert, own_url)
            raised.append((minute.site_id, alert))
        return raised

    async def run(self) -> None:
        """For the service's life: take the lock (waiting while another replica holds it), then
        evaluate at every interval while holding it; a lost connection starts over."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                    while True:
                        if await self._locked(conn):
                            break
                        await asyncio.sleep(self._interval_s)
                    log.info("evaluating traffic alerts for every site on this replica")
                    while True:
                        await self.evaluate(conn, datetime.now(UTC))
                        await asyncio.sleep(self._interval_s)
            except (psycopg.Error, OSError) as error:
                log.warning("alert evaluation interrupted", error=str(error) or type(error).__name__)
                await asyncio.sleep(self._interval_s)

    @staticmethod
    async def _locked(conn: psycopg.AsyncConnection[Any]) -> bool:
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
        row = await cur.fetchone()
        return bool(row and row[0])


def parse_webhooks(entries: tuple[str, ...]) -> dict[str, str]:
    """``site_id=url`` entries (ANALYTICS_ALERT_WEBHOOKS) as a mapping; raises ValueError."""
    urls: dict[str, str] = {}
    for entry in entries:
        site_id, sep, url = entry.partition("=")
        if not sep or not url.startswith(("http://", "https://")):
            raise ValueError(f"expected site_id=http(s)://…, got an entry for {site_id.strip()!r}")
        urls[site_id.strip()] = url.strip()
    return urls


async def stop(task: asyncio.Task[None], webhooks: Webhooks) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await webhooks.close()
