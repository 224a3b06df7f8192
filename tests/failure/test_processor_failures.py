"""The processor as a real process under failure: SIGKILL, a PostgreSQL outage, poison messages.

Each test runs ``python -m processor_service`` against a NATS server of its own (the stream names are
the production defaults) and checks exact counts afterwards: every published event stored once, and
sessions equal to a recomputation from the stored events.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import nats
import psycopg
import pytest
from nats.js import JetStreamContext

from analytics.v1 import bus_pb2, processor_pb2, processor_pb2_grpc
from analytics_bus import BusConfig
from analytics_testing.plugin import NatsFactory
from analytics_testing.ports import free_port
from analytics_testing.postgres import LocalPostgres
from analytics_testing.stack import ServiceProcess, grpc_serving
from processor_service.sessions import RECOMPUTE, SESSION_GAP, STORED

pytestmark = pytest.mark.integration

BUS = BusConfig()
ADMIN_TOKEN = "failure-admin-" + secrets.token_hex(16)
T0 = datetime(2024, 4, 1, 10, tzinfo=UTC)


# ---------------------------------------------------------------- fixtures (this module's own)


@pytest.fixture
def processor_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    """A PostgreSQL+TimescaleDB cluster of this test only, so it can be stopped and started."""
    server = LocalPostgres(tmp_path_factory.mktemp("processor-pg") / "data", free_port(), durable=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def processor_nats_url(nats_factory: NatsFactory) -> str:
    """A nats-server of this test only: the processor uses the default stream and consumer names."""
    return nats_factory().url


Start = Callable[..., ServiceProcess]


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Start]:
    """start_service(module, env) runs ``python -m module``; every process is killed at teardown."""
    started: list[ServiceProcess] = []

    def start(module: str, env: dict[str, str], name: str | None = None) -> ServiceProcess:
        base = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
        label = name or f"{module}-{len(started)}"
        process = ServiceProcess(label, module, {**base, **env}, tmp_path / f"{label}.log")
        process.start()
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.stop(5)


@pytest.fixture
async def bus(processor_nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(processor_nats_url)
    yield nc.jetstream()
    await nc.close()


def processor_env(database_url: str, nats_url: str, **extra: str) -> dict[str, str]:
    return {
        "ANALYTICS_DATABASE_URL": database_url,
        "ANALYTICS_NATS_URL": nats_url,
        "ANALYTICS_GRPC_LISTEN": f"127.0.0.1:{free_port()}",
        "ANALYTICS_AUTH_ADDR": extra.pop("auth_addr", "127.0.0.1:9"),
        "ANALYTICS_PROCESSOR_FETCH_TIMEOUT_S": "0.1",
        "ANALYTICS_PROCESSOR_FETCH_BATCH": "16",
        # A killed processor's messages come back after 3 s instead of a minute.
        "ANALYTICS_PROCESSOR_REDELIVERY_BACKOFF_S": "3",
        "ANALYTICS_PROCESSOR_RETRY_DELAY_S": "0.1",
        "ANALYTICS_PROCESSOR_RETRY_MAX_DELAY_S": "1",
        "ANALYTICS_LOG_LEVEL": "INFO",
        **extra,
    }


# ---------------------------------------------------------------- helpers


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


async def serving(process: ServiceProcess) -> bool:
    if not process.running:
        pytest.fail(f"{process.name} exited:\n{process.log_tail()}")
    return await asyncio.to_thread(grpc_serving, process.env["ANALYTICS_GRPC_LISTEN"])


def batch(site: uuid.UUID, number: int, size: int) -> bus_pb2.EventBatch:
    """Batch ``number``: events of 12 visitors, a second apart in publication order."""
    events = []
    for i in range(size):
        n = number * size + i
        event = bus_pb2.EnrichedEvent(
            event_id=uuid.UUID(int=(site.int ^ n) & ((1 << 128) - 1)).bytes,
            site_id=site.bytes,
            kind=bus_pb2.EVENT_KIND_PAGEVIEW if n % 5 else bus_pb2.EVENT_KIND_CUSTOM,
            name="pageview" if n % 5 else "signup",
            path=f"/p{n % 9}",
            visitor_id=1 + n % 12,
            is_bot=n % 31 == 0,
        )
        event.occurred_at.FromDatetime(T0 + timedelta(seconds=n))
        event.received_at.FromDatetime(T0 + timedelta(seconds=n))
        events.append(event)
    return bus_pb2.EventBatch(batch_id=f"{site}-{number}", events=events)


async def publish(js: JetStreamContext, message: bus_pb2.EventBatch | bytes) -> int:
    data = message if isinstance(message, bytes) else message.SerializeToString()
    ack = await js.publish(BUS.subject, data, headers={"Nats-Msg-Id": uuid.uuid4().hex})
    return int(ack.seq)


async def query(url: str, sql: str, *params: Any) -> Any:
    async with await psycopg.AsyncConnection.connect(url, connect_timeout=5) as conn:
        cur = await conn.execute(sql, params)  # type: ignore[arg-type]
        return await cur.fetchone()


async def stored(url: str, site: uuid.UUID) -> int:
    try:
        row = await query(url, "SELECT count(*) FROM analytics.events WHERE site_id = %s", site)
    except psycopg.Error:
        return -1  # database down or not migrated yet
    return int(row[0])


async def assert_exact(url: str, site: uuid.UUID, expected: int) -> None:
    row = await query(
        url, "SELECT count(*), count(DISTINCT event_id) FROM analytics.events WHERE site_id = %s", site
    )
    assert tuple(row) == (expected, expected)
    async with await psycopg.AsyncConnection.connect(url) as conn:
        kept = await (await conn.execute(STORED, {"sites": [site]})).fetchall()
        fresh = await (await conn.execute(RECOMPUTE, {"sites": [site], "gap": SESSION_GAP})).fetchall()
    assert kept == fresh
    assert kept


async def drained(js: JetStreamContext) -> bool:
    info = await js.consumer_info(BUS.stream, BUS.consumer)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def dead_letter_count(js: JetStreamContext) -> int:
    return int((await js.stream_info(BUS.deadletter.stream)).state.messages)


# ---------------------------------------------------------------- (a) SIGKILL


async def test_sigkill_mid_stream_then_restart_stores_every_event_once(
    database_url: str, processor_nats_url: str, bus: JetStreamContext, start_service: Start
) -> None:
    site = uuid.uuid4()
    # The deployment's own redelivery settings: how soon a crashed processor's work comes back.
    default_backoff = BusConfig().backoff_s
    env = processor_env(
        database_url,
        processor_nats_url,
        ANALYTICS_PROCESSOR_REDELIVERY_BACKOFF_S=",".join(str(s) for s in default_backoff),
    )
    processor = start_service("processor_service", env, "processor-a")
    await eventually(lambda: serving(processor), 30, "the processor to serve")

    batches, size = 240, 50

    async def publisher() -> None:
        for number in range(batches):
            await publish(bus, batch(site, number, size))
            await asyncio.sleep(0.01)

    publishing = asyncio.create_task(publisher())
    await eventually(lambda: _more_than(database_url, site, 2000), 20, "the first events to be stored")
    processor.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    assert processor.wait(5) == -signal.SIGKILL
    at_kill = await stored(database_url, site)
    await publishing
    assert at_kill < batches * size, "killed too late to prove anything"

    restarted = start_service("processor_service", env, "processor-b")
    # The messages the killed processor held come back after the ack wait (the first backoff step);
    # the bound for a crashed processor's work is 15 s.
    recovery_s = default_backoff[0] + 5
    assert recovery_s <= 15
    await eventually(
        lambda: _more_than(database_url, site, batches * size - 1), recovery_s, "every event stored"
    )
    assert time.monotonic() - killed_at < recovery_s
    await eventually(lambda: drained(bus), 10, "the consumer to drain")
    await assert_exact(database_url, site, batches * size)
    assert await dead_letter_count(bus) == 0
    assert restarted.running


async def _more_than(url: str, site: uuid.UUID, count: int) -> bool:
    return await stored(url, site) > count


# ---------------------------------------------------------------- (b) PostgreSQL outage


async def test_postgres_outage_backs_off_goes_not_serving_and_catches_up(
    processor_pg: LocalPostgres, processor_nats_url: str, bus: JetStreamContext, start_service: Start
) -> None:
    site = uuid.uuid4()
    url = processor_pg.url
    processor = start_service("processor_service", processor_env(url, processor_nats_url), "processor")
    await eventually(lambda: serving(processor), 30, "the processor to serve")

    batches, size = 120, 40
    outage = asyncio.Event()

    async def publisher() -> None:
        for number in range(batches):
            await publish(bus, batch(site, number, size))
            if number == 20:
                outage.set()
            await asyncio.sleep(0.05)

    publishing = asyncio.create_task(publisher())
    await outage.wait()
    processor_pg.stop()
    await eventually(lambda: _not(serving(processor)), 15, "health NOT_SERVING")
    await asyncio.sleep(3)  # batches keep arriving; the processor keeps them in hand and retries
    assert processor.running
    processor_pg.start()
    await publishing
    await eventually(lambda: serving(processor), 20, "health SERVING again")
    await eventually(lambda: _more_than(url, site, batches * size - 1), 20, "every event stored")
    await eventually(lambda: drained(bus), 10, "the consumer to drain")
    await assert_exact(url, site, batches * size)
    assert await dead_letter_count(bus) == 0
    info = await bus.consumer_info(BUS.stream, BUS.consumer)
    assert info.num_redelivered == 0, "a batch was handed back instead of kept in hand"
    log = processor.log_path.read_text()
    assert "database write failed, retrying" in log
    assert "health NOT_SERVING" in log


async def _not(check: Awaitable[bool]) -> bool:
    return not await check


# ---------------------------------------------------------------- (c) poison messages


async def test_poison_goes_to_dead_letters_the_rest_flows_and_replay_works(
    database_url: str, processor_nats_url: str, bus: JetStreamContext, start_service: Start
) -> None:
    site = uuid.uuid4()
    auth_env = {
        "ANALYTICS_DATABASE_URL": database_url,
        "ANALYTICS_GRPC_LISTEN": f"127.0.0.1:{free_port()}",
        "ANALYTICS_ADMIN_TOKEN": ADMIN_TOKEN,
        "ANALYTICS_INTERNAL_TOKEN": "failure-internal-" + secrets.token_hex(16),
        "ANALYTICS_NATS_URL": processor_nats_url,
    }
    auth = start_service("auth_service", auth_env, "auth")
    env = processor_env(database_url, processor_nats_url, auth_addr=auth_env["ANALYTICS_GRPC_LISTEN"])
    processor = start_service("processor_service", env, "processor")
    await eventually(lambda: serving(auth), 30, "auth to serve")
    await eventually(lambda: serving(processor), 30, "the processor to serve")
    # A rule the events break today and that will be lifted: their dead letter is "valid after all".
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("ALTER TABLE analytics.events ADD CONSTRAINT no_boom CHECK (path <> '/boom')")

    boom = batch(site, 1000, 3)
    for event in boom.events:
        event.path = "/boom"
    invalid = batch(site, 2000, 2)
    invalid.events[1].ClearField("occurred_at")
    await publish(bus, batch(site, 0, 20))
    undecodable_seq = await publish(bus, b"\x08\x96\x01 definitely not an EventBatch \xff")
    await publish(bus, batch(site, 1, 20))
    boom_seq = await publish(bus, boom)
    invalid_seq = await publish(bus, invalid)
    for number in range(2, 10):
        await publish(bus, batch(site, number, 20))

    await eventually(lambda: _more_than(database_url, site, 10 * 20 - 1), 20, "the valid batches stored")
    await eventually(lambda: drained(bus), 10, "the consumer to drain")
    await eventually(lambda: _dead_letters_at_least(bus, 3), 10, "three dead letters")
    assert await stored(database_url, site) == 200

    async with grpc.aio.insecure_channel(env["ANALYTICS_GRPC_LISTEN"]) as channel:
        stub = processor_pb2_grpc.ProcessorServiceStub(channel)  # type: ignore[no-untyped-call]
        metadata = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
        listing = await stub.ListDeadLetters(processor_pb2.ListDeadLettersRequest(), metadata=metadata)
        entries = {entry.original_sequence: entry for entry in listing.dead_letters}
        assert set(entries) == {undecodable_seq, boom_seq, invalid_seq}
        assert entries[undecodable_seq].reason == processor_pb2.DEAD_LETTER_REASON_UNDECODABLE
        assert not entries[undecodable_seq].HasField("event_count")
        assert entries[boom_seq].reason == processor_pb2.DEAD_LETTER_REASON_REJECTED
        assert "no_boom" in entries[boom_seq].first_error
        assert entries[boom_seq].event_count == 3
        assert entries[invalid_seq].reason == processor_pb2.DEAD_LETTER_REASON_INVALID
        assert entries[invalid_seq].first_error == "events[1].occurred_at is missing"
        assert all(e.subject == BUS.subject and e.time.seconds > 0 for e in entries.values())

        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            await conn.execute("ALTER TABLE analytics.events DROP CONSTRAINT no_boom")
        reply = await stub.ReplayDeadLetters(
            processor_pb2.ReplayDeadLettersRequest(sequences=[entries[boom_seq].sequence]), metadata=metadata
        )
        assert (reply.replayed, list(reply.not_found)) == (1, [])
        await eventually(
            lambda: _more_than(database_url, site, 200 + 3 - 1), 15, "the replayed events stored"
        )
        await eventually(lambda: drained(bus), 10, "the consumer to drain")
        listing = await stub.ListDeadLetters(processor_pb2.ListDeadLettersRequest(), metadata=metadata)
        assert {e.original_sequence for e in listing.dead_letters} == {undecodable_seq, invalid_seq}
    await assert_exact(database_url, site, 203)


async def _dead_letters_at_least(js: JetStreamContext, count: int) -> bool:
    return await dead_letter_count(js) >= count
