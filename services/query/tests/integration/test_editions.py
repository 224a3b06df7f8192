"""Both TimescaleDB editions give the same answers to the same queries on the same events.

The suite's server runs one license; this module starts a second server with the other one and
writes the same events to both through the processor's writer: tables kept by the writer on the
Apache side, continuous aggregates (half materialized, then late events) on the TSL side. Where
the TSL library is not installed only the Apache edition can run, and the comparison is skipped.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from psycopg_pool import AsyncConnectionPool

from analytics.v1 import bus_pb2, query_pb2
from analytics_db import create_pool, migrate, open_pool
from analytics_testing.ports import free_port
from analytics_testing.postgres import LocalPostgres, PostgresServer, edition, tsl_available
from processor_service import rollups as kept
from processor_service.writer import EventWriter, rows_of
from query_service.answer import run
from query_service.reference import EventRow
from query_service.reports.rollups import METRICS
from query_service.request import parse_query

from .conftest import QueryStack, to_event

pytestmark = pytest.mark.integration

ZONE = "Europe/Berlin"
START = datetime(2024, 3, 29, tzinfo=UTC)  # Berlin moves to summer time on the 31st
QUESTIONS: list[dict[str, Any]] = [
    {"metrics": sorted(METRICS)},
    {"metrics": ["visitors", "visits", "pageviews", "bounce_rate"], "dimensions": ["time:day"]},
    {"metrics": ["visitors", "pageviews", "events"], "dimensions": ["time:hour"]},
    {"metrics": ["visits", "visit_duration"], "dimensions": ["time:week"]},
    {"metrics": ["visitors", "pageviews", "percentage"], "dimensions": ["event:page"]},
    {"metrics": ["visitors", "visits", "bounce_rate"], "dimensions": ["visit:country"]},
    {
        "metrics": ["visitors", "visits", "pageviews"],
        "filters": [{"condition": {"operator": "is", "dimension": "visit:country", "values": ["DE"]}}],
    },
    {
        "metrics": ["visitors", "visits"],
        "filters": [{"condition": {"operator": "contains", "dimension": "event:page", "values": ["/blog"]}}],
    },
]


@pytest.fixture(scope="module")
def other_edition(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer) -> Iterator[str]:
    if not tsl_available():
        pytest.skip(
            "the TimescaleDB TSL library (timescaledb-tsl-*.so) is not installed: only the Apache "
            "edition can run here, so there is no second edition to compare with"
        )
    license = "apache" if edition(postgres_server.url) == "timescale" else "timescale"
    server = LocalPostgres(
        Path(tmp_path_factory.mktemp("other-edition")) / "data", free_port(), license=license, durable=False
    )
    server.start()
    try:
        yield server.create_database("editions")
    finally:
        server.stop()


@pytest.fixture
async def other_pool(other_edition: str) -> AsyncIterator[AsyncConnectionPool]:
    await migrate(other_edition, "analytics", "processor_service.migrations")
    pool = create_pool(other_edition, name="other-edition", max_size=2)
    await open_pool(pool)
    yield pool
    await pool.close()


def traffic(rng: random.Random) -> list[EventRow]:
    rows: list[EventRow] = []
    for visitor in range(1, 60):
        at = START + timedelta(minutes=rng.randint(0, 4 * 24 * 60))
        country = rng.choice(["DE", "US", "FR"])
        for n in range(rng.randint(1, 8)):
            at += timedelta(minutes=rng.choice([1, 5, 20, 29, 31, 90, 600]))
            rows.append(
                EventRow(
                    time=at,
                    event_id=uuid.UUID(int=visitor * 100 + n),
                    visitor_id=visitor if rng.random() > 0.05 else 0,
                    kind=rng.choice([1, 1, 1, 2]),
                    path=rng.choice(["/", "/blog/a", "/blog/b", "/pricing"]),
                    country=country,
                    is_bot=rng.random() < 0.03,
                )
            )
    return rows


async def refresh_all(pool: AsyncConnectionPool) -> None:
    async with pool.connection() as conn:
        if await kept.detect(conn) is not kept.Mode.CONTINUOUS:
            return
        await conn.set_autocommit(True)
        for name in kept.AGGREGATES:
            await conn.execute(
                "CALL refresh_continuous_aggregate(%s, %s, %s)",
                (f"analytics.{name}", START - timedelta(days=2), START + timedelta(days=10)),
            )
        await conn.set_autocommit(False)


async def answers(pool: AsyncConnectionPool, site: str) -> list[Any]:
    found: list[Any] = []
    async with pool.connection() as conn:
        for question in QUESTIONS:
            body = {"site_id": site, "date_range": {"start": "2024-03-29", "end": "2024-04-03"}, **question}
            request = json_format.ParseDict(body, query_pb2.QueryRequest())

            async def no_first_day() -> None:
                return None

            query, _ = await parse_query(request, site, ZONE, no_first_day)
            answer = await run(conn, query)
            found.append([(r.dimensions, r.metrics) for r in answer.rows])
        rows = {}
        for name in kept.RELATIONS:
            params = {
                "sites": [uuid.UUID(site)],
                "start": START - timedelta(days=2),
                "end": START + timedelta(days=10),
            }
            rows[name] = await (await conn.execute(kept.stored_sql(name), params)).fetchall()
        found.append(rows)
    return found


async def test_both_editions_answer_alike(query_stack: QueryStack, other_pool: AsyncConnectionPool) -> None:
    rng = random.Random(2024)
    rows = traffic(rng)
    rng.shuffle(rows)
    site = str(uuid.uuid4())
    other_writer = EventWriter(other_pool)
    half = len(rows) // 2
    # First half, a materialization where there are continuous aggregates, then the rest: late
    # events, merges and redeliveries below the watermark.
    for part in (rows[:half], rows[half:], rows[half // 2 : half]):
        for start in range(0, len(part), 40):
            events = [to_event(site, row) for row in part[start : start + 40]]
            for writer in (query_stack.writer, other_writer):
                await writer.write(rows_of([bus_pb2.EventBatch(events=events)]))
        for pool in (query_stack.pool, other_pool):
            if part is rows[:half]:
                await refresh_all(pool)
    mine, theirs = await answers(query_stack.pool, site), await answers(other_pool, site)
    assert mine[0][0][1][0] > 0  # the data set is not empty
    for index, (a, b) in enumerate(zip(mine, theirs, strict=True)):
        assert a == b, QUESTIONS[index] if index < len(QUESTIONS) else "rollup rows"
