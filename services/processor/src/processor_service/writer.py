"""Writes decoded event batches: binary COPY to staging, an idempotent insert, then sessions.

Everything happens in one transaction per batch; the messages are acked only after it commits.
"""

from __future__ import annotations

import struct
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from psycopg import AsyncConnection, AsyncCursor, postgres, sql
from psycopg.abc import Buffer
from psycopg.adapt import AdaptersMap, Dumper
from psycopg.pq import Format
from psycopg_pool import AsyncConnectionPool

from analytics.v1 import bus_pb2
from processor_service import rollups
from processor_service.sessions import (
    BOUND,
    CHUNK_INTERVAL,
    FAST,
    FAST_WITH_DELTA,
    FEED_COLUMNS,
    FEED_FILTER,
    INPUT_TABLE,
    LOCK,
    LOCK_BUCKETS,
    SESSION_GAP,
    SLOW,
    TEMP_TABLES,
    chunk_start,
)

log = structlog.get_logger("analytics.processor")

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
_STAGING_TYPES = [type_ for _, type_ in COLUMNS]
_STAGING = "events_staging"
_COPY = f"COPY {_STAGING} ({_NAMES}) FROM STDIN (FORMAT BINARY)"
_INSERT_SELECT = f"INSERT INTO analytics.events ({_NAMES}) SELECT {_NAMES} FROM {_STAGING}"  # noqa: S608


def _summary(source: str) -> str:
    """Per site, bot flag, kind and page-view path: rows, their time span, rows with a visitor."""
    return f"""
SELECT site_id, is_bot, kind, CASE WHEN kind = 1 AND NOT is_bot THEN path ELSE '' END AS path,
       count(*)::int, min(time), max(time), (count(*) FILTER (WHERE visitor_id <> 0))::int
  FROM {source}
 GROUP BY 1, 2, 3, 4
"""  # noqa: S608 - constants only


# Optimistic path, for batches without a stored event (nearly all): a plain insert, cheaper than
# ON CONFLICT with RETURNING; a unique violation rolls it back to a savepoint and the batch takes
# the exact path below. Every staged row was inserted, so the summary and the session input come
# straight from the staging table.
_INSERT_ALL = _INSERT_SELECT
_FEED_ALL = f"""
WITH fed AS (INSERT INTO {INPUT_TABLE} SELECT {FEED_COLUMNS} FROM {_STAGING} WHERE {FEED_FILTER})
{_summary(_STAGING)}"""  # noqa: S608 - constants only
_SUMMARY_ALL = _summary(_STAGING)
# Exact path: only the rows the insert really added come back, so what was stored before (a
# redelivery) is neither announced live nor counted into sessions a second time.
_INSERT_NEW = f"""
WITH inserted AS ({_INSERT_SELECT} ON CONFLICT DO NOTHING RETURNING {FEED_COLUMNS}, is_bot),
fed AS (INSERT INTO {INPUT_TABLE} SELECT {FEED_COLUMNS} FROM inserted WHERE {FEED_FILTER})
{_summary("inserted")}"""  # noqa: S608 - constants only
_INSERT_NEW_NO_SESSIONS = f"""
WITH inserted AS (
    {_INSERT_SELECT} ON CONFLICT DO NOTHING RETURNING site_id, is_bot, kind, path, time, visitor_id
)
{_summary("inserted")}"""
# An event id names one event per site whatever its time (migration 0005). One statement: of the
# staged copies of an id the earliest is its candidate, every candidate's id is claimed in
# analytics.event_ids, and only candidates whose claim is new stay staged. A claim another
# transaction holds uncommitted waits for it; claims are taken in key order, so two writers never
# wait for each other's in opposite orders.
_CLAIM_IDS = f"""
WITH candidates AS (
    SELECT DISTINCT ON (site_id, event_id) ctid AS row_id, site_id, event_id
      FROM {_STAGING} ORDER BY site_id, event_id, time
),
claimed AS (
    INSERT INTO analytics.event_ids (site_id, event_id)
    SELECT site_id, event_id FROM candidates ORDER BY site_id, event_id
    ON CONFLICT DO NOTHING
    RETURNING site_id, event_id
)
DELETE FROM {_STAGING}
 WHERE ctid NOT IN (SELECT c.row_id FROM candidates c JOIN claimed USING (site_id, event_id))
"""  # noqa: S608 - constants only
# Chunks of analytics.events and analytics.sessions never analyzed yet, once they hold some rows.
# Until a chunk has statistics the planner cannot tell the identity and session indexes from the
# (site_id, time) ones and may scan a whole site's range per looked-up row; autovacuum analyzes a
# new chunk only a minute or more later. So the writer analyzes it in the next batch (once per
# chunk: from then on its estimates scale with its size), in oid order so that two writers never
# wait for each other's ANALYZE locks in opposite orders.
_FRESH_CHUNKS = """
SELECT n.nspname, c.relname
  FROM pg_inherits i
  JOIN pg_class c ON c.oid = i.inhrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE i.inhparent IN ('analytics.events'::regclass, 'analytics.sessions'::regclass)
   AND c.reltuples < 0
   AND pg_relation_size(c.oid) >= 65536
 ORDER BY c.oid
"""
# After a conflict, this many batches go straight to the exact path: redeliveries come in runs.
_EXACT_AFTER_CONFLICT = 8
# Temp tables live as long as the pooled connection; ON COMMIT DELETE ROWS empties them after every
# batch without a separate TRUNCATE round trip.
_TEMP_TABLES = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} (LIKE analytics.events INCLUDING DEFAULTS) "
    f"ON COMMIT DELETE ROWS; {TEMP_TABLES}"
)

