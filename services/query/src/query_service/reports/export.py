"""Raw export: the events Query counts under the same filters (no bots, none without a visitor id),
oldest first, read through a server-side cursor in batches so memory stays flat, and encoded as
NDJSON or CSV chunks."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from psycopg import AsyncConnection, sql

from query_service import relations
from query_service.filters import Params, Scope, compile_filter, needs_head, uses
from query_service.spec import StatsQuery, is_visit_dimension

Format = Literal["ndjson", "csv"]
FORMATS: tuple[Format, ...] = ("ndjson", "csv")
CONTENT_TYPES: dict[Format, str] = {"ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
# Rows fetched (and sent) per chunk: a chunk of 1000 events is a few hundred kilobytes.
BATCH = 1000
# The exported columns, in CSV order; every one a column of analytics.events.
COLUMNS = (
    "time",
    "event_id",
    "name",
    "path",
    "url",
    "title",
    "referrer",
    "referrer_host",
    "referrer_source",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "user_id",
    "visitor_id",
    "country",
    "browser",
    "os",
    "device",
    "screen_width",
    "screen_height",
    "language",
    "properties",
)


def statement(query: StatsQuery) -> tuple[sql.Composed, dict[str, object]]:
    """SELECT of the exported events. Parameters: site, start, end, session_floor."""
    params = Params()
    used = uses(query.filter)
    head = needs_head(used)
    with_visits = head or any(is_visit_dimension(d) for d in used)
    parts: list[sql.Composable] = [
        sql.SQL("SELECT {} FROM {} e").format(
            sql.SQL(", ").join(sql.Identifier("e", c) for c in COLUMNS), relations.EVENTS
        )
    ]
    if with_visits:
        parts.append(
            sql.SQL(
                " JOIN {} s ON s.site_id = e.site_id AND s.visitor_id = e.visitor_id"
                " AND s.started_at <= e.time AND s.ended_at >= e.time AND s.started_at >= %(session_floor)s"
            ).format(relations.SESSIONS)
        )
    if head:
        parts.append(
            sql.SQL(
                " JOIN {} h ON h.site_id = s.site_id AND h.event_id = s.session_id AND h.time = s.started_at"
            ).format(relations.EVENTS)
        )
    parts.append(
        sql.SQL(
            " WHERE e.site_id = %(site)s AND e.time >= %(start)s AND e.time < %(end)s"
            " AND NOT e.is_bot AND e.visitor_id <> 0"
        )
    )
    if query.filter is not None:
        scope = Scope(event="e", session="s" if with_visits else None, head="h" if head else None)
        parts.append(sql.SQL(" AND {}").format(compile_filter(query.filter, scope, params)))
    parts.append(sql.SQL(" ORDER BY e.time, e.event_id"))
    return sql.Composed(parts), params.values


def _text(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if value is None:
        return ""
    return value if isinstance(value, int | dict) else str(value)


def record(row: Sequence[Any]) -> dict[str, Any]:
    """One event as exported: times in RFC 3339 UTC, ids as text, a missing user_id as ""."""
    out = {name: _text(value) for name, value in zip(COLUMNS, row, strict=True)}
    out["visitor_id"] = str(row[COLUMNS.index("visitor_id")])
    return out


def encode(rows: Sequence[Sequence[Any]], form: Format, header: bool) -> bytes:
    if form == "ndjson":
        return "".join(
            json.dumps(record(row), ensure_ascii=False, separators=(",", ":")) + "\n" for row in rows
        ).encode()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if header:
        writer.writerow(COLUMNS)
    for row in rows:
        fields = record(row)
        fields["properties"] = json.dumps(fields["properties"], ensure_ascii=False, separators=(",", ":"))
        writer.writerow(fields[c] for c in COLUMNS)
    return buffer.getvalue().encode()


async def chunks(
    conn: AsyncConnection[Any],
    query: StatsQuery,
    form: Format,
    session_floor: datetime,
    *,
    batch: int = BATCH,
) -> AsyncIterator[bytes]:
    """The export, chunk by chunk (the first holds the CSV header, even without events)."""
    text, values = statement(query)
    params = {
        "site": query.site_id,
        "start": query.range.start,
        "end": query.range.end,
        "session_floor": session_floor,
        **values,
    }
    first = True
    async with conn.cursor(name="export") as cursor:
        await cursor.execute(text, params)
        while True:
            rows = await cursor.fetchmany(batch)
            if rows or first:
                yield encode(rows, form, header=first)
            first = False
            if len(rows) < batch:
                return
