"""The consumer loop against real TimescaleDB and NATS JetStream: exactly once, dead letters, live."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from prometheus_client import REGISTRY
from psycopg_pool import AsyncConnectionPool

from analytics.v1 import bus_pb2
from analytics_bus import BusConfig, deadletter
from processor_service import metrics
from processor_service.advisories import MaxDeliveriesWatcher
from processor_service.consumer import Consumer
from processor_service.live import LivePublisher
from processor_service.writer import EventWriter

pytestmark = pytest.mark.integration

JS = tuple[Client, JetStreamContext]


async def count(pool: AsyncConnectionPool, site: uuid.UUID, table: str = "events") -> int:
    column = "count(*)" if table == "events" else "coalesce(sum(events), 0)"
    async with pool.connection() as conn:
        cur = await conn.execute(f"SELECT {column} FROM analytics.{table} WHERE site_id = %s", (site,))
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def consumer_for(pool: AsyncConnectionPool, nc: Client, bus: BusConfig, **options: Any) -> Consumer:
    options.setdefault("fetch_batch", 4)
    options.setdefault("fetch_timeout_s", 0.2)
    return Consumer(nc, EventWriter(pool), bus, retry_delay_s=0.05, retry_max_delay_s=0.2, **options)


async def run_until_drained(
    consumers: list[Consumer], js: JetStreamContext, bus: BusConfig, drained: Any
) -> None:
    tasks = [asyncio.create_task(c.run()) for c in consumers]
    try:
        await drained(js, bus)
    finally:
        for consumer in consumers:
            consumer.stop()
        await asyncio.gather(*tasks)


_COUNTERS = (
    ("analytics_processor_rows_inserted_total", {}),
    ("analytics_processor_duplicates_skipped_total", {}),
    ("analytics_processor_messages_total", {}),
    *(
        ("analytics_processor_dead_letters_total", {"reason": r})
        for r in ("undecodable", "invalid", "rejected")
    ),
)


def counters() -> list[float]:
    """The processor's counters in this process (the registry is shared: tests compare deltas)."""
    return [REGISTRY.get_sample_value(name, labels) or 0.0 for name, labels in _COUNTERS]


async def publish_each(js: JetStreamContext, bus: BusConfig, events: list[bus_pb2.EnrichedEvent]) -> None:
    """One bus message per event, batch ids 0, 1, …"""
    for n, event in enumerate(events):
        await js.publish(bus.subject, bus_pb2.EventBatch(batch_id=str(n), events=[event]).SerializeToString())


async def dead_letters(js: JetStreamContext, bus: BusConfig) -> list[deadletter.DeadLetter]:
    entries, _ = await deadletter.page(js, bus.deadletter, 1, 100)
    return entries


async def test_consumer_stores_each_event_once_and_dead_letters_poison(
    analytics_pool: AsyncConnectionPool, jetstream: JS, bus: BusConfig, make_event: Any, drained: Any
) -> None:
    nc, js = jetstream
    site = uuid.uuid4()
    first = bus_pb2.EventBatch(batch_id="1", events=[make_event(site, f"/p{i}") for i in range(50)])
    old = bus_pb2.EventBatch(
        batch_id="2", events=[make_event(site, "/q", at=datetime(2023, 1, 1, tzinfo=UTC))]
    )
    invalid = bus_pb2.EventBatch(batch_id="3", events=[make_event(site), make_event(site)])
    invalid.events[1].site_id = b"abc"
    nul = bus_pb2.EventBatch(batch_id="4", events=[make_event(site, "/nul\x00")])
    sibling = bus_pb2.EventBatch(batch_id="5", events=[make_event(site, "/sibling")])

    await js.publish(bus.subject, first.SerializeToString())
    poison = await js.publish(bus.subject, b"\xff\xff not a protobuf", headers={"Nats-Msg-Id": "poison-1"})
    # A redelivery of the first batch under another message id, as after a crash before the ack.
    await js.publish(bus.subject, first.SerializeToString())
    await js.publish(bus.subject, old.SerializeToString())
    await js.publish(bus.subject, invalid.SerializeToString())
    # Fetched together: the database refuses the batch, splitting it finds the one bad message.
    await js.publish(bus.subject, nul.SerializeToString())
    await js.publish(bus.subject, sibling.SerializeToString())

    consumer = consumer_for(analytics_pool, nc, bus)
    before = counters()
    await run_until_drained([consumer], js, bus, drained)

    assert await count(analytics_pool, site) == 52
    assert consumer.stored == 52
    assert consumer.dead_lettered == 3
    # What /metrics shows: 52 rows new, the redelivered batch's 50 skipped, four messages stored
    # (the first batch twice, the old one and the poison's sibling), one dead letter per reason.
    assert [a - b for a, b in zip(counters(), before, strict=True)] == [52, 50, 4, 1, 1, 1]

    entries = await dead_letters(js, bus)
    assert [(e.reason, e.original_sequence) for e in entries] == [
        ("undecodable", poison.seq),
        ("invalid", poison.seq + 3),
        ("rejected", poison.seq + 4),
    ]
    assert entries[0].data == b"\xff\xff not a protobuf"
    assert entries[0].original_stream == bus.stream
    assert entries[0].original_subject == bus.subject
    assert entries[0].deliveries == 1
    assert entries[0].time is not None
    assert entries[1].error == "events[1].site_id must be 16 bytes"
    assert "0x00" in entries[2].error
    raw = await js.get_msg(bus.deadletter.stream, entries[0].sequence)
    assert raw.headers is not None
    assert raw.headers[deadletter.ORIGINAL_MSG_ID] == "poison-1"


