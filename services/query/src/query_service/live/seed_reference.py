"""Seed 000's summary and active sessions recomputed in plain Python from raw event rows."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from query_service.live.seed import ACTIVE_FOR, JOURNEY_PAGES, TOP_PAGES, Today
from query_service.reference import EventRow, Visit, visits_of


def today(rows: list[EventRow], now: datetime, zone: ZoneInfo, *, page: str = "", country: str = "") -> Today:
    start = datetime.combine(now.astimezone(zone).date(), datetime.min.time(), zone)
    counted = [
        row
        for row in rows
        if start <= row.time <= now
        and not row.is_bot
        and (not page or row.path == page)
        and (not country or row.country == country)
    ]
    views: dict[str, int] = {}
    for row in counted:
        if row.kind == 1:
            views[row.path] = views.get(row.path, 0) + 1
    top = sorted(views.items(), key=lambda item: (-item[1], item[0]))[:TOP_PAGES]
    return Today(len(counted), dict(top))


def active_visits(rows: list[EventRow], now: datetime, *, page: str = "", country: str = "") -> list[Visit]:
    """Active visits, most recently active first (ties in any order)."""
    since = now - ACTIVE_FOR
    found = [
        visit
        for visit in visits_of(rows)
        if visit.ended_at > since
        and (not page or visit.attribute("visit:exit_page") == page)
        and (not country or visit.attribute("visit:country") == country)
    ]
    return sorted(found, key=lambda visit: visit.ended_at, reverse=True)


def journey(visit: Visit) -> list[str]:
    return [event.path for event in visit.events if event.kind == 1][-JOURNEY_PAGES:]
