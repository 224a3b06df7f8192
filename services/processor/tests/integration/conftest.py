"""Fixtures: a migrated analytics schema, a pool on it, and event factories."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from analytics.v1 import bus_pb2
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
