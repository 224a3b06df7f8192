"""Identity through the real write path: ingest and auth on one test clock, JetStream, the
processor's consumer and writer, and the query service, all real servers on port 0 with real stubs.
Sessions and visitor counts follow the ids: a signed-in person is one visitor across days and
midnight, an anonymous one a new visitor every day."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import nats
import pytest
from google.protobuf import json_format
from psycopg_pool import AsyncConnectionPool

from analytics.v1 import auth_pb2, ingest_pb2, query_pb2, query_pb2_grpc
from analytics_bus import BusConfig, DeadLetterConfig, ensure_consumer, ensure_deadletter_stream
from analytics_db import create_pool, migrate, open_pool
from analytics_grpc import GrpcServer
from analytics_grpc.auth_client import AuthClient
from processor_service.consumer import Consumer
from processor_service.sessions import RECOMPUTE, SESSION_GAP, STORED
from processor_service.writer import EventWriter
from query_service.servicer import QueryServicer
from query_service.snapshot import DatabaseHealth, Snapshots

from .conftest import ADMIN_MD, Harness, pageview

pytestmark = pytest.mark.integration

PHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
LAPTOP = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"


@dataclass
class WritePath:
    harness: Harness
    query: query_pb2_grpc.QueryServiceStub
    pool: AsyncConnectionPool

    async def send(
        self,
        site: auth_pb2.CreateSiteResponse,
        path: str,
        *,
        user_id: str = "",
        address: str = "203.0.113.7",
        browser: str = LAPTOP,
        timestamp: str = "",
    ) -> None:
        metadata = (
            ("x-api-key", site.api_key),
            ("x-forwarded-for", address),
            ("x-forwarded-user-agent", browser),
        )
        event = pageview(site.site_id, path, user_id=user_id, timestamp=timestamp)
        await self.harness.ingest.Track(ingest_pb2.TrackRequest(event=event), metadata=metadata)

    async def stored(self, site: auth_pb2.CreateSiteResponse, events: int) -> None:
        """Waits until the processor has stored this many of the site's events, sessions included."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while (count := await self._count(site)) < events:
            assert loop.time() < deadline, f"the processor stored {count} of {events} events"
            await asyncio.sleep(0.05)

    async def _count(self, site: auth_pb2.CreateSiteResponse) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM analytics.events WHERE site_id = %s", (site.site_id,)
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def sessions(self, site: auth_pb2.CreateSiteResponse) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT visitor_id, started_at, ended_at, pageviews, entry_path, exit_path"
                " FROM analytics.sessions WHERE site_id = %s ORDER BY started_at, visitor_id",
                (site.site_id,),
            )
            names = [c.name for c in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]

    async def sessions_match_their_definition(self, site: auth_pb2.CreateSiteResponse) -> bool:
        sites = {"sites": [uuid.UUID(site.site_id)], "gap": SESSION_GAP}
        async with self.pool.connection() as conn:
            stored = await (await conn.execute(STORED, sites)).fetchall()
            recomputed = await (await conn.execute(RECOMPUTE, sites)).fetchall()
        return bool(stored) and stored == recomputed

    async def ask(
        self, site: auth_pb2.CreateSiteResponse, **fields: Any
    ) -> list[tuple[list[str], list[float]]]:
        request = json_format.ParseDict({"site_id": site.site_id, **fields}, query_pb2.QueryRequest())
        reply = await self.query.Query(request, metadata=ADMIN_MD)
        return [(list(r.dimensions), list(r.metrics)) for r in reply.results]


@pytest.fixture
async def write_path(harness: Harness, database_url: str, nats_url: str) -> AsyncIterator[WritePath]:
    await migrate(database_url, "analytics", "processor_service.migrations")
    pool = create_pool(database_url, name="write-path-test", max_size=6)
    await open_pool(pool)
    suffix = uuid.uuid4().hex[:8].upper()
    bus = BusConfig(
        stream=harness.bus.stream,
        subject=harness.bus.subject,
        consumer=f"processor_{suffix}",
        deadletter=DeadLetterConfig(stream=f"DLQ_{suffix}", subject=f"dlq.{suffix}"),
    )
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_deadletter_stream(js, bus.deadletter)
    await ensure_consumer(js, bus)
    consumer = Consumer(nc, EventWriter(pool), bus, fetch_batch=50, fetch_timeout_s=0.2)
    consuming = asyncio.create_task(consumer.run())

    auth_client = AuthClient(harness.auth_address, ttl_s=0)
    server = GrpcServer("query", "127.0.0.1:0", grace_s=1)
    health = DatabaseHealth(database_url, server.set_not_serving, server.set_serving, probe_interval_s=0.2)
    server.add(
        query_pb2_grpc.add_QueryServiceServicer_to_server,
        QueryServicer(Snapshots(pool, health, 10_000), auth_client),
        "analytics.v1.QueryService",
    )
    port = await server.start()
    await server.set_serving()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield WritePath(harness, query_pb2_grpc.QueryServiceStub(channel), pool)
    await server.stop()
    await auth_client.close()
    consumer.stop()
    await consuming
    await nc.close()
    await pool.close()


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 3, day, hour, minute, tzinfo=UTC)


