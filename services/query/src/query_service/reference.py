"""The reference implementation: every Query answer recomputed in plain Python from raw event rows.

It sessionizes events as the processor defines sessions (per visitor, non-bot events ordered by
time and event id, a new visit after a gap of more than 30 minutes) and applies the semantics the
README documents, by brute force and without SQL, so differential tests can hold the SQL report
and the rollups that may replace it to exactly these answers. Regular expressions are evaluated
with Python's re: tests give it patterns that PostgreSQL reads the same way.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from query_service.spec import (
    GOAL,
    PROPS_PREFIX,
    VISIT_METRICS,
    AllOf,
    AnyOf,
    Condition,
    Filter,
    Goal,
    Negation,
    StatsQuery,
    TimeRange,
    is_event_dimension,
    is_time_dimension,
)

SESSION_GAP = timedelta(minutes=30)
_HOST = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?([^/?#:]*)")


@dataclass(frozen=True)
class EventRow:
    """One stored event, as analytics.events holds it."""

    time: datetime
    event_id: uuid.UUID
    visitor_id: int
    kind: int = 1  # 1 page view, 2 custom event
    name: str = "pageview"
    path: str = "/"
    url: str = ""
    referrer: str = ""
    referrer_host: str = ""
    referrer_source: str = "direct"
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    utm_content: str = ""
    utm_term: str = ""
    country: str = ""
    browser: str = ""
    os: str = ""
    device: str = ""
    is_bot: bool = False
    properties: dict[str, str] = field(default_factory=dict)
    user_id: str | None = None


@dataclass
class Visit:
    events: list[EventRow]

    @property
    def started_at(self) -> datetime:
        return self.events[0].time

    @property
    def ended_at(self) -> datetime:
        return self.events[-1].time

    @property
    def pageviews(self) -> int:
        return sum(1 for e in self.events if e.kind == 1)

    @property
    def is_bounce(self) -> bool:
        return len(self.events) == 1 and self.events[0].kind == 1

    def attribute(self, dimension: str) -> str:
        head = self.events[0]
        pages = [e.path for e in self.events if e.kind == 1]
        values = {
            "visit:entry_page": pages[0] if pages else "",
            "visit:exit_page": pages[-1] if pages else "",
            "visit:source": head.utm_source or head.referrer_host,
            "visit:referrer": head.referrer,
            "visit:channel": head.referrer_source,
            "visit:utm_source": head.utm_source,
            "visit:utm_medium": head.utm_medium,
            "visit:utm_campaign": head.utm_campaign,
            "visit:utm_content": head.utm_content,
            "visit:utm_term": head.utm_term,
            "visit:device": head.device,
            "visit:browser": head.browser,
            "visit:os": head.os,
            "visit:country": head.country,
        }
        return values[dimension]


def visits_of(rows: Iterable[EventRow]) -> list[Visit]:
    """Every visit, from scratch."""
    by_visitor: dict[int, list[EventRow]] = {}
    for row in rows:
        if row.visitor_id != 0 and not row.is_bot:
            by_visitor.setdefault(row.visitor_id, []).append(row)
    found: list[Visit] = []
    for events in by_visitor.values():
        events.sort(key=lambda e: (e.time, e.event_id))
        current = [events[0]]
        for event in events[1:]:
            if event.time - current[-1].time > SESSION_GAP:
                found.append(Visit(current))
                current = []
            current.append(event)
        found.append(Visit(current))
    return found


def event_attribute(event: EventRow, dimension: str) -> str:
    if dimension == "event:page":
        return event.path
    if dimension == "event:name":
        return event.name
    if dimension == "event:hostname":
        match = _HOST.match(event.url)
        return match.group(1).lower() if match else ""
    return event.properties.get(dimension.removeprefix(PROPS_PREFIX), "")


def _value(dimension: str, event: EventRow | None, visit: Visit) -> str:
    if is_event_dimension(dimension):
        assert event is not None
        return event_attribute(event, dimension)
    return visit.attribute(dimension)


def glob_matches(pattern: str, path: str) -> bool:
    """A page path pattern by backtracking: ``**`` any characters, ``*`` any but ``/``."""
    if not pattern:
        return not path
    if pattern.startswith("**"):
        return any(glob_matches(pattern[2:], path[i:]) for i in range(len(path) + 1))
    if pattern[0] == "*":
        stop = path.find("/")
        limit = len(path) if stop < 0 else stop
        return any(glob_matches(pattern[1:], path[i:]) for i in range(limit + 1))
    return bool(path) and path[0] == pattern[0] and glob_matches(pattern[1:], path[1:])


def completed_goals(event: EventRow, goals: tuple[Goal, ...]) -> list[str]:
    """Names of the goals the event completes: custom events by name, page views by pattern."""
    return [
        goal.name
        for goal in goals
        if (goal.event_name and event.kind == 2 and event.name == goal.event_name)
        or (goal.page_path and event.kind == 1 and glob_matches(goal.page_path, event.path))
    ]


def matches(node: Filter, event: EventRow, visit: Visit, goals: tuple[Goal, ...] = ()) -> bool:
    if isinstance(node, Condition):
        if node.dimension == GOAL:
            done = completed_goals(event, goals)
            if node.operator in ("is", "is_not"):
                hit = any(name in node.values for name in done)
            else:
                hit = any(v in name for name in done for v in node.values)
            return not hit if node.operator.endswith("_not") else hit
        value = _value(node.dimension, event, visit)
        if node.operator in ("is", "is_not"):
            hit = value in node.values
        elif node.operator in ("contains", "contains_not"):
            hit = any(v in value for v in node.values)
        else:
            hit = any(re.search(v, value) for v in node.values)
        return not hit if node.operator.endswith("_not") else hit
    if isinstance(node, Negation):
        return not matches(node.filter, event, visit, goals)
    if isinstance(node, AllOf):
        return all(matches(child, event, visit, goals) for child in node.filters)
    assert isinstance(node, AnyOf)
    return any(matches(child, event, visit, goals) for child in node.filters)


def _local(at: datetime, zone: ZoneInfo) -> datetime:
    return at.astimezone(zone).replace(tzinfo=None)


def bucket_label(at: datetime, zone: ZoneInfo, bucket: str) -> str:
    here = _local(at, zone)
    if bucket == "hour":
        return f"{here:%Y-%m-%d %H}:00:00"
    day = here.date()
    if bucket == "week":
        day -= timedelta(days=day.weekday())
    elif bucket == "month":
        day = day.replace(day=1)
    return day.isoformat()


def all_labels(span: TimeRange, zone: ZoneInfo, bucket: str) -> list[str]:
    """By brute force: the label of every minute of the range (every hour for day buckets and up)."""
    step = timedelta(minutes=1) if bucket == "hour" else timedelta(hours=1)
    found: set[str] = set()
    at = span.start
    while at < span.end:
        found.add(bucket_label(at, zone, bucket))
        at += step
    found.add(bucket_label(span.end - timedelta(microseconds=1), zone, bucket))
    return sorted(found)


@dataclass
class _Acc:
    visitors: set[int] = field(default_factory=set)
    pageviews: int = 0
    events: int = 0
    visit_keys: set[tuple[int, datetime]] = field(default_factory=set)
    visits: int = 0
    bounces: int = 0
    visit_pageviews: int = 0
    duration: Fraction = Fraction(0)


def _round(value: Fraction, places: int = 0) -> float:
    scaled = value * 10**places
    whole = math.floor(abs(scaled) + Fraction(1, 2))
    return (whole if scaled >= 0 else -whole) / 10**places if whole else 0.0


def _exact(metric: str, acc: _Acc, total: int, base: int = 0) -> Fraction:
    visits = acc.visits or len(acc.visit_keys)
    if metric == "conversion_rate":
        return Fraction(100 * len(acc.visitors), base) if base else Fraction(0)
    if metric == "visitors":
        return Fraction(len(acc.visitors))
    if metric in ("pageviews", "events"):
        return Fraction(getattr(acc, metric))
    if metric == "visits":
        return Fraction(visits)
    if metric == "percentage":
        return Fraction(100 * len(acc.visitors), total) if total else Fraction(0)
    if not visits:
        return Fraction(0)
    if metric == "bounce_rate":
        return Fraction(100 * acc.bounces, visits)
    if metric == "visit_duration":
        return acc.duration / visits
    return Fraction(acc.visit_pageviews, visits)


def _shown(metric: str, exact: Fraction) -> float:
    return _round(exact, 2 if metric in ("views_per_visit", "percentage", "conversion_rate") else 0)


@dataclass(frozen=True)
class RefRow:
    dimensions: tuple[str, ...]
    metrics: list[float]
    comparison: tuple[tuple[str, ...], list[float], list[float | None]] | None = None


@dataclass(frozen=True)
class RefAnswer:
    rows: list[RefRow]
    total_rows: int
    time_labels: list[str] | None


def _groups(
    query: StatsQuery, span: TimeRange, rows: list[EventRow], visits: list[Visit]
) -> tuple[dict[tuple[str, ...], _Acc], int]:
    zone = ZoneInfo(query.timezone)
    visit_of: dict[uuid.UUID, Visit] = {e.event_id: v for v in visits for e in v.events}
    metrics = set(query.metrics)
    event_dims = any(is_event_dimension(d) for d in query.dimensions)
    event_side = bool(metrics & {"visitors", "pageviews", "events", "percentage", "conversion_rate"}) or (
        event_dims and bool(metrics & set(VISIT_METRICS))
    )
    visit_side = bool(metrics & set(VISIT_METRICS)) and not event_dims

    def keys(event: EventRow | None, visit: Visit, at: datetime) -> list[tuple[str, ...]]:
        """The groups a row falls in: one, or one per goal an event completes (event:goal)."""
        found: list[tuple[str, ...]] = [()]
        for name in query.dimensions:
            if is_time_dimension(name):
                assert query.bucket is not None
                options = [bucket_label(at, zone, query.bucket)]
            elif name == GOAL:
                assert event is not None
                options = completed_goals(event, query.goals)
            else:
                options = [_value(name, event, visit)]
            found = [(*prefix, option) for prefix in found for option in options]
        return found

    groups: dict[tuple[str, ...], _Acc] = {}
    counted = [
        e
        for e in rows
        if not e.is_bot
        and e.visitor_id != 0
        and span.start <= e.time < span.end
        and (query.filter is None or matches(query.filter, e, visit_of[e.event_id], query.goals))
    ]
    if event_side:
        for event in counted:
            visit = visit_of[event.event_id]
            for group in keys(event, visit, event.time):
                acc = groups.setdefault(group, _Acc())
                acc.visitors.add(event.visitor_id)
                acc.events += 1
                acc.pageviews += event.kind == 1
                if event_dims and visit.started_at >= span.start:
                    acc.visit_keys.add((event.visitor_id, visit.started_at))
    if visit_side:
        for visit in visits:
            if not span.start <= visit.started_at < span.end:
                continue
            if query.filter is not None and not any(
                matches(query.filter, e, visit, query.goals) for e in visit.events if e.time < span.end
            ):
                continue
            (group,) = keys(None, visit, visit.started_at)
            acc = groups.setdefault(group, _Acc())
            acc.visits += 1
            acc.bounces += visit.is_bounce
            acc.visit_pageviews += visit.pageviews
            acc.duration += Fraction(
                (visit.ended_at - visit.started_at) // timedelta(microseconds=1), 1_000_000
            )
    total = len({e.visitor_id for e in counted})
    return groups, total


def _bases(
    query: StatsQuery, span: TimeRange, rows: list[EventRow], visits: list[Visit]
) -> Callable[[tuple[str, ...]], int]:
    """conversion_rate's divisor per row: visitors of the row's group asked without the goal
    (no event:goal dimension, no top-level event:goal condition)."""
    if "conversion_rate" not in query.metrics:
        return lambda dims: 0
    top = query.filter.filters if isinstance(query.filter, AllOf) else (query.filter,) if query.filter else ()
    kept = tuple(f for f in top if not (isinstance(f, Condition) and f.dimension == GOAL))
    goal_less = StatsQuery(
        site_id=query.site_id,
        timezone=query.timezone,
        range=span,
        metrics=("visitors",),
        dimensions=tuple(d for d in query.dimensions if d != GOAL),
        filter=AllOf(kept) if kept else None,
        order_by=(),
        limit=0,
        offset=0,
        bucket=query.bucket,
        goals=query.goals,
    )
    groups, _ = _groups(goal_less, span, rows, visits)
    found = {dims: len(acc.visitors) for dims, acc in groups.items()}
    return lambda dims: found.get(
        tuple(d for name, d in zip(query.dimensions, dims, strict=True) if name != GOAL), 0
    )


def answer(query: StatsQuery, rows: list[EventRow]) -> RefAnswer:
    """The answer Query must give, rows already cut to the page."""
    zone = ZoneInfo(query.timezone)
    visits = visits_of(rows)
    groups, total = _groups(query, query.range, rows, visits)
    base = _bases(query, query.range, rows, visits)
    labels = all_labels(query.range, zone, query.bucket) if query.time_labels and query.bucket else None
    if labels is not None and len(query.dimensions) == 1:
        for name in labels:
            groups.setdefault((name,), _Acc())
    if not query.dimensions:
        groups.setdefault((), _Acc())  # totals are one row, zeros when nothing matched

    def sort_key(item: tuple[tuple[str, ...], _Acc]) -> list[Any]:
        dims, acc = item
        keys: list[Any] = []
        used: set[str] = set()
        for order in query.order_by:
            if order.field in query.dimensions:
                value: Any = _Desc(dims[query.dimensions.index(order.field)].encode())
                if order.direction == "asc":
                    value = value.value
                used.add(order.field)
            else:
                exact = _exact(order.field, acc, total, base(dims))
                value = -exact if order.direction == "desc" else exact
            keys.append(value)
        keys += [d.encode() for name, d in zip(query.dimensions, dims, strict=True) if name not in used]
        return keys

    ordered = sorted(groups.items(), key=sort_key)
    page = ordered[query.offset : query.offset + query.limit]
    result = [
        RefRow(dims, [_shown(m, _exact(m, acc, total, base(dims))) for m in query.metrics])
        for dims, acc in page
    ]
    if query.comparison is not None:
        result = _compared(query, rows, visits, result)
    return RefAnswer(result, len(ordered), labels)


def _compared(
    query: StatsQuery, rows: list[EventRow], visits: list[Visit], result: list[RefRow]
) -> list[RefRow]:
    assert query.comparison is not None
    zone = ZoneInfo(query.timezone)
    groups, total = _groups(query, query.comparison, rows, visits)
    base_of = _bases(query, query.comparison, rows, visits)
    time_index = next((i for i, d in enumerate(query.dimensions) if is_time_dimension(d)), None)
    main = all_labels(query.range, zone, query.bucket) if query.bucket else []
    other = all_labels(query.comparison, zone, query.bucket) if query.bucket else []
    compared: list[RefRow] = []
    for row in result:
        dims = row.dimensions
        if time_index is not None:
            position = main.index(dims[time_index]) if dims[time_index] in main else -1
            label = other[position] if 0 <= position < len(other) else ""
            dims = (*dims[:time_index], label, *dims[time_index + 1 :])
        acc = groups.get(dims, _Acc()) if (time_index is None or dims[time_index]) else _Acc()
        base = base_of(dims) if (time_index is None or dims[time_index]) else 0
        values = [_shown(m, _exact(m, acc, total, base)) for m in query.metrics]
        changes: list[float | None] = []
        for metric, old, new in zip(query.metrics, values, row.metrics, strict=True):
            if metric == "conversion_rate":
                changes.append(None if not base else _round(Fraction(new) - Fraction(old), 2))
            elif metric == "bounce_rate":
                changes.append(None if not acc.visits else _round(Fraction(new) - Fraction(old)))
            elif old == 0:
                changes.append(100.0 if new > 0 else 0.0)
            else:
                changes.append(_round((Fraction(new) - Fraction(old)) / Fraction(old) * 100))
        compared.append(RefRow(row.dimensions, row.metrics, (dims, values, changes)))
    return compared


@dataclass(frozen=True)
class _Desc:
    """Reverses the order of a byte string inside a sort key."""

    value: bytes

    def __lt__(self, other: _Desc) -> bool:
        return self.value > other.value
