"""Reference implementations of the funnel and retention reports, by brute force over raw event
rows in plain Python (no SQL, no shared sequence code), for differential tests.

Funnel: of every increasing choice of a person's counted events, one per step in step order with
the last within the window of the first and each within its step's own window (if it has one) of
the one before, the longest is the person's attempt (the first in lexicographic order of event
positions among the longest). Retention: each person's first cohort
event in the range puts them in the cohort of its local period; a return is any counted return
event in a later (or the same) period.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

from query_service.product.definitions import Step
from query_service.product.retention import Period, period_start, shifted
from query_service.reference import EventRow, Visit, glob_matches, matches, visits_of
from query_service.spec import StatsQuery


@dataclass(frozen=True)
class RefStep:
    entered: int
    converted: int
    conversion_rate: float
    conversion_rate_from_start: float
    drop_off: int
    drop_off_rate: float
    median_seconds_to_convert: float


def _round2(value: Fraction) -> float:
    scaled = abs(value) * 100
    whole = int(scaled) + (1 if scaled - int(scaled) >= Fraction(1, 2) else 0)
    return (whole if value >= 0 else -whole) / 100 if whole else 0.0


def _pct(part: int, whole: int) -> float:
    return _round2(Fraction(100 * part, whole)) if whole else 0.0


def counted(
    query: StatsQuery, rows: list[EventRow], *, anytime: bool = False
) -> tuple[list[EventRow], dict[object, Visit]]:
    """The events the stats query would count (range unless ``anytime``, filter), with each
    event's visit."""
    visit_of: dict[object, Visit] = {e.event_id: v for v in visits_of(rows) for e in v.events}
    kept = [
        e
        for e in rows
        if not e.is_bot
        and e.visitor_id != 0
        and (anytime or query.range.start <= e.time < query.range.end)
        and (query.filter is None or matches(query.filter, e, visit_of[e.event_id], query.goals))
    ]
    return kept, visit_of


def step_matches(step: Step, event: EventRow) -> bool:
    if step.event_name:
        hit = event.name == step.event_name
    else:
        hit = event.kind == 1 and glob_matches(step.page_path, event.path)
    return hit and all(event.properties.get(key, "") == value for key, value in step.filters)


def _in_step_windows(choice: Sequence[EventRow], steps: Sequence[Step]) -> bool:
    return all(
        step.time_window_seconds is None
        or later.time - earlier.time <= timedelta(seconds=step.time_window_seconds)
        for step, earlier, later in zip(steps[1:], choice, choice[1:], strict=False)
    )


def person_attempt(events: list[EventRow], steps: Sequence[Step], window: timedelta) -> tuple[EventRow, ...]:
    """A person's attempt from their events in (time, event id) order."""
    for depth in range(len(steps), 0, -1):
        for choice in itertools.combinations(events, depth):
            if (
                choice[-1].time - choice[0].time <= window
                and all(step_matches(step, event) for step, event in zip(steps, choice, strict=False))
                and _in_step_windows(choice, steps)
            ):
                return choice
    return ()


def _steps(attempts: list[tuple[EventRow, ...]], count: int) -> list[RefStep]:
    reached = [sum(1 for a in attempts if len(a) > depth) for depth in range(count)]
    out: list[RefStep] = []
    for depth in range(count):
        waits = [
            Fraction((a[depth].time - a[depth - 1].time) // timedelta(microseconds=1), 1_000_000)
            for a in attempts
            if depth and len(a) > depth
        ]
        entered = reached[depth - 1] if depth else reached[0]
        converted = reached[depth]
        out.append(
            RefStep(
                entered=entered,
                converted=converted,
                conversion_rate=_pct(converted, entered),
                conversion_rate_from_start=_pct(converted, reached[0]),
                drop_off=entered - converted,
                drop_off_rate=_pct(entered - converted, entered),
                median_seconds_to_convert=float(statistics.median(waits)) if waits else 0.0,
            )
        )
    return out


def funnel(
    query: StatsQuery, steps: Sequence[Step], window_seconds: int, rows: list[EventRow]
) -> tuple[list[RefStep], list[tuple[str, list[RefStep]]]]:
    kept, visit_of = counted(query, rows)
    people: dict[int, list[EventRow]] = {}
    for event in kept:
        people.setdefault(event.visitor_id, []).append(event)
    attempts: list[tuple[EventRow, ...]] = []
    for events in people.values():
        events.sort(key=lambda e: (e.time, e.event_id))
        found = person_attempt(events, steps, timedelta(seconds=window_seconds))
        if found:
            attempts.append(found)
    groups: dict[str, list[tuple[EventRow, ...]]] = {}
    if query.dimensions:
        for attempt in attempts:
            value = visit_of[attempt[0].event_id].attribute(query.dimensions[0])
            groups.setdefault(value, []).append(attempt)
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0].encode()))
    return _steps(attempts, len(steps)), [
        (value, _steps(group, len(steps))) for value, group in ordered[:100]
    ]


@dataclass(frozen=True)
class RefCohort:
    date: str
    size: int
    returned: list[int]
    percentages: list[float]
    dates: list[str]


def retention(
    query: StatsQuery,
    *,
    period: Period,
    periods: int,
    cohort_event: str,
    return_event: str,
    rows: list[EventRow],
) -> list[RefCohort]:
    """Cohorts from the query's range (its filter applied to every event); returns counted up to
    ``periods`` periods after each cohort's, whether or not inside the range."""
    zone = ZoneInfo(query.timezone)

    def local_period(at: datetime) -> date:
        return period_start(at.astimezone(zone).date(), period)

    assert query.range.first_day is not None
    assert query.range.last_day is not None
    everything, _ = counted(query, rows, anytime=True)
    first: dict[int, datetime] = {}
    for event in everything:
        if (
            query.range.start <= event.time < query.range.end
            and (not cohort_event or event.name == cohort_event)
            and (event.visitor_id not in first or event.time < first[event.visitor_id])
        ):
            first[event.visitor_id] = event.time
    cohorts: list[RefCohort] = []
    day = period_start(query.range.first_day, period)
    last = period_start(query.range.last_day, period)
    while day <= last:
        members = [v for v, at in first.items() if local_period(at) == day]
        dates = [shifted(day, period, n) for n in range(periods + 1)]
        # A return counts in its period when it is not before the person's cohort event.
        returned = [
            sum(
                1
                for v in members
                if any(
                    e.visitor_id == v
                    and e.time >= first[v]
                    and local_period(e.time) == d
                    and (not return_event or e.name == return_event)
                    for e in everything
                )
            )
            for d in dates
        ]
        cohorts.append(
            RefCohort(
                day.isoformat(),
                len(members),
                returned,
                [_pct(r, len(members)) for r in returned],
                [d.isoformat() for d in dates],
            )
        )
        day = shifted(day, period, 1)
    return cohorts
