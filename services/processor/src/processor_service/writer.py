"""Writes decoded event batches to analytics.events: binary COPY to staging, then an idempotent insert."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from analytics.v1 import bus_pb2

# Column order shared by the staging COPY and the insert; types declared so COPY can be binary.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("time", "timestamptz"),
    ("site_id", "uuid"),
    ("event_id", "uuid"),
    ("received_at", "timestamptz"),
    ("kind", "int2"),
    ("name", "text"),
    ("path", "text"),
    ("url", "text"),
    ("title", "text"),
    ("referrer", "text"),
    ("referrer_host", "text"),
    ("referrer_source", "text"),
    ("utm_source", "text"),
    ("utm_medium", "text"),
    ("utm_campaign", "text"),
    ("utm_term", "text"),
    ("utm_content", "text"),
    ("user_id", "text"),
    ("visitor_id", "int8"),
    ("country", "text"),
    ("browser", "text"),
    ("os", "text"),
    ("device", "text"),
    ("is_bot", "bool"),
    ("screen_width", "int4"),
    ("screen_height", "int4"),
    ("language", "text"),
    ("properties", "jsonb"),
)
_NAMES = ", ".join(name for name, _ in COLUMNS)
_TYPES = [type_ for _, type_ in COLUMNS]
_STAGING = "events_staging"
_EMPTY_PROPERTIES = Jsonb({})
_INSERT = f"INSERT INTO analytics.events ({_NAMES}) SELECT {_NAMES} FROM {_STAGING} ON CONFLICT DO NOTHING"  # noqa: S608

Row = tuple[object, ...]


def _time(stamp: object) -> datetime:
    seconds = stamp.seconds  # type: ignore[attr-defined]
    nanos = stamp.nanos  # type: ignore[attr-defined]
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=nanos // 1000)


def to_row(event: bus_pb2.EnrichedEvent) -> Row:
    return (
        _time(event.occurred_at),
        uuid.UUID(bytes=event.site_id),
        uuid.UUID(bytes=event.event_id),
        _time(event.received_at),
        int(event.kind),
        event.name,
        event.path,
        event.url,
        event.title,
        event.referrer,
        event.referrer_host,
        event.referrer_source,
        event.utm_source,
        event.utm_medium,
        event.utm_campaign,
        event.utm_term,
        event.utm_content,
        event.user_id or None,
        event.visitor_id,
        event.country,
        event.browser,
        event.os,
        event.device,
        event.is_bot,
        event.screen_width,
        event.screen_height,
        event.language,
        Jsonb(dict(event.properties)) if event.properties else _EMPTY_PROPERTIES,
    )


def rows_of(batches: Iterable[bus_pb2.EventBatch]) -> list[Row]:
    return [to_row(event) for batch in batches for event in batch.events]


class EventWriter:
    """Stores rows idempotently in one transaction; returns how many were new."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def write(self, rows: Sequence[Row]) -> int:
        if not rows:
            return 0
        async with self._pool.connection() as conn, conn.transaction():
            await self._ensure_staging(conn)
            async with conn.cursor() as cur:
                async with cur.copy(f"COPY {_STAGING} ({_NAMES}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(_TYPES)
                    for row in rows:
                        await copy.write_row(row)
                await cur.execute(_INSERT)
                inserted = cur.rowcount
            return inserted

    @staticmethod
    async def _ensure_staging(conn: AsyncConnection[object]) -> None:
        # A temp table lives as long as the pooled connection; ON COMMIT DELETE ROWS empties it
        # after every batch without a separate TRUNCATE round trip.
        await conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} (LIKE analytics.events INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS"
        )