async def test_live_updates_are_published_after_commit(
    analytics_pool: AsyncConnectionPool, jetstream: JS, bus: BusConfig, make_event: Any, drained: Any
) -> None:
    nc, js = jetstream
    sites = [uuid.uuid4(), uuid.uuid4()]
    received: list[tuple[str, bus_pb2.LiveUpdate]] = []

    async def collect(msg: Msg) -> None:
        received.append((msg.subject, bus_pb2.LiveUpdate.FromString(msg.data)))

    subscription = await nc.subscribe("analytics.live.>", cb=collect)
    batch = bus_pb2.EventBatch(
        events=[
            *(make_event(sites[0], f"/p{i % 12}") for i in range(30)),
            make_event(sites[0], "/x", kind=bus_pb2.EVENT_KIND_CUSTOM, name="x"),
            make_event(sites[0], "/bot", is_bot=True),
            make_event(sites[1], "/only"),
        ]
    )
    await js.publish(bus.subject, batch.SerializeToString())
    await js.publish(bus.subject, batch.SerializeToString())  # a redelivery: announces nothing
    consumer = consumer_for(analytics_pool, nc, bus, fetch_batch=1, live=LivePublisher(nc))
    await run_until_drained([consumer], js, bus, drained)
    await nc.flush()
    for _ in range(50):
        if len(received) >= 2:
            break
        await asyncio.sleep(0.02)
    await subscription.unsubscribe()

    by_site = {update.site_id: (subject, update) for subject, update in received}
    assert len(received) == 2
    subject, update = by_site[str(sites[0])]
    assert subject == f"analytics.live.{sites[0]}"
    assert (update.events, update.pageviews) == (31, 30)
    assert len(update.paths) == 10
    assert update.paths[0].pageviews == 3  # /p0 … /p5 three times each, ties by path
    assert [p.path for p in update.paths[:2]] == ["/p0", "/p1"]
    assert update.other_pageviews == 30 - sum(p.pageviews for p in update.paths)
    assert update.HasField("committed_at")
    assert by_site[str(sites[1])][1].events == 1


async def test_two_consumers_share_the_durable_and_count_exactly(
    analytics_pool: AsyncConnectionPool, jetstream: JS, bus: BusConfig, make_event: Any, drained: Any
) -> None:
    nc, js = jetstream
    site = uuid.uuid4()
    batches = []
    for b in range(60):
        events = [
            make_event(site, f"/{b}/{i}", at=datetime(2024, 5, 1, 9, b % 60, i, tzinfo=UTC))
            for i in range(20)
        ]
        for i, event in enumerate(events):
            event.visitor_id = 1 + (b * 20 + i) % 7
        batches.append(bus_pb2.EventBatch(batch_id=str(b), events=events))
    # Every fifth batch is published twice, as ingest would after a lost PubAck.
    for b, batch in enumerate(batches):
        await js.publish(bus.subject, batch.SerializeToString())
        if b % 5 == 0:
            await js.publish(bus.subject, batch.SerializeToString())

    consumers = [
        consumer_for(analytics_pool, nc, bus, fetch_batch=3),
        consumer_for(analytics_pool, nc, bus, fetch_batch=3),
    ]
    await run_until_drained(consumers, js, bus, drained)

    assert await count(analytics_pool, site) == 1200
    assert sum(c.stored for c in consumers) == 1200
    assert all(c.stored > 0 for c in consumers), [c.stored for c in consumers]
    assert await count(analytics_pool, site, "sessions") == 1200


