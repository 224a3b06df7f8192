"""Visitor ids through a real ingest server and auth service: identified ids keep across days,
anonymous ones change with the day's salt; a site's secret is fetched once, without holding up
other sites."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from analytics.v1 import auth_pb2, ingest_pb2
from ingest_service.enrich.visitor import identified_visitor_id

from .conftest import Harness, pageview

pytestmark = pytest.mark.integration

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"


async def track(harness: Harness, site: auth_pb2.CreateSiteResponse, path: str, user_id: str = "") -> None:
    metadata = (
        ("x-api-key", site.api_key),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-user-agent", BROWSER),
    )
    event = pageview(site.site_id, path, user_id=user_id)
    await harness.ingest.Track(ingest_pb2.TrackRequest(event=event), metadata=metadata)


def stored_secret(database_url: str, site_id: str) -> bytes:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT secret FROM auth.identity_secrets WHERE site_id = %s", (site_id,)
        ).fetchone()
    assert row is not None
    return bytes(row[0])


async def test_identified_ids_keep_across_midnight_and_anonymous_ones_do_not(
    harness: Harness, database_url: str
) -> None:
    # The site is made after ingest started, as every site here: its secret is fetched on first use.
    site = await harness.new_site()
    harness.clock.at = datetime(2024, 3, 10, 23, 50, tzinfo=UTC)
    await track(harness, site, "/evening", user_id="alice")
    await track(harness, site, "/evening")
    harness.clock.at = datetime(2024, 3, 11, 0, 10, tzinfo=UTC)
    await track(harness, site, "/morning", user_id="alice")
    await track(harness, site, "/morning")

    alice_1, anonymous_1, alice_2, anonymous_2 = await harness.stored_events()
    assert [e.path for e in (alice_1, anonymous_1, alice_2, anonymous_2)] == ["/evening"] * 2 + [
        "/morning"
    ] * 2
    site_bytes = uuid.UUID(site.site_id).bytes
    expected = identified_visitor_id(stored_secret(database_url, site.site_id), site_bytes, "alice")
    assert alice_1.visitor_id == alice_2.visitor_id == expected
    assert 0 not in (anonymous_1.visitor_id, anonymous_2.visitor_id)
    assert anonymous_1.visitor_id != anonymous_2.visitor_id  # a new salt, a new visitor
    assert expected not in (anonymous_1.visitor_id, anonymous_2.visitor_id)
    # The same user id on another site is another visitor.
    other = await harness.new_site()
    await track(harness, other, "/", user_id="alice")
    assert (await harness.stored_events())[-1].visitor_id not in (0, expected)


async def waiting_on_locks(database_url: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def test_a_sites_first_secret_fetch_holds_up_only_that_sites_requests(
    harness: Harness, database_url: str
) -> None:
    slow, fast = await harness.new_site(), await harness.new_site()
    secret = bytes(range(32))
    # The slow site is as old as a site made before identity secrets: its secret is made on first
    # use, and another transaction making it right now keeps auth's insert waiting.
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM auth.identity_secrets WHERE site_id = %s", (slow.site_id,))
    async with await psycopg.AsyncConnection.connect(database_url) as blocker:
        await blocker.execute(
            "INSERT INTO auth.identity_secrets (site_id, secret) VALUES (%s, %s)", (slow.site_id, secret)
        )
        slow_calls = [
            asyncio.create_task(track(harness, slow, f"/slow{i}", user_id="alice")) for i in range(3)
        ]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while await waiting_on_locks(database_url) == 0:
            assert loop.time() < deadline, "auth never waited for the slow site's secret"
            await asyncio.sleep(0.02)

        # The other site's first fetch and its requests go through meanwhile.
        await asyncio.wait_for(track(harness, fast, "/fast", user_id="bob"), timeout=10)
        await asyncio.wait_for(track(harness, fast, "/fast-anonymous"), timeout=10)
        assert not any(call.done() for call in slow_calls)
        # Three requests of the slow site, one call to auth.
        assert await waiting_on_locks(database_url) == 1
        await blocker.commit()
    await asyncio.wait_for(asyncio.gather(*slow_calls), timeout=20)

    events = {e.path: e for e in await harness.stored_events()}
    slow_id = identified_visitor_id(secret, uuid.UUID(slow.site_id).bytes, "alice")
    assert {events[f"/slow{i}"].visitor_id for i in range(3)} == {slow_id}
    fast_secret = stored_secret(database_url, fast.site_id)
    assert events["/fast"].visitor_id == identified_visitor_id(
        fast_secret, uuid.UUID(fast.site_id).bytes, "bob"
    )
