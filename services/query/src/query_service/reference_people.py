"""The people reports recomputed in plain Python from raw event rows, as reference.py does for
Query: the session list, a person's timeline, page flows and the exported events. Visits and
filters are reference.py's own, so both references agree on what a visit is and what passes."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from query_service.reference import EventRow, Visit, matches, visits_of
from query_service.reports.sessions import ATTRIBUTES, SessionRow
from query_service.spec import StatsQuery, TimeRange


def chosen_visits(query: StatsQuery, rows: list[EventRow]) -> list[Visit]:
    """Visits starting in the range that pass the filter through one of their events in it."""
    span = query.range
    return [
        visit
        for visit in visits_of(rows)
        if span.start <= visit.started_at < span.end
        and (
            query.filter is None
            or any(matches(query.filter, e, visit) for e in visit.events if e.time < span.end)
        )
    ]


def sessions(query: StatsQuery, rows: list[EventRow]) -> tuple[list[SessionRow], int]:
    """The page of visits, most recent first (ties by visitor id), and how many there are."""
    by_visitor = sorted(chosen_visits(query, rows), key=lambda v: v.events[0].visitor_id)
    visits = sorted(by_visitor, key=lambda v: v.started_at, reverse=True)  # stable: ties by visitor
    page = visits[query.offset : query.offset + query.limit]
    out = []
    for visit in page:
        head = visit.events[0]
        pages = [e.path for e in visit.events if e.kind == 1]
        out.append(
            SessionRow(
                session_id=str(head.event_id),
                visitor_id=head.visitor_id,
                user_id=head.user_id or "",
                started_at=visit.started_at,
                ended_at=visit.ended_at,
                pageviews=visit.pageviews,
                events=len(visit.events),
                bounce=visit.is_bounce,
                entry_page=visit.attribute("visit:entry_page"),
                exit_page=visit.attribute("visit:exit_page"),
                pages=pages,
                attributes=tuple(visit.attribute(name) for name in ATTRIBUTES),
            )
        )
    return out, len(visits)


def timeline(
    user_id: str, span: TimeRange, rows: list[EventRow], limit: int, offset: int
) -> tuple[list[tuple[str, datetime, datetime, list[str]]], int]:
    """(session id, start, end, event ids in the range) of the person's visits, oldest first."""
    found = []
    for visit in visits_of(rows):
        mine = [e for e in visit.events if e.user_id == user_id and span.start <= e.time < span.end]
        if mine:
            found.append((visit, mine))
    found.sort(key=lambda item: (item[0].started_at, item[0].events[0].visitor_id))
    return [
        (str(visit.events[0].event_id), visit.started_at, visit.ended_at, [str(e.event_id) for e in mine])
        for visit, mine in found[offset : offset + limit]
    ], len(found)


def flows(
    query: StatsQuery, rows: list[EventRow], page: str, direction: str, *, steps: int, limit: int
) -> tuple[int, int, list[tuple[tuple[str, ...], int, int]]]:
    """(views of the page, visits with one, [(path, views, visits)] ranked and cut to the limit)."""
    views: Counter[tuple[str, ...]] = Counter()
    visits_with: dict[tuple[str, ...], set[int]] = {}
    total_views = 0
    reached: set[int] = set()
    for index, visit in enumerate(chosen_visits(query, rows)):
        pages = [e.path for e in visit.events if e.kind == 1]
        for at, path in enumerate(pages):
            if path != page:
                continue
            if direction == "next":
                taken = tuple(pages[at + 1 : at + 1 + steps])
            else:
                taken = tuple(reversed(pages[max(0, at - steps) : at]))
            total_views += 1
            reached.add(index)
            views[taken] += 1
            visits_with.setdefault(taken, set()).add(index)
    ranked = sorted(
        ((path, n, len(visits_with[path])) for path, n in views.items()),
        key=lambda item: (-item[1], -item[2], [p.encode() for p in item[0]]),
    )
    return total_views, len(reached), ranked[:limit]


def exported(query: StatsQuery, rows: list[EventRow]) -> list[EventRow]:
    """The events Query counts under the filter, oldest first (ties by id)."""
    visit_of = {e.event_id: v for v in visits_of(rows) for e in v.events}
    span = query.range
    return sorted(
        (
            e
            for e in rows
            if not e.is_bot
            and e.visitor_id != 0
            and span.start <= e.time < span.end
            and (query.filter is None or matches(query.filter, e, visit_of[e.event_id]))
        ),
        key=lambda e: (e.time, e.event_id),
    )