Row = tuple[object, ...]

# Rows carry uuids, timestamps and jsonb already in PostgreSQL's binary wire format (16 raw bytes,
# int64 microseconds since 2000-01-01 UTC, version byte + JSON text), so the conversion from
# protobuf builds neither uuid.UUID nor datetime objects: this loop runs once per event and is the
# processor's hottest Python code. _RawBinary hands those bytes to the binary COPY as they are.
_PG_EPOCH_S = 946_684_800
# google.protobuf.Timestamp's valid range, 0001-01-01 to 9999-12-31: well inside timestamptz's.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799
_micros = struct.Struct(">q").pack
_EMPTY_JSONB = b"\x01{}"
_RAW_TYPES = ("uuid", "timestamptz", "jsonb")


class InvalidEvent(ValueError):
    """An event that cannot be stored as it is; the message names the field."""


class _RawBinary(Dumper):
    format = Format.BINARY

    def dump(self, obj: Buffer) -> Buffer:
        return obj


_RAW_DUMPERS = tuple(
    type(f"Raw{name.title()}Dumper", (_RawBinary,), {"oid": postgres.types[name].oid}) for name in _RAW_TYPES
)


def use_wire_format(adapters: AdaptersMap) -> None:
    """Lets a binary COPY with COLUMNS' declared types take rows as to_row builds them."""
    for dumper in _RAW_DUMPERS:
        adapters.register_dumper(None, dumper)


