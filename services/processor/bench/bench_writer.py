"""Writer throughput with and without sessions: python services/processor/bench/bench_writer.py URL.

URL names a PostgreSQL+TimescaleDB server (an admin database such as .../postgres); each run gets a
fresh database. Events arrive in time order, in batches, like a live stream: each visitor makes
``--per-visitor`` events 10 s to 5 min apart. Prints rows/s of raw binary COPY into the hypertable,
the writer without sessions and the writer with sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from analytics.v1 import bus_pb2
from analytics_db import create_pool, migrate, open_pool
from processor_service.writer import COLUMNS, EventWriter, Row, SessionCounts, rows_of, use_wire_format


def _event(rng: random.Random, site: uuid.UUID, visitor: int, at: datetime, i: int) -> bus_pb2.EnrichedEvent:
    custom = i % 4 == 3
    event = bus_pb2.EnrichedEvent(
        event_id=uuid.UUID(int=rng.getrandbits(128)).bytes,
        site_id=site.bytes,
        kind=bus_pb2.EVENT_KIND_CUSTOM if custom else bus_pb2.EVENT_KIND_PAGEVIEW,
        name="signup" if custom else "pageview",
        path=f"/page/{rng.randrange(200)}",
        referrer_host="example.org",
        referrer_source="referral",
        visitor_id=visitor,
        country="DE",
        browser="Firefox",
        os="Linux",
        device="desktop",
    )
    event.occurred_at.FromDatetime(at)
    event.received_at.FromDatetime(at)
    return event


def make_event_messages(
    count: int, visitors: int, sites: int = 3, seed: int = 1
) -> list[bus_pb2.EnrichedEvent]:
    """Like make_events, as protobuf events marked as ingest marks client ids with server times."""
    rows = make_events(count, 5, sites, seed, visitors)
    events = []
    for row in rows:
        event = bus_pb2.EnrichedEvent(
            site_id=row[1],
            event_id=row[2],
            kind=row[4],
            name=row[5],
            path=row[6],
            referrer_host=row[10],
            referrer_source=row[11],
            visitor_id=row[18],
            country=row[19],
            browser=row[20],
            os=row[21],
            device=row[22],
            client_event_id=True,
            server_time=True,
        )
        micros = int.from_bytes(row[0], "big", signed=True)
        event.occurred_at.FromMicroseconds(micros + 946_684_800 * 1_000_000)
        event.received_at.CopyFrom(event.occurred_at)
        events.append(event)
    return events


def make_events(count: int, per_visitor: int, sites: int, seed: int, visitors: int = 0) -> list[Row]:
    """Events in time order: ``visitors`` > 0 shares them round-robin among that many visitors (one
    long session each, like a load generator); otherwise each visitor makes ``per_visitor`` events
    10 s to 5 min apart, starting anywhere in an hour (many short sessions, like real traffic)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    site_ids = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(sites)]
    start = datetime(2024, 5, 1, tzinfo=UTC)
    events: list[bus_pb2.EnrichedEvent] = []
    if visitors:
        step = timedelta(seconds=3600 / count)
        for i in range(count):
            visitor = i % visitors + 1
            events.append(_event(rng, site_ids[visitor % sites], visitor, start + i * step, i // visitors))
        return rows_of([bus_pb2.EventBatch(events=events)])
    visitor = 0
    while len(events) < count:
        visitor += 1
        site = rng.choice(site_ids)
        at = start + timedelta(seconds=rng.uniform(0, 3600))
        for i in range(min(per_visitor, count - len(events))):
            events.append(_event(rng, site, visitor, at, i))
            at += timedelta(seconds=rng.uniform(10, 300))
    events.sort(key=lambda e: (e.occurred_at.seconds, e.occurred_at.nanos))
    return rows_of([bus_pb2.EventBatch(events=events)])


def _database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


async def fresh_database(admin_url: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _database(admin_url, name)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    await migrate(url, "analytics", "processor_service.migrations")
    return url


async def drop_database(admin_url: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


async def raw_copy(url: str, rows: list[Row], batch: int) -> float:
    names = ", ".join(name for name, _ in COLUMNS)
    types = [type_ for _, type_ in COLUMNS]
    started = time.perf_counter()
    async with await psycopg.AsyncConnection.connect(url) as conn:
        for offset in range(0, len(rows), batch):
            async with conn.transaction(), conn.cursor() as cur:
                use_wire_format(cur.adapters)
                async with cur.copy(f"COPY analytics.events ({names}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(types)
                    for row in rows[offset : offset + batch]:
                        await copy.write_row(row[: len(COLUMNS)])
    return len(rows) / (time.perf_counter() - started)


async def through_writer(
    url: str, rows: list[Row], batch: int, sessions: bool, concurrency: int
) -> tuple[float, str]:
    pool = create_pool(url, name="bench", max_size=concurrency)
    await open_pool(pool)
    writer = EventWriter(pool, sessions=sessions)
    inserted = 0
    counts = SessionCounts()
    offsets = iter(range(0, len(rows), batch))

    async def work() -> None:
        nonlocal inserted
        for offset in offsets:
            result = await writer.write(rows[offset : offset + batch])
            inserted += result.inserted
            for name in counts.__slots__:
                setattr(counts, name, getattr(counts, name) + getattr(result.sessions, name))

    started = time.perf_counter()
    try:
        await asyncio.gather(*(work() for _ in range(concurrency)))
    finally:
        await pool.close()
    rate = len(rows) / (time.perf_counter() - started)
    return rate, f"inserted={inserted} {counts}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("admin_url")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--per-visitor", type=int, default=5)
    parser.add_argument("--visitors", type=int, default=0, help="few long-lived visitors instead")
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1, help="transactions in flight at once")
    parser.add_argument("--only", choices=("raw", "plain", "sessions"), action="append")
    args = parser.parse_args()
    rows = make_events(args.events, args.per_visitor, args.sites, args.seed, args.visitors)
    for mode in args.only or ("raw", "plain", "sessions"):
        url = await fresh_database(args.admin_url)
        try:
            if mode == "raw":
                rate, note = (
                    await raw_copy(url, rows, args.batch),
                    "binary COPY straight into analytics.events",
                )
            else:
                rate, note = await through_writer(
                    url, rows, args.batch, sessions=mode == "sessions", concurrency=args.concurrency
                )
        finally:
            await drop_database(args.admin_url, url)
        print(f"{mode:9s} {rate:10.0f} rows/s  {note}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
