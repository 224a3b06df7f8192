"""Runs a StatsQuery in one snapshot and shapes the answer: metric values, comparison, labels."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from psycopg import AsyncConnection

from query_service import metrics as metric_values
from query_service import timerange
from query_service.reports import stats
from query_service.spec import (
    CONVERSION_RATE,
    GOAL,
    PERCENTAGE,
    AllOf,
    Condition,
    Filter,
    StatsQuery,
    TimeRange,
    is_time_dimension,
)

# Visitors per group of the query without its goal: what conversion_rate divides by.
Bases = dict[tuple[str, ...], int]


@dataclass(frozen=True, slots=True)
class ComparisonRow:
    dimensions: tuple[str, ...]
    metrics: list[float]
    change: list[float | None]


@dataclass(frozen=True, slots=True)
class AnswerRow:
    dimensions: tuple[str, ...]
    metrics: list[float]
    comparison: ComparisonRow | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    rows: list[AnswerRow]
    total_rows: int
    time_labels: list[str] | None
    range: TimeRange
    comparison_range: TimeRange | None


def _labels(query: StatsQuery, span: TimeRange) -> list[str]:
    assert query.bucket is not None
    return timerange.labels(span, ZoneInfo(query.timezone), query.bucket)


async def run(conn: AsyncConnection[Any], query: StatsQuery) -> Answer:
    max_span = await stats.max_session_span(conn)
    time_index = next((i for i, d in enumerate(query.dimensions) if is_time_dimension(d)), None)
    labels = _labels(query, query.range) if query.time_labels else None
    # Empty buckets are filled when time is the only dimension; beside others, only listed.
    fill = labels if labels is not None and len(query.dimensions) == 1 else None
    # conversion_rate is known only beside the goal-less groups: such pages are sorted and cut here.
    converting = CONVERSION_RATE in query.metrics
    page = await stats.grouped(
        conn, query, query.range, max_span=max_span, labels=fill, paginate=not converting
    )
    total = (
        await stats.total_visitors(conn, query, query.range, max_span=max_span)
        if PERCENTAGE in query.metrics
        else 0
    )
    groups, total_rows = page.groups, page.total_rows
    bases: Bases = {}
    if converting:
        bases = await _bases(conn, query, query.range, max_span)
        groups = _sorted(query, groups, total, bases)
        total_rows = len(groups)
        groups = groups[query.offset : query.offset + query.limit]
    rows = [
        AnswerRow(
            group.dimensions,
            [
                metric_values.value(m, group.raw, total, _base(query, bases, group.dimensions))
                for m in query.metrics
            ],
        )
        for group in groups
    ]
    if query.comparison is not None:
        rows = await _compare(conn, query, rows, time_index=time_index, max_span=max_span)
    return Answer(rows, total_rows, labels, query.range, query.comparison)


def without_goal_conditions(node: Filter | None) -> Filter | None:
    """The filter less its top-level event:goal conditions (those conversion_rate sets aside)."""
    if isinstance(node, Condition) and node.dimension == GOAL:
        return None
    if isinstance(node, AllOf):
        kept = tuple(
            child for child in node.filters if not (isinstance(child, Condition) and child.dimension == GOAL)
        )
        if not kept:
            return None
        return kept[0] if len(kept) == 1 else AllOf(kept)
    return node


def _base_query(query: StatsQuery) -> StatsQuery:
    dimensions = tuple(d for d in query.dimensions if d != GOAL)
    return replace(
        query,
        metrics=("visitors",),
        dimensions=dimensions,
        filter=without_goal_conditions(query.filter),
        order_by=(),
        offset=0,
        time_labels=False,
        total_rows=False,
        comparison=None,
    )


async def _bases(
    conn: AsyncConnection[Any], query: StatsQuery, span: TimeRange, max_span: timedelta
) -> Bases:
    base = _base_query(query)
    found = await stats.grouped(conn, base, span, max_span=max_span, paginate=False)
    return {group.dimensions: group.raw.visitors for group in found.groups}


def _base(query: StatsQuery, bases: Bases, dimensions: tuple[str, ...]) -> int:
    if CONVERSION_RATE not in query.metrics:
        return 0
    key = tuple(value for name, value in zip(query.dimensions, dimensions, strict=True) if name != GOAL)
    return bases.get(key, 0)


@dataclass(frozen=True, slots=True)
class _Descending:
    """Reverses the order of a byte string inside a sort key."""

    value: bytes

    def __lt__(self, other: _Descending) -> bool:
        return self.value > other.value


def _sorted(query: StatsQuery, groups: list[stats.Group], total: int, bases: Bases) -> list[stats.Group]:
    """The groups in the order grouping.order gives in SQL: exact metric values, then dimensions
    in code-point order (PostgreSQL's "C" collation compares UTF-8 bytes)."""

    def key(group: stats.Group) -> list[Any]:
        keys: list[Any] = []
        used: set[str] = set()
        for order in query.order_by:
            if order.field in query.dimensions:
                text = group.dimensions[query.dimensions.index(order.field)].encode()
                keys.append(_Descending(text) if order.direction == "desc" else text)
                used.add(order.field)
            else:
                exact: Fraction = metric_values.exact_value(
                    order.field, group.raw, total, _base(query, bases, group.dimensions)
                )
                keys.append(-exact if order.direction == "desc" else exact)
        keys += [
            value.encode()
            for name, value in zip(query.dimensions, group.dimensions, strict=True)
            if name not in used
        ]
        return keys

    return sorted(groups, key=key)


async def _compare(
    conn: AsyncConnection[Any],
    query: StatsQuery,
    rows: list[AnswerRow],
    *,
    time_index: int | None,
    max_span: timedelta,
) -> list[AnswerRow]:
    """Each row's group in the comparison period: the same dimension values, and for a time
    dimension the bucket at the same position in the comparison period."""
    assert query.comparison is not None
    before = await stats.grouped(conn, query, query.comparison, max_span=max_span, paginate=False)
    bases = await _bases(conn, query, query.comparison, max_span) if CONVERSION_RATE in query.metrics else {}
    total = (
        await stats.total_visitors(conn, query, query.comparison, max_span=max_span)
        if PERCENTAGE in query.metrics
        else 0
    )
    main_labels = _labels(query, query.range) if time_index is not None else []
    other_labels = _labels(query, query.comparison) if time_index is not None else []
    positions = {name: i for i, name in enumerate(other_labels)}

    def key(dimensions: tuple[str, ...], index_of: dict[str, int]) -> tuple[object, ...]:
        if time_index is None:
            return dimensions
        return (
            *dimensions[:time_index],
            index_of.get(dimensions[time_index], -1),
            *dimensions[time_index + 1 :],
        )

    found = {key(group.dimensions, positions): group for group in before.groups}
    main_positions = {name: i for i, name in enumerate(main_labels)}
    compared: list[AnswerRow] = []
    for row in rows:
        match = found.get(key(row.dimensions, main_positions))
        raw = match.raw if match is not None else stats.Raw()
        dimensions = row.dimensions
        if time_index is not None:
            position = main_positions.get(row.dimensions[time_index], -1)
            other = other_labels[position] if 0 <= position < len(other_labels) else ""
            dimensions = (*dimensions[:time_index], other, *dimensions[time_index + 1 :])
        base = _base(query, bases, dimensions)
        values = [metric_values.value(m, raw, total, base) for m in query.metrics]
        change = [
            metric_values.change(m, old, new, old_visits=raw.visits, old_base=base)
            for m, old, new in zip(query.metrics, values, row.metrics, strict=True)
        ]
        compared.append(AnswerRow(row.dimensions, row.metrics, ComparisonRow(dimensions, values, change)))
    return compared