def _stamp(event: bus_pb2.EnrichedEvent, stamp: Timestamp, field_name: str) -> bytes:
    seconds = stamp.seconds
    # HasField only for the epoch itself: an unset Timestamp reads as 0 s, 0 ns.
    if not seconds and not stamp.nanos and not event.HasField(field_name):
        raise InvalidEvent(f"{field_name} is missing")
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
        raise InvalidEvent(f"{field_name} is out of range")
    return _micros((seconds - _PG_EPOCH_S) * 1_000_000 + stamp.nanos // 1000)


def _jsonb(properties: Mapping[str, str]) -> bytes:
    return b"\x01" + orjson.dumps(dict(properties))


def to_row(event: bus_pb2.EnrichedEvent) -> Row:
    """The event in COLUMNS order; raises InvalidEvent when it cannot be stored."""
    site_id = event.site_id
    event_id = event.event_id
    if len(site_id) != 16:
        raise InvalidEvent("site_id must be 16 bytes")
    if len(event_id) != 16:
        raise InvalidEvent("event_id must be 16 bytes")
    properties = event.properties
    return (
        _stamp(event, event.occurred_at, "occurred_at"),
        site_id,
        event_id,
        _stamp(event, event.received_at, "received_at"),
        event.kind,
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
        _jsonb(properties) if properties else _EMPTY_JSONB,
    )


def rows_of(batches: Iterable[bus_pb2.EventBatch]) -> list[Row]:
    """Rows of every event; raises InvalidEvent naming the first bad event's index and field."""
    rows: list[Row] = []
    for batch in batches:
        for index, event in enumerate(batch.events):
            try:
                rows.append(to_row(event))
            except InvalidEvent as error:
                raise InvalidEvent(f"events[{index}].{error}") from None
    return rows


@dataclass(slots=True)
class SiteActivity:
    """What one committed transaction added for one site (bots excluded): feeds the live updates."""

    events: int = 0
    pageviews: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None
    paths: dict[str, int] = field(default_factory=dict)

    def add(self, kind: int, path: str, count: int, *, first_at: datetime, last_at: datetime) -> None:
        self.events += count
        if kind == bus_pb2.EVENT_KIND_PAGEVIEW:
            self.pageviews += count
            self.paths[path] = self.paths.get(path, 0) + count
        if self.first_at is None or first_at < self.first_at:
            self.first_at = first_at
        if self.last_at is None or last_at > self.last_at:
            self.last_at = last_at


@dataclass(slots=True)
class SessionCounts:
    """Session rows written by one transaction, by path."""

    extended: int = 0  # fast path: updated in place
    created: int = 0  # fast path: inserted
    slow_visitors: int = 0  # visitors routed to the slow path
    updated: int = 0  # slow path
    inserted: int = 0  # slow path
    deleted: int = 0  # slow path: absorbed by a merge or re-started earlier


@dataclass(slots=True)
class WriteResult:
    """How many events were new and what happened to sessions, per committed transaction."""

    inserted: int = 0
    sessions: SessionCounts = field(default_factory=SessionCounts)
    sites: dict[uuid.UUID, SiteActivity] = field(default_factory=dict)
    # The earliest start of a visit the transaction changed (None: none changed).
    visits_from: datetime | None = None
    # Continuous aggregates refreshed after the commit because it changed their materialized part.
    refreshed: list[str] = field(default_factory=list)

    def touched(self) -> rollups.Touched | None:
        starts = [a.first_at for a in self.sites.values() if a.first_at is not None]
        ends = [a.last_at for a in self.sites.values() if a.last_at is not None]
        if not starts or not ends:
            return None
        return rollups.Touched(min(starts), max(ends), self.visits_from)


class EventWriter:
    """Stores rows idempotently and folds the new ones into sessions, in one transaction."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        sessions: bool = True,
        session_gap: timedelta = SESSION_GAP,
        lock_buckets: int = LOCK_BUCKETS,
        connection_timeout_s: float = 5.0,
    ) -> None:
        self._pool = pool
        self._sessions = sessions
        self._session_gap = session_gap
        self._lock_buckets = lock_buckets
        self._connection_timeout_s = connection_timeout_s
        self._exact_batches = 0
        # How the report rollups are kept (migration 0006), read on the first write.
        self._rollups: rollups.Mode | None = None
        # analytics.sessions' chunk interval, read once (a later change only costs speed: any bound
        # below the exact one is correct); timedelta(0) when it is not a fixed interval.
        self._session_chunk: timedelta | None = None
        # Connections whose temp tables exist (added only after a commit, so never a rolled-back CREATE).
        self._prepared: weakref.WeakSet[AsyncConnection[Any]] = weakref.WeakSet()

    async def write(self, rows: Sequence[Row]) -> WriteResult:
        result = WriteResult()
        if not rows:
            return result
        async with self._pool.connection(timeout=self._connection_timeout_s) as conn:
            async with conn.transaction():
                if conn not in self._prepared:
                    await conn.execute(_TEMP_TABLES)
                if self._rollups is None:
                    self._rollups = await rollups.detect(conn)
                async with conn.cursor() as cur:
                    use_wire_format(cur.adapters)
                    async with cur.copy(_COPY) as copy:
                        copy.set_types(_STAGING_TYPES)
                        for row in rows:
                            await copy.write_row(row)
                    await self._analyze_fresh_chunks(cur)
                    await cur.execute(_CLAIM_IDS)
                    summary = await self._insert(conn, cur)
                    feed = 0
                    for site_id, is_bot, kind, path, count, first_at, last_at, visitors in summary:
                        result.inserted += count
                        if not is_bot:
                            activity = result.sites.get(site_id)
                            if activity is None:
                                activity = result.sites[site_id] = SiteActivity()
                            activity.add(kind, path, count, first_at=first_at, last_at=last_at)
                            feed += visitors
                    if self._sessions and feed:
                        await self._sessionize(cur, result)
            self._prepared.add(conn)
            touched = result.touched() if self._rollups is rollups.Mode.CONTINUOUS else None
            if touched is not None:
                await self._refresh_late(conn, touched, result)
        return result

    @staticmethod
    async def _refresh_late(
        conn: AsyncConnection[Any], touched: rollups.Touched, result: WriteResult
    ) -> None:
        """After the commit: the batch is stored whatever happens here. A failed refresh leaves the
        buckets to the next policy run (TimescaleDB's invalidation log has them)."""
        try:
            await conn.set_autocommit(True)
            try:
                result.refreshed = await rollups.refresh_late(conn, touched)
            finally:
                await conn.set_autocommit(False)
        except psycopg.Error as error:
            log.warning("refreshing continuous aggregates after a late change failed", error=str(error))

    @staticmethod
    async def _analyze_fresh_chunks(cur: AsyncCursor[Any]) -> None:
        await cur.execute(_FRESH_CHUNKS)
        for schema, name in await cur.fetchall():
            await cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, name)))
            log.info("analyzed a new chunk", chunk=f"{schema}.{name}")

    async def _insert(self, conn: AsyncConnection[Any], cur: AsyncCursor[Any]) -> list[Any]:
        """Moves the staged rows into analytics.events; returns the summary of what was new."""
        if self._exact_batches > 0:
            self._exact_batches -= 1
        else:
            try:
                async with conn.transaction():
                    await cur.execute(_INSERT_ALL)
            except psycopg.errors.UniqueViolation:
                self._exact_batches = _EXACT_AFTER_CONFLICT
            else:
                await cur.execute(_FEED_ALL if self._sessions else _SUMMARY_ALL)
                return await cur.fetchall()
        await cur.execute(_INSERT_NEW if self._sessions else _INSERT_NEW_NO_SESSIONS)
        return await cur.fetchall()

    async def session_params(self, cur: AsyncCursor[Any]) -> dict[str, object] | None:
        """FAST's and SLOW's parameters for what session_input holds (None when it is empty): the
        gap, and the look-ups' lower bound rounded down to its chunk's start (sessions.BOUND)."""
        if self._session_chunk is None:
            await cur.execute(CHUNK_INTERVAL)
            interval = await cur.fetchone()
            self._session_chunk = interval[0] if interval and interval[0] else timedelta(0)
        await cur.execute(BOUND, {"gap": self._session_gap})
        bound = await cur.fetchone()
        if bound is None or bound[0] is None:
            return None
        return {"gap": self._session_gap, "lower": chunk_start(bound[0], self._session_chunk)}

    async def _sessionize(self, cur: AsyncCursor[Any], result: WriteResult) -> None:
        counts = result.sessions
        await cur.execute(LOCK, {"buckets": self._lock_buckets})
        params = await self.session_params(cur)
        if params is None:
            return
        tables = self._rollups is rollups.Mode.TABLES
        if self._rollups is not rollups.Mode.NONE:
            await rollups.keep_visitor_days(cur)
        await cur.execute(FAST_WITH_DELTA if tables else FAST, params)
        row = await cur.fetchone()
        starts: list[datetime] = []
        if row is not None:
            counts.extended, counts.created, counts.slow_visitors = row[:3]
            starts += [row[3]] if row[3] is not None else []
        if counts.slow_visitors:
            if tables:
                await rollups.snapshot(cur, params, -1)
            await cur.execute(SLOW, params)
            row = await cur.fetchone()
            if row is not None:
                counts.updated, counts.inserted, counts.deleted = row[:3]
                starts += [row[3]] if row[3] is not None else []
            if tables:
                await rollups.snapshot(cur, params, 1)
        result.visits_from = min(starts) if starts else None
        if tables:
            await rollups.apply(cur)