async def test_a_trickle_of_messages_shares_transactions(
    analytics_pool: AsyncConnectionPool, jetstream: JS, bus: BusConfig, make_event: Any, drained: Any
) -> None:
    nc, js = jetstream
    site = uuid.uuid4()
    consumer = consumer_for(analytics_pool, nc, bus, fetch_batch=64, fetch_linger_s=0.5)
    task = asyncio.create_task(consumer.run())
    try:
        # One small message every 20 ms, as group commit sends them under light load.
        for n in range(12):
            batch = bus_pb2.EventBatch(batch_id=str(n), events=[make_event(site, f"/trickle/{n}")])
            await js.publish(bus.subject, batch.SerializeToString())
            await asyncio.sleep(0.02)
        await drained(js, bus)
    finally:
        consumer.stop()
        await task

    assert await count(analytics_pool, site) == 12
    # The first fetch finds one message; the linger lets the other eleven gather for the next
    # transaction or two, where without it nearly every message would be a transaction of its own.
    assert consumer.transactions <= 3, consumer.transactions


class FlakyWriter:
    """Fails the first ``failures`` writes as an unreachable database would, then writes for real."""

    def __init__(self, writer: EventWriter, failures: int) -> None:
        self._writer = writer
        self.failures = failures
        self.calls = 0

    async def write(self, rows: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            import psycopg

            raise psycopg.OperationalError("connection refused (simulated)")
        return await self._writer.write(rows)


class Health:
    def __init__(self) -> None:
        self.events: list[str] = []

    async def database_down(self, error: str) -> None:
        self.events.append("down")

    async def database_up(self) -> None:
        self.events.append("up")


async def test_transient_errors_keep_the_batch_in_hand_until_the_write_works(
    analytics_pool: AsyncConnectionPool, jetstream: JS, bus: BusConfig, make_event: Any, drained: Any
) -> None:
    nc, js = jetstream
    site = uuid.uuid4()
    await js.publish(bus.subject, bus_pb2.EventBatch(events=[make_event(site)]).SerializeToString())
    # 12 failures x 0.2 s exceed the 2 s ack wait: only in_progress() prevents a redelivery.
    writer = FlakyWriter(EventWriter(analytics_pool), failures=12)
    health = Health()
    consumer = Consumer(
        nc,
        writer,
        bus,
        fetch_batch=1,
        fetch_timeout_s=0.2,
        retry_delay_s=0.2,
        retry_max_delay_s=0.2,
        health=health,
    )
    await run_until_drained([consumer], js, bus, drained)
    assert writer.calls == 13
    assert await count(analytics_pool, site) == 1
    info = await js.consumer_info(bus.stream, bus.consumer)
    assert info.num_redelivered == 0
    assert health.events == ["down"] * 12 + ["up"]


class _NoRoundTrip:
    """A JetStream context whose round trip (the acks' confirmation) fails as on a broken link."""

    def __init__(self, js: Any) -> None:
        self._js = js

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)

    async def account_info(self) -> None:
        raise ConnectionClosedError


class AcksLost:
    """The consumer's view of a connection that breaks between a batch's plain acks and their
    confirmation.

    The plain acks never reach the server (the test replaces Msg.ack) and the round trip fails; the
    first ``failing`` confirmed ack requests time out, as while the client reconnects.
    """

    def __init__(self, nc: Client, failing: int = 0) -> None:
        self._nc = nc
        self._failing = failing
        self.requests = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._nc, name)

    def jetstream(self, **options: Any) -> Any:
        return _NoRoundTrip(self._nc.jetstream(**options))

    async def request(self, subject: str, payload: bytes, timeout: float = 0) -> Msg:  # noqa: ASYNC109
        self.requests += 1
        if self.requests <= self._failing:
            raise NatsTimeoutError
        return await self._nc.request(subject, payload, timeout=timeout)


@pytest.mark.parametrize("failing", [0, 3], ids=["confirmed-at-once", "after-a-failed-round"])
async def test_acks_lost_before_their_confirmation_are_sent_again_as_confirmed_requests(
    *,
    analytics_pool: AsyncConnectionPool,
    jetstream: JS,
    bus: BusConfig,
    make_event: Any,
    drained: Any,
    monkeypatch: pytest.MonkeyPatch,
    failing: int,
) -> None:
    nc, js = jetstream
    site = uuid.uuid4()
    await publish_each(js, bus, [make_event(site, f"/lost-ack/{n}") for n in range(3)])

    async def lost(message: Msg) -> None:
        return None

    monkeypatch.setattr(Msg, "ack", lost)
    connection = AcksLost(nc, failing=failing)
    consumer = Consumer(connection, EventWriter(analytics_pool), bus, fetch_batch=8, fetch_timeout_s=0.2)  # type: ignore[arg-type]
    await run_until_drained([consumer], js, bus, drained)

    assert await count(analytics_pool, site) == 3
    assert consumer.transactions == 1
    # Every ack went out as a request (a failed round once more); without them the three
    # messages would still be pending and come back after the 2 s ack wait.
    assert connection.requests == 3 + failing
    info = await js.consumer_info(bus.stream, bus.consumer)
    assert (info.num_ack_pending, info.num_redelivered) == (0, 0)


