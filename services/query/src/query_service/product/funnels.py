"""The funnel report: how many people complete each step, in order, within the window.

People are visitor ids (a signed-in person's id is the same on every day; an anonymous visitor's
changes with the UTC day). The SQL selects the events the query counts (date range, filters, as
the stats query does) that match any step, one row per person with the events' times, the steps
each matches (a bit mask) and, for a breakdown, the event's visit attribute, in (time, event id)
order. The sequence is then followed per person: an attempt is a run of later and later events,
one per step in step order, the last within ``window`` of the first and each within its step's own
window (``time_window_seconds``) of the one before; a person's attempt is the longest, and of those
the first in the order of its event positions. Each event serves one step.

Without step windows the earliest next event is always the best choice, so one greedy pass per
start finds the attempt (``chain``). With them it is not (an early step-2 event may leave step 3
out of its window where a later one would not), and ``timed_chain`` searches exactly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from fractions import Fraction
from typing import Any

from psycopg import AsyncConnection, sql

from query_service.filters import Params
from query_service.metrics import rounded
from query_service.product import patterns
from query_service.product.definitions import Step
from query_service.reports import stats
from query_service.spec import StatsQuery

MAX_GROUPS = 100
_MICROS = 1_000_000


@dataclass(frozen=True, slots=True)
class StepResult:
    step: int
    name: str
    entered: int
    converted: int
    conversion_rate: float
    conversion_rate_from_start: float
    drop_off: int
    drop_off_rate: float
    median_seconds_to_convert: float


@dataclass(frozen=True, slots=True)
class FunnelAnswer:
    steps: list[StepResult]
    groups: list[tuple[str, list[StepResult]]]


@dataclass
class _Tally:
    """Per step: people who completed it, and their microseconds from the previous step."""

    reached: list[int]
    waits: list[list[int]] = field(default_factory=list)


def step_test(step: Step, params: Params, event: str = "e") -> sql.Composable:
    """Whether the event (alias) matches the step."""
    e = sql.Identifier(event)
    if step.event_name:
        tests: list[sql.Composable] = [sql.SQL("{}.name = {}").format(e, params.add(step.event_name))]
    else:
        tests = [
            sql.SQL("{e}.kind = 1 AND {e}.path ~ {p}").format(
                e=e, p=params.add(patterns.to_regex(step.page_path))
            )
        ]
    tests += [
        sql.SQL("coalesce({} ->> {}, '') = {}").format(
            sql.Identifier(event, "properties"), params.add(key), params.add(value)
        )
        for key, value in step.filters
    ]
    return sql.SQL("({})").format(sql.SQL(" AND ").join(tests))


def chain(times: Sequence[int], masks: Sequence[int], steps: int, window_us: int) -> list[int]:
    """Indexes of the person's furthest attempt (earliest start among equals), one per step reached,
    when no step has a window of its own: the earliest next event is always the best."""
    best: list[int] = []
    for start, mask in enumerate(masks):
        if not mask & 1:
            continue
        found = [start]
        deadline = times[start] + window_us
        for index in range(start + 1, len(masks)):
            if len(found) == steps or times[index] > deadline:
                break
            if masks[index] >> len(found) & 1:
                found.append(index)
        if len(found) > len(best):
            best = found
            if len(best) == steps:
                break
    return best


def timed_chain(
    times: Sequence[int], masks: Sequence[int], gaps_us: Sequence[int | None], window_us: int
) -> list[int]:
    """Indexes of the person's attempt when steps have windows of their own (``gaps_us[d]``: the
    most microseconds from step d-1's event to step d's, None for no bound; ``gaps_us[0]`` is not
    read): the longest run, the first of those in the order of its indexes.

    ``ends[t][d][i]`` is the earliest time at which a run that uses event ``i`` for step ``d``
    can reach step ``t``; it does not depend on where the run started, so the search is
    O(events x steps²): each row is a sliding minimum over the events the step's window allows.
    """
    count, size = len(gaps_us), len(times)
    reach = [_reach(times, gap) for gap in gaps_us]
    ends: list[list[list[int]]] = []
    for target in range(count):
        rows = [[times[i] if masks[i] >> target & 1 else _NEVER for i in range(size)]]
        for depth in range(target - 1, -1, -1):
            following = _window_min(rows[0], reach[depth + 1])
            rows.insert(0, [following[i] if masks[i] >> depth & 1 else _NEVER for i in range(size)])
        ends.append(rows)
    start, target = -1, -1
    for index in range(size):
        if masks[index] & 1:
            deadline = times[index] + window_us
            furthest = max(t for t in range(count) if ends[t][0][index] <= deadline)
            if furthest > target:
                start, target = index, furthest
                if target == count - 1:
                    break
    if start < 0:
        return []
    deadline = times[start] + window_us
    found = [start]
    for depth in range(1, target + 1):
        previous = found[-1]
        found.append(
            next(
                j
                for j in range(previous + 1, reach[depth][previous] + 1)
                if ends[target][depth][j] <= deadline
            )
        )
    return found


# Larger than any event time in microseconds since the epoch.
_NEVER = 1 << 62


def _reach(times: Sequence[int], gap_us: int | None) -> list[int]:
    """Per event, the last index within ``gap_us`` after it (the last event when unbounded)."""
    size = len(times)
    if gap_us is None:
        return [size - 1] * size
    out, last = [0] * size, 0
    for index, at in enumerate(times):
        last = max(last, index)
        while last + 1 < size and times[last + 1] - at <= gap_us:
            last += 1
        out[index] = last
    return out


def _window_min(values: Sequence[int], reach: Sequence[int]) -> list[int]:
    """Per index i, the least ``values[j]`` for i < j <= ``reach[i]`` (_NEVER when none); ``reach``
    never decreases with i, so one pass from the end with a deque of candidates does."""
    out = [_NEVER] * len(values)
    # Indexes, smallest first, whose values decrease from left to right: the right end is the least.
    candidates: deque[int] = deque()
    for index in range(len(values) - 2, -1, -1):
        entering = index + 1
        while candidates and values[candidates[0]] >= values[entering]:
            candidates.popleft()
        candidates.appendleft(entering)
        while candidates and candidates[-1] > reach[index]:
            candidates.pop()
        if candidates:
            out[index] = values[candidates[-1]]
    return out


def results(
    labels: Sequence[str], reached: Sequence[int], waits: Sequence[Sequence[int]]
) -> list[StepResult]:
    """The steps' figures from how many completed each and their waits (microseconds)."""
    out: list[StepResult] = []
    first = reached[0] if reached else 0
    for index, label in enumerate(labels):
        converted = reached[index]
        entered = reached[index - 1] if index else converted
        drop = entered - converted
        median = _median(waits[index])
        out.append(
            StepResult(
                step=index + 1,
                name=label,
                entered=entered,
                converted=converted,
                conversion_rate=_percent(converted, entered),
                conversion_rate_from_start=_percent(converted, first),
                drop_off=drop,
                drop_off_rate=_percent(drop, entered),
                median_seconds_to_convert=float(median / _MICROS),
            )
        )
    return out