async def test_a_signed_in_visit_spans_midnight_and_an_anonymous_one_splits_there(
    write_path: WritePath,
) -> None:
    path, clock = write_path, write_path.harness.clock
    site = await path.harness.new_site()
    # The same browser, once signed in as alice and once anonymous, at 23:50 and 00:10 UTC.
    clock.at = at(10, 23, 50)
    await path.send(site, "/evening", user_id="alice")
    await path.send(site, "/evening")
    clock.at = at(11, 0, 10)
    await path.send(site, "/morning", user_id="alice")
    await path.send(site, "/morning")
    # Bob's 23:55 page view is reported late, after his 00:10 one: his visit moves to the day
    # before (and to that day's chunk).
    await path.send(site, "/second", user_id="bob", address="198.51.100.4")
    await path.stored(site, 5)  # his visit is stored as starting at 00:10 before the late one comes
    clock.at = at(11, 0, 11)
    await path.send(site, "/first", user_id="bob", address="198.51.100.4", timestamp="2024-03-10T23:55:00Z")
    await path.stored(site, 6)

    visits = await path.sessions(site)
    by_visitor: dict[int, list[dict[str, Any]]] = {}
    for visit in visits:
        by_visitor.setdefault(visit["visitor_id"], []).append(visit)
    spanning = [v for v in visits if v["started_at"].date() != v["ended_at"].date()]
    assert len(spanning) == 2, f"alice's and bob's visits should cross midnight: {visits}"
    alice, bob = sorted(spanning, key=lambda v: v["started_at"])
    assert (alice["started_at"], alice["ended_at"]) == (at(10, 23, 50), at(11, 0, 10))
    assert (alice["pageviews"], alice["entry_path"], alice["exit_path"]) == (2, "/evening", "/morning")
    assert (bob["started_at"], bob["ended_at"]) == (at(10, 23, 55), at(11, 0, 10))
    assert (bob["entry_path"], bob["exit_path"]) == ("/first", "/second")
    assert len(by_visitor[alice["visitor_id"]]) == len(by_visitor[bob["visitor_id"]]) == 1
    # Anonymous: a new salt after midnight, so a new visitor and a new visit.
    anonymous = [v for v in visits if v["visitor_id"] not in (alice["visitor_id"], bob["visitor_id"])]
    assert [(v["started_at"], v["pageviews"], v["entry_path"]) for v in anonymous] == [
        (at(10, 23, 50), 1, "/evening"),
        (at(11, 0, 10), 1, "/morning"),
    ]
    assert anonymous[0]["visitor_id"] != anonymous[1]["visitor_id"]
    assert len(visits) == 4
    assert await path.sessions_match_their_definition(site)


async def test_over_several_days_a_signed_in_person_counts_once_and_anonymous_visitors_daily(
    write_path: WritePath,
) -> None:
    path, clock = write_path, write_path.harness.clock
    site = await path.harness.new_site()
    days = (12, 13, 14)
    for day in days:
        # Alice signs in at noon, from her phone one day and her laptop the next; an anonymous
        # visitor comes back from the same address and browser twice a day, hours apart.
        clock.at = at(day, 12)
        phone = day % 2 == 0
        await path.send(
            site,
            "/account",
            user_id="alice",
            address="192.0.2.1" if phone else "198.51.100.9",
            browser=PHONE if phone else LAPTOP,
        )
        await path.send(site, "/")
        clock.at = at(day, 18)
        await path.send(site, "/pricing")
    await path.stored(site, 3 * len(days))

    three_days = {"start": "2024-03-12", "end": "2024-03-14"}
    metrics = ["visitors", "visits", "pageviews"]
    # Alice once; the anonymous visitor once a day; every visit counted.
    assert await path.ask(site, date_range=three_days, metrics=metrics) == [([], [4.0, 9.0, 9.0])]
    assert await path.ask(site, date_range=three_days, metrics=["visitors"], dimensions=["time:day"]) == [
        ([f"2024-03-{day}"], [2.0]) for day in days
    ]
    pages = await path.ask(site, date_range=three_days, metrics=["visitors"], dimensions=["event:page"])
    assert sorted(pages) == [(["/"], [3.0]), (["/account"], [1.0]), (["/pricing"], [3.0])]
    # One day alone: both count once.
    one_day = {"start": "2024-03-13", "end": "2024-03-13"}
    assert await path.ask(site, date_range=one_day, metrics=metrics) == [([], [2.0, 3.0, 3.0])]
    assert await path.sessions_match_their_definition(site)