async def test_stopping_while_retrying_releases_the_batch_for_redelivery(
    analytics_pool: AsyncConnectionPool, jetstream: JS, bus: BusConfig, make_event: Any, drained: Any
) -> None:
    nc, js = jetstream
    site = uuid.uuid4()
    await js.publish(bus.subject, bus_pb2.EventBatch(events=[make_event(site)]).SerializeToString())
    failing = Consumer(
        nc, FlakyWriter(EventWriter(analytics_pool), failures=10**6), bus, fetch_batch=1, fetch_timeout_s=0.2
    )
    task = asyncio.create_task(failing.run())
    for _ in range(200):  # until the batch is in hand and being retried
        if (await js.consumer_info(bus.stream, bus.consumer)).num_ack_pending:
            break
        await asyncio.sleep(0.05)
    failing.stop()
    await task
    assert failing.stored == 0
    # Released, not lost: the next consumer gets it at once and stores it.
    await run_until_drained([consumer_for(analytics_pool, nc, bus)], js, bus, drained)
    assert await count(analytics_pool, site) == 1


async def test_a_message_past_max_deliveries_becomes_a_dead_letter_and_replays(
    analytics_pool: AsyncConnectionPool, jetstream: JS, bus: BusConfig, make_event: Any, drained: Any
) -> None:
    nc, js = jetstream
    site = uuid.uuid4()
    batch = bus_pb2.EventBatch(events=[make_event(site, "/stuck")])
    published = await js.publish(bus.subject, batch.SerializeToString())
    # A processor that crashes on the message every time: fetched, never acked, max_deliver times.
    crashing = await js.pull_subscribe(bus.subject, durable=bus.consumer, stream=bus.stream)
    for _ in range(bus.max_deliver):
        messages = await crashing.fetch(1, timeout=10)
        assert messages[0].metadata.sequence.stream == published.seq
    # JetStream notices the exhausted message (and publishes the advisory) at its next delivery attempt,
    # which needs a waiting pull request.
    with pytest.raises(TimeoutError):
        await crashing.fetch(1, timeout=3)
    watcher = MaxDeliveriesWatcher(js, bus, fetch_timeout_s=0.2)
    task = asyncio.create_task(watcher.run())
    try:
        for _ in range(200):
            if watcher.dead_lettered:
                break
            await asyncio.sleep(0.05)
    finally:
        watcher.stop()
        await task
    [entry] = await dead_letters(js, bus)
    assert (entry.reason, entry.original_sequence, entry.deliveries) == ("max_deliveries", published.seq, 3)
    assert entry.error == "delivered 3 times without an acknowledgement"
    assert json.loads(json.dumps(entry.original_subject)) == bus.subject

    assert await deadletter.replay(js, bus.deadletter, entry.sequence, bus.subject)
    assert await dead_letters(js, bus) == []
    await run_until_drained([consumer_for(analytics_pool, nc, bus)], js, bus, drained)
    assert await count(analytics_pool, site) == 1


async def test_the_lag_gauges_show_the_durable_consumers_backlog(
    analytics_pool: AsyncConnectionPool, jetstream: JS, bus: BusConfig, make_event: Any, drained: Any
) -> None:
    nc, js = jetstream
    site = uuid.uuid4()
    await publish_each(js, bus, [make_event(site, f"/{index}") for index in range(7)])

    def gauges() -> tuple[float | None, float | None]:
        return (
            REGISTRY.get_sample_value("analytics_processor_consumer_lag_messages"),
            REGISTRY.get_sample_value("analytics_processor_consumer_ack_pending_messages"),
        )

    await metrics.read_consumer_state(js, bus)
    assert gauges() == (7, 0)
    # Delivered and not yet acknowledged: pending acks, no longer lag.
    subscription = await js.pull_subscribe(bus.subject, durable=bus.consumer, stream=bus.stream)
    fetched = await subscription.fetch(3, timeout=5)
    await metrics.read_consumer_state(js, bus)
    assert gauges() == (4, 3)
    for message in fetched:
        await message.ack()
    await subscription.unsubscribe()
    await run_until_drained([consumer_for(analytics_pool, nc, bus)], js, bus, drained)
    await metrics.read_consumer_state(js, bus)
    assert gauges() == (0, 0)
