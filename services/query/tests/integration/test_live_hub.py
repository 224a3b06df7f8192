"""The live hub on a real NATS server: updates published as the processor publishes them reach
every subscriber of the site through one subscription; a subscriber that does not read loses its
oldest messages, counted, while the others get everything; subscribers leave cleanly."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from prometheus_client import REGISTRY

from analytics.v1 import bus_pb2, live_pb2
from analytics_bus import connect, live_subject
from query_service.live.hub import LiveHub, Subscriber

pytestmark = pytest.mark.integration


async def no_summary(site_id: str) -> live_pb2.LiveSummary:
    return live_pb2.LiveSummary(current_visitors=7)


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await connect(nats_url, "hub-test")
    yield client
    await client.drain()


def update(site_id: str, *pages: str, country: str = "DE") -> bytes:
    message = bus_pb2.LiveUpdate(site_id=site_id, events=len(pages))
    message.live_events.extend(
        live_pb2.LiveEvent(page=page, country=country, name="pageview") for page in pages
    )
    return message.SerializeToString()


def sample(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    return 0.0 if value is None else value


async def events_of(subscriber: Subscriber, count: int) -> list[live_pb2.StreamLiveResponse]:
    """The next ``count`` event messages (summaries skipped)."""
    found: list[live_pb2.StreamLiveResponse] = []
    while len(found) < count:
        message = await subscriber.next(10)
        assert message is not None, found
        if message.HasField("events"):
            found.append(message)
    return found


async def test_one_subscription_per_site_feeds_every_subscriber(nc: Client) -> None:
    hub = LiveHub(nc, no_summary, queue_size=100, summary_interval_s=3600)
    site, other = str(uuid.uuid4()), str(uuid.uuid4())
    async with (
        hub.subscribe(site) as first,
        hub.subscribe(site) as second,
        hub.subscribe(site, pages=frozenset({"/b"})) as only_b,
        hub.subscribe(other) as elsewhere,
    ):
        assert hub.sites == 2 and hub.subscribers(site) == 3
        # The first message of a site's first subscriber is the site's summary.
        summary = await first.next(10)
        assert summary is not None and summary.summary.current_visitors == 7
        await nc.publish(live_subject(site), update(site, "/a", "/b"))
        await nc.publish(live_subject(site), update(site, "/a"))
        await nc.flush()
        for subscriber in (first, second):
            got = await events_of(subscriber, 2)
            assert [[e.page for e in m.events.events] for m in got] == [["/a", "/b"], ["/a"]]
        (filtered,) = await events_of(only_b, 1)
        assert [e.page for e in filtered.events.events] == ["/b"]
        # Nothing for the other site: its next message is its summary, then silence.
        quiet = [await elsewhere.next(0.2), await elsewhere.next(0.2)]
        assert [m.HasField("summary") if m else None for m in quiet] == [True, None]
    assert hub.sites == 0 and hub.subscribers(site) == 0


async def test_a_slow_subscriber_loses_its_oldest_messages_only(nc: Client) -> None:
    hub = LiveHub(nc, no_summary, queue_size=3, summary_interval_s=3600)
    site = str(uuid.uuid4())
    dropped_before = sample("analytics_live_dropped_events_total")
    subscribers_before = sample("analytics_live_subscribers")
    async with hub.subscribe(site) as fast, hub.subscribe(site) as slow:
        assert sample("analytics_live_subscribers") == subscribers_before + 2
        await fast.next(10)  # the summary
        received: list[live_pb2.StreamLiveResponse] = []
        for index in range(10):
            await nc.publish(live_subject(site), update(site, f"/{index}", f"/{index}/x"))
            # The fast subscriber reads each update as it comes; the slow one reads nothing.
            received += await events_of(fast, 1)
        assert [m.events.events[0].page for m in received] == [f"/{i}" for i in range(10)]
        assert all(m.dropped_events == 0 for m in received)
        # The slow one read nothing: the three latest are left; the summary and six updates of
        # two events each were dropped, and every message says so.
        left = [await slow.next(1) for _ in range(3)]
        assert [m.events.events[0].page for m in left if m] == ["/7", "/8", "/9"]
        assert [m.dropped_events for m in left if m] == [14, 14, 14]
        assert await slow.next(0.1) is None
        assert hub.total_dropped_events == 14  # counted while the subscriber is still open
    assert hub.sites == 0
    assert hub.dropped_events == 14
    # The same figures on /metrics: the summary (no events) weighs nothing, each update two events.
    assert sample("analytics_live_dropped_events_total") == dropped_before + 14
    assert sample("analytics_live_subscribers") == subscribers_before


async def test_queues_are_bounded_in_events_too(nc: Client) -> None:
    hub = LiveHub(nc, no_summary, queue_size=100, summary_interval_s=3600, queue_events=5)
    site = str(uuid.uuid4())
    async with hub.subscribe(site) as subscriber:
        await subscriber.next(10)  # the summary
        for index in range(4):
            await nc.publish(live_subject(site), update(site, *(f"/{index}/{n}" for n in range(2))))
        await nc.flush()
        # Once the hub has all four updates (8 events), only the last two fit in 5 events.
        waited = await subscriber.next(10)
        got = [waited] if waited else []
        while (message := await subscriber.next(0.5)) is not None:
            got.append(message)
        pages = [e.page for m in got for e in m.events.events]
        assert pages[-4:] == ["/2/0", "/2/1", "/3/0", "/3/1"]
        assert len(pages) + got[-1].dropped_events == 8


async def test_close_ends_every_stream(nc: Client) -> None:
    hub = LiveHub(nc, no_summary, queue_size=10, summary_interval_s=3600)
    async with hub.subscribe(str(uuid.uuid4())) as subscriber:
        await subscriber.next(10)
        waiting = asyncio.create_task(subscriber.next(60))
        await hub.close()
        assert await waiting is None and subscriber.closed


async def test_take_hands_over_what_queued_up_oldest_first_at_most_so_many(nc: Client) -> None:
    hub = LiveHub(nc, no_summary, queue_size=100, summary_interval_s=3600)
    site = str(uuid.uuid4())
    async with hub.subscribe(site) as subscriber:
        (summary,) = await subscriber.take(10, 5)
        assert isinstance(summary, live_pb2.StreamLiveResponse) and summary.HasField("summary")
        for index in range(5):
            await nc.publish(live_subject(site), update(site, f"/{index}"))
        await nc.flush()
        # Wait until all five are queued, then take them in two goes of at most three.
        deadline = asyncio.get_running_loop().time() + 10
        while len(subscriber._queue) < 5:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        first, second = await subscriber.take(1, 3), await subscriber.take(1, 3)
        assert [len(first), len(second)] == [3, 2]
        pages = [e.page for item in first + second for e in item.events.events]
        assert pages == [f"/{i}" for i in range(5)]
        assert await subscriber.take(0.1, 3) == []
