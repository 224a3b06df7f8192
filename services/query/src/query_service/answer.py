"""Runs a StatsQuery in one snapshot and shapes the answer: metric values, comparison, labels."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from psycopg import AsyncConnection

from query_service import metrics as metric_values
from query_service import timerange
from query_service.reports import stats
from query_service.spec import PERCENTAGE, StatsQuery, TimeRange, is_time_dimension


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
    page = await stats.grouped(conn, query, query.range, max_span=max_span, labels=fill)
    total = (
        await stats.total_visitors(conn, query, query.range, max_span=max_span)
        if PERCENTAGE in query.metrics
        else 0
    )
    rows = [
        AnswerRow(group.dimensions, [metric_values.value(m, group.raw, total) for m in query.metrics])
        for group in page.groups
    ]
    if query.comparison is not None:
        rows = await _compare(conn, query, rows, time_index=time_index, max_span=max_span)
    return Answer(rows, page.total_rows, labels, query.range, query.comparison)


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
        values = [metric_values.value(m, raw, total) for m in query.metrics]
        change = [
            metric_values.change(m, old, new, old_visits=raw.visits)
            for m, old, new in zip(query.metrics, values, row.metrics, strict=True)
        ]
        compared.append(AnswerRow(row.dimensions, row.metrics, ComparisonRow(dimensions, values, change)))
    return compared