def _median(values: Sequence[int]) -> Fraction:
    """The middle value; the mean of the middle two for an even count; 0 for none."""
    if not values:
        return Fraction(0)
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return Fraction(ordered[middle])
    return Fraction(ordered[middle - 1] + ordered[middle], 2)


def _percent(part: int, whole: int) -> float:
    return rounded(Fraction(100 * part, whole), 2) if whole else 0.0


def _statement(
    query: StatsQuery, steps: Sequence[Step], max_span: timedelta
) -> tuple[sql.Composed, dict[str, object]]:
    source, scope, params, values = stats.counted_events(query, max_span)
    masks = sql.SQL(" | ").join(
        sql.SQL("(CASE WHEN {} THEN {} ELSE 0 END)").format(step_test(step, params), sql.Literal(1 << index))
        for index, step in enumerate(steps)
    )
    # Time and mask travel packed in one bigint (microseconds << 8 | mask: at most 8 steps), so
    # each person's events are sorted once (PostgreSQL 15 sorts per ordered aggregate).
    values_column = (
        sql.SQL(", array_agg(m.value ORDER BY m.time, m.event_id)") if query.dimensions else sql.SQL("")
    )
    breakdown = (
        sql.SQL(", {} AS value").format(scope.expression(query.dimensions[0], params))
        if query.dimensions
        else sql.SQL("")
    )
    statement = sql.SQL(
        "SELECT array_agg(m.packed ORDER BY m.time, m.event_id){values_column}"
        " FROM (SELECT e.visitor_id, e.time, e.event_id, {masks} AS mask{breakdown},"
        " ((extract(epoch FROM e.time) * 1000000)::bigint << 8) | ({masks}) AS packed"
        " {source}) m WHERE m.mask <> 0 GROUP BY m.visitor_id HAVING bool_or(m.mask & 1 <> 0)"
    ).format(masks=masks, breakdown=breakdown, values_column=values_column, source=source)
    return statement, {**values, **params.values}


async def funnel(
    conn: AsyncConnection[Any], query: StatsQuery, steps: Sequence[Step], window_seconds: int
) -> FunnelAnswer:
    """The funnel over the query's range and filter; grouped by its dimension when it has one."""
    max_span = await stats.max_session_span(conn)
    statement, params = _statement(query, steps, max_span)
    window_us = window_seconds * _MICROS
    count = len(steps)
    gaps_us = [None if s.time_window_seconds is None else s.time_window_seconds * _MICROS for s in steps]
    timed = any(gap is not None for gap in gaps_us[1:])
    total = _Tally([0] * count, [[] for _ in steps])
    groups: dict[str, _Tally] = {}
    cur = await conn.execute(statement, params)
    for row in await cur.fetchall():
        times = [packed >> 8 for packed in row[0]]
        masks = [packed & 0xFF for packed in row[0]]
        found = (
            timed_chain(times, masks, gaps_us, window_us) if timed else chain(times, masks, count, window_us)
        )
        if not found:
            continue
        tallies = [total]
        if query.dimensions:
            tallies.append(groups.setdefault(row[1][found[0]], _Tally([0] * count, [[] for _ in steps])))
        for tally in tallies:
            for depth, index in enumerate(found):
                tally.reached[depth] += 1
                if depth:
                    tally.waits[depth].append(times[index] - times[found[depth - 1]])
    labels = [step.label for step in steps]
    ordered = sorted(groups.items(), key=lambda item: (-item[1].reached[0], item[0].encode()))
    return FunnelAnswer(
        results(labels, total.reached, total.waits),
        [(value, results(labels, tally.reached, tally.waits)) for value, tally in ordered[:MAX_GROUPS]],
    )
