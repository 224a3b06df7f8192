"""Fixtures: a migrated analytics schema, a pool on it, event factories, private JetStream names."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from psycopg_pool import AsyncConnectionPool

from analytics.v1 import bus_pb2
from analytics_bus import (
    BusConfig,
    DeadLetterConfig,
    ensure_consumer,
    ensure_deadletter_stream,
    ensure_stream,
)
from analytics_db import create_pool, migrate, open_pool


@pytest.fixture
async def analytics_pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    await migrate(database_url, "analytics", "processor_service.migrations")
    pool = create_pool(database_url, name="processor-test", max_size=4)
    await open_pool(pool)
    yield pool
    await pool.close()


def _make_event(
    site: uuid.UUID,
    path: str = "/",
    *,
    at: datetime | None = None,
    user_id: str = "",
    kind: int = bus_pb2.EVENT_KIND_PAGEVIEW,
    name: str = "pageview",
    is_bot: bool = False,
    event_id: uuid.UUID | None = None,
) -> bus_pb2.EnrichedEvent:
    event = bus_pb2.EnrichedEvent(
        event_id=(event_id or uuid.uuid4()).bytes,
        site_id=site.bytes,
        kind=kind,
        name=name,
        path=path,
        user_id=user_id,
        is_bot=is_bot,
        properties={"k": "v"} if kind == bus_pb2.EVENT_KIND_CUSTOM else {},
    )
    moment = at or datetime.now(UTC)
    event.occurred_at.FromDatetime(moment)
    event.received_at.FromDatetime(moment)
    return event


@pytest.fixture
def make_event() -> Any:
    """Builds an EnrichedEvent: make_event(site, path, at=, user_id=, kind=, name=, is_bot=, event_id=)."""
    return _make_event


@pytest.fixture
def bus() -> BusConfig:
    """Stream, subject, consumer and dead-letter names of this test only; redelivery after 2 s."""
    suffix = uuid.uuid4().hex[:8].upper()
    return BusConfig(
        stream=f"TEST_{suffix}",
        subject=f"test.{suffix}.events",
        consumer="processor",
        backoff_s=(2.0,),
        max_deliver=3,
        deadletter=DeadLetterConfig(stream=f"TEST_{suffix}_DLQ", subject=f"test.{suffix}.deadletter"),
    )


@pytest.fixture
async def jetstream(nats_url: str, bus: BusConfig) -> AsyncIterator[tuple[Client, JetStreamContext]]:
    """A connection with the test's streams and durable consumer declared."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js, bus)
    await ensure_deadletter_stream(js, bus.deadletter)
    await ensure_consumer(js, bus)
    yield nc, js
    await nc.close()


async def _drained(js: JetStreamContext, bus: BusConfig, timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        info = await js.consumer_info(bus.stream, bus.consumer)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"consumer did not drain the stream: {info}")
        await asyncio.sleep(0.05)


@pytest.fixture
def drained() -> Any:
    """await drained(js, bus): waits until the durable consumer has nothing pending or unacknowledged."""
    return _drained
