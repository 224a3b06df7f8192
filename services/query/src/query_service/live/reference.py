"""The realtime report and the traffic alerts recomputed in plain Python from raw event rows, for
differential tests."""

from __future__ import annotations

from datetime import datetime

from analytics.v1 import live_pb2
from query_service.live.alerts import MINUTE, TRAILING, AlertRule, SiteMinute, SiteRule, crossed
from query_service.live.realtime import EVENTS_RATE_WINDOW, Count, Realtime, RealtimeQuery
from query_service.reference import EventRow, visits_of


def _top(groups: dict[str, set[int]], limit: int, pageviews: dict[str, int] | None = None) -> list[Count]:
    views = pageviews or {}
    rows = [Count(value, len(visitors), views.get(value, 0)) for value, visitors in groups.items()]
    rows.sort(key=lambda c: (-c.visitors, -c.pageviews, c.value))
    return rows[:limit]


def realtime(query: RealtimeQuery, rows: list[EventRow]) -> Realtime:
    recent = [
        row
        for row in rows
        if query.start < row.time <= query.now
        and not row.is_bot
        and row.visitor_id != 0
        and (not query.page or row.path == query.page)
        and (not query.country or row.country == query.country)
    ]
    current = {row.visitor_id for row in recent}
    pages: dict[str, set[int]] = {}
    views: dict[str, int] = {}
    for row in recent:
        if row.kind == 1:
            pages.setdefault(row.path, set()).add(row.visitor_id)
            views[row.path] = views.get(row.path, 0) + 1
    sources: dict[str, set[int]] = {}
    countries: dict[str, set[int]] = {}
    for visit in visits_of(rows):
        visitor = visit.events[0].visitor_id
        if visitor in current and visit.started_at <= query.now and visit.ended_at > query.start:
            sources.setdefault(visit.attribute("visit:source"), set()).add(visitor)
            countries.setdefault(visit.attribute("visit:country"), set()).add(visitor)
    minute = query.now - EVENTS_RATE_WINDOW
    return Realtime(
        visitors=len(current),
        pageviews=sum(1 for row in recent if row.kind == 1),
        events=len(recent),
        events_last_minute=sum(1 for row in recent if row.time > minute),
        top_pages=_top(pages, query.limit, views),
        top_sources=_top(sources, query.limit),
        top_countries=_top(countries, query.limit),
    )


def site_minute(
    site_id: str, rows: list[EventRow], now: datetime, own_rule: SiteRule | None = None
) -> SiteMinute | None:
    """What the alert evaluator reads of a site at ``now``, recomputed from its raw rows: None when
    it has no event in the last minute, or no counted (non-bot) event in that minute and the hour
    before it."""
    minute = now - MINUTE
    if not any(minute < row.time <= now for row in rows):
        return None
    counted = [row for row in rows if not row.is_bot and minute - TRAILING < row.time <= now]
    if not counted:
        return None
    last = [row for row in counted if row.time > minute]
    return SiteMinute(
        site_id,
        events=len(last),
        visitors=len({row.visitor_id for row in last if row.visitor_id != 0}),
        trailing_events=len(counted) - len(last),
        own_rule=own_rule,
    )


def alerts(
    sites: dict[str, tuple[list[EventRow], SiteRule | None]], defaults: AlertRule, now: datetime
) -> dict[str, live_pb2.LiveAlert]:
    """The alert each site raises at ``now`` under its own rule (else ``defaults``), no cooldown yet."""
    raised: dict[str, live_pb2.LiveAlert] = {}
    for site_id, (rows, own_rule) in sites.items():
        found = site_minute(site_id, rows, now, own_rule)
        alert = crossed(found.rule(defaults), found) if found is not None else None
        if alert is not None:
            alert.at.FromDatetime(now)
            raised[site_id] = alert
    return raised
