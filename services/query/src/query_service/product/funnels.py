"""The funnel report: how many people complete each step, in order, within the window.

People are visitor ids (a signed-in person's id is the same on every day; an anonymous visitor's
changes with the UTC day). The SQL selects the events the query counts (date range, filters, as
the stats query does) that match any step, one row per person with the events' times, the steps
each matches (a bit mask) and, for a breakdown, the event's visit attribute, in (time, event id)
order. The sequence is then followed per person: an attempt starts at an event of step 1 and takes,
step after step, the earliest later event of the next step, within ``window`` of the start; a
person's attempt is the one that gets furthest (the earliest of those). Each event serves one step.
"""

from __future__ import annotations

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
    """Indexes of the person's furthest attempt (earliest start among equals), one per step reached."""
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
    total = _Tally([0] * count, [[] for _ in steps])
    groups: dict[str, _Tally] = {}
    cur = await conn.execute(statement, params)
    for row in await cur.fetchall():
        times = [packed >> 8 for packed in row[0]]
        masks = [packed & 0xFF for packed in row[0]]
        found = chain(times, masks, count, window_us)
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
