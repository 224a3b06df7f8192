"""Ingest when things break: a NATS outage and a SIGTERM under load never lose an acknowledged event.

The promise under test (ARCHITECTURE "Reliability semantics"): an acknowledged event is durable and,
thanks to idempotent writes, stored exactly once; when the bus is down the caller gets UNAVAILABLE
(HTTP 503) within the publish timeout, never a silent drop; on SIGTERM in-flight requests finish.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import nats
import psycopg
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from analytics.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    events_pb2,
    ingest_pb2,
    ingest_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
)
from analytics_bus import BusConfig
from analytics_testing.grpc_errors import expect_error
from analytics_testing.nats import LocalNats
from analytics_testing.stack import ServiceStack

pytestmark = pytest.mark.integration

# FAILURE_ENV (conftest) sets ANALYTICS_PUBLISH_TIMEOUT_S=1; an UNAVAILABLE answer must come within
# that plus this much slack (auth lookup, group-commit delay, a busy 2-core machine).
PUBLISH_TIMEOUT_S = 1.0
SLACK_S = 2.5
# The caller's own deadline is far longer, so a hanging ingest shows as DEADLINE_EXCEEDED, not as a pass.
CALL_TIMEOUT_S = 15.0
# Clients reconnect quickly to a restarted server instead of grpc's default 1 s..120 s backoff.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Site:
    site_id: str
    api_key: str

    @property
    def metadata(self) -> Metadata:
        return (("x-api-key", self.api_key),)


async def new_site(stack: ServiceStack) -> Site:
    """A site with a key whose rate limit never gets in the way of these tests."""
    return Site(*await asyncio.to_thread(stack.create_site, "failure"))


def make_events(site: Site, path: str, count: int, *, timestamp: bool = True) -> list[events_pb2.Event]:
    """Events with client-chosen ids (and, by default, client timestamps), as a retrying client sends."""
    now = datetime.now(UTC).isoformat() if timestamp else ""
    return [
        events_pb2.Event(
            site_id=site.site_id,
            event_type="pageview",
            path=f"{path}/{i}",
            event_id=str(uuid.uuid4()),
            timestamp=now,
        )
        for i in range(count)
    ]


def ids(events: Sequence[events_pb2.Event]) -> list[str]:
    return [event.event_id for event in events]


async def stored_counts(database_url: str, site_id: str) -> Counter[str]:
    """How many rows analytics.events holds per event id of the site."""
    async with await psycopg.AsyncConnection.connect(database_url, connect_timeout=10) as conn:
        cursor = await conn.execute(
            "SELECT event_id::text, count(*) FROM analytics.events WHERE site_id = %s GROUP BY event_id",
            (site_id,),
        )
        return Counter({event_id: count for event_id, count in await cursor.fetchall()})


async def consumer_drained(nats_url: str) -> bool:
    """Whether the processor's durable consumer has nothing left to deliver or to ack."""
    bus = BusConfig()
    nc = await nats.connect(nats_url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0)
    try:
        info = await nc.jetstream(timeout=2).consumer_info(bus.stream, bus.consumer)
    finally:
        await nc.close()
    return info.num_pending == 0 and info.num_ack_pending == 0


async def counts_when_caught_up(
    stack: ServiceStack, site: Site, acknowledged: Sequence[str], timeout_s: float = 30.0
) -> Counter[str]:
    """Waits until every acknowledged event is stored and the processor's consumer is drained."""
    deadline = time.monotonic() + timeout_s
    counts: Counter[str] = Counter()
    while time.monotonic() < deadline:
        counts = await stored_counts(stack.database_url, site.site_id)
        if all(event_id in counts for event_id in acknowledged) and await consumer_drained(stack.nats_url):
            # A wrongly duplicated late redelivery would land within a few fetch cycles.
            await asyncio.sleep(0.5)
            return await stored_counts(stack.database_url, site.site_id)
        await asyncio.sleep(0.2)
    missing = [event_id for event_id in acknowledged if event_id not in counts]
    pytest.fail(f"{len(missing)} of {len(acknowledged)} acknowledged events not stored after {timeout_s} s")


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.1)


async def grpc_code(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def answers(call: Awaitable[Any], expected: Any) -> bool:
    """Whether an awaited status (a gRPC code or an HTTP status) is the expected one."""
    return await call == expected


async def until_ok(send: Callable[[], Awaitable[Any]], what: str, timeout_s: float = 30.0) -> Any:
    """A client's retry loop: the same request again until it is acknowledged (bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await send()
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                pytest.fail(f"{what}: {error.code()} {error.details()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{what} still UNAVAILABLE after {timeout_s} s: {error.details()}")
        await asyncio.sleep(0.2)


def assert_exactly_once(counts: Counter[str], acknowledged: Sequence[str]) -> None:
    assert len(set(acknowledged)) == len(acknowledged)
    missing = [event_id for event_id in acknowledged if counts[event_id] != 1]
    assert not missing, f"acknowledged events not stored exactly once: {[(i, counts[i]) for i in missing]}"
    duplicated = {event_id: n for event_id, n in counts.items() if n != 1}
    assert not duplicated, f"events stored more than once: {duplicated}"


async def test_nats_outage_grpc_unavailable_then_every_acknowledged_event_stored_once(
    private_nats: LocalNats, private_stack: Callable[..., ServiceStack]
) -> None:
    stack = private_stack(nats_url=private_nats.url)
    site = await new_site(stack)
    acknowledged: list[str] = []
    async with grpc.aio.insecure_channel(stack.addresses["ingest"], options=CHANNEL_OPTIONS) as channel:
        ingest = ingest_pb2_grpc.IngestServiceStub(channel)

        def track_batch(events: list[events_pb2.Event]) -> Any:
            return ingest.TrackBatch(
                ingest_pb2.TrackBatchRequest(events=events), metadata=site.metadata, timeout=CALL_TIMEOUT_S
            )

        def health() -> Any:
            return ingest.GetHealth(ingest_pb2.GetHealthRequest(), timeout=5)

        for batch in range(5):
            events = make_events(site, f"/before/{batch}", 20)
            reply = await track_batch(events)
            assert list(reply.event_ids) == ids(events) and reply.accepted == 20
            acknowledged += reply.event_ids
        assert (await health()).status == "ok"

        private_nats.stop()
        await eventually(
            lambda: answers(grpc_code(health()), grpc.StatusCode.UNAVAILABLE), "GetHealth reports UNAVAILABLE"
        )
        rejected: list[list[events_pb2.Event]] = []
        for batch in range(4):
            events = make_events(site, f"/during/{batch}", 20)
            started = time.monotonic()
            code = await grpc_code(track_batch(events))
            elapsed = time.monotonic() - started
            assert code == grpc.StatusCode.UNAVAILABLE
            assert elapsed < PUBLISH_TIMEOUT_S + SLACK_S, f"UNAVAILABLE only after {elapsed:.1f} s"
            rejected.append(events)
        single = make_events(site, "/during/single", 1)[0]
        started = time.monotonic()
        code = await grpc_code(
            ingest.Track(
                ingest_pb2.TrackRequest(event=single), metadata=site.metadata, timeout=CALL_TIMEOUT_S
            )
        )
        assert code == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < PUBLISH_TIMEOUT_S + SLACK_S
        assert stack.processes["ingest"].running, "ingest must ride out a NATS outage"

        private_nats.start()
        # Every rejected request is retried with the same events (same ids) until acknowledged.
        for events in rejected:
            reply = await until_ok(lambda events=events: track_batch(events), "retried batch")
            assert list(reply.event_ids) == ids(events)
            acknowledged += reply.event_ids
        reply = await until_ok(
            lambda: ingest.Track(
                ingest_pb2.TrackRequest(event=single), metadata=site.metadata, timeout=CALL_TIMEOUT_S
            ),
            "retried event",
        )
        assert reply.event_id == single.event_id
        acknowledged.append(reply.event_id)
        await eventually(lambda: answers(grpc_code(health()), grpc.StatusCode.OK), "GetHealth reports ok")
        for batch in range(5):
            reply = await track_batch(make_events(site, f"/after/{batch}", 20))
            acknowledged += reply.event_ids

    counts = await counts_when_caught_up(stack, site, acknowledged)
    assert len(acknowledged) == 5 * 20 + 4 * 20 + 1 + 5 * 20
    assert_exactly_once(counts, acknowledged)
    assert sum(counts.values()) == len(acknowledged)


async def test_nats_outage_http_503_then_every_acknowledged_event_stored_once(
    private_nats: LocalNats, private_stack: Callable[..., ServiceStack]
) -> None:
    stack = private_stack(nats_url=private_nats.url, with_edge=True)
    site = await new_site(stack)
    headers = {"x-api-key": site.api_key}
    acknowledged: list[str] = []

    def body(event: events_pb2.Event) -> dict[str, str]:
        return {
            "site_id": event.site_id,
            "event_type": event.event_type,
            "path": event.path,
            "event_id": event.event_id,
            "timestamp": event.timestamp,
        }

    timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
    async with aiohttp.ClientSession(base_url=stack.http_url, timeout=timeout) as http:

        async def post(event: events_pb2.Event) -> tuple[int, dict[str, Any]]:
            async with http.post("/api/event", json=body(event), headers=headers) as response:
                assert response.content_type == "application/json", await response.text()
                return response.status, await response.json()

        async def health_status() -> int:
            async with http.get("/health") as response:
                return response.status

        for event in make_events(site, "/before", 10):
            status, reply = await post(event)
            assert status == 200, reply
            assert reply["event_id"] == event.event_id
            acknowledged.append(event.event_id)
        assert await health_status() == 200

        private_nats.stop()

        await eventually(lambda: answers(health_status(), 503), "GET /health answers 503")
        async with http.get("/health") as response:
            error = await response.json()
        assert error["code"] == grpc.StatusCode.UNAVAILABLE.value[0] and error["message"]

        rejected = make_events(site, "/during", 5)
        for event in rejected:
            started = time.monotonic()
            status, reply = await post(event)
            elapsed = time.monotonic() - started
            assert status == 503, reply
            assert reply["code"] == grpc.StatusCode.UNAVAILABLE.value[0] and reply["message"]
            assert elapsed < PUBLISH_TIMEOUT_S + SLACK_S, f"503 only after {elapsed:.1f} s"
        for batch_route in ("/v1/events:batch", "/api/events/batch"):
            events = make_events(site, "/during-batch", 3)
            payload: Any = [body(e) for e in events]
            if batch_route == "/v1/events:batch":
                payload = {"events": payload}
            async with http.post(batch_route, json=payload, headers=headers) as response:
                assert response.status == 503, await response.text()
            rejected += events

        private_nats.start()
        for event in rejected:
            deadline = time.monotonic() + 30
            while True:
                status, reply = await post(event)
                if status == 200:
                    break
                assert status == 503, reply
                assert time.monotonic() < deadline, "ingestion did not resume within 30 s"
                await asyncio.sleep(0.2)
            assert reply["event_id"] == event.event_id
            acknowledged.append(event.event_id)
        await eventually(lambda: answers(health_status(), 200), "GET /health answers 200 again")
        for event in make_events(site, "/after", 10):
            status, reply = await post(event)
            assert status == 200, reply
            acknowledged.append(event.event_id)

    counts = await counts_when_caught_up(stack, site, acknowledged)
    assert len(acknowledged) == 10 + 5 + 6 + 10
    assert_exactly_once(counts, acknowledged)


async def test_nats_outage_retry_without_client_timestamp_is_counted_once(
    private_nats: LocalNats, private_stack: Callable[..., ServiceStack]
) -> None:
    """A browser-like client sends no timestamp; retrying an UNAVAILABLE event must still count once.

    The event that got UNAVAILABLE may have reached the stream anyway (the NATS client buffers it
    and sends it after reconnecting); the retry with the same event_id must not add a second row.
    """
    stack = private_stack(nats_url=private_nats.url)
    site = await new_site(stack)
    async with grpc.aio.insecure_channel(stack.addresses["ingest"], options=CHANNEL_OPTIONS) as channel:
        ingest = ingest_pb2_grpc.IngestServiceStub(channel)
        events = make_events(site, "/retry", 5, timestamp=False)

        def track(event: events_pb2.Event) -> Any:
            return ingest.Track(
                ingest_pb2.TrackRequest(event=event), metadata=site.metadata, timeout=CALL_TIMEOUT_S
            )

        private_nats.stop()
        for event in events:
            assert await grpc_code(track(event)) == grpc.StatusCode.UNAVAILABLE
        private_nats.start()
        await asyncio.sleep(1.1)  # the retry comes a moment later, as a real client's would
        for event in events:
            await until_ok(lambda event=event: track(event), "retried event")

    counts = await counts_when_caught_up(stack, site, ids(events))
    assert_exactly_once(counts, ids(events))


# --- SIGTERM under load -------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    event_ids: tuple[str, ...]
    started: float
    ended: float
    code: grpc.StatusCode


def nats_pid(server: LocalNats) -> int:
    """The pid of this test's own nats-server, found by the config file only it was started with."""
    conf = str(server.data_dir / "nats-server.conf").encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if conf in argv:
            return int(entry.name)
    raise LookupError(f"no nats-server running with {conf.decode()}")


async def test_ingest_sigterm_under_load_finishes_in_flight_requests(
    private_nats: LocalNats, private_stack: Callable[..., ServiceStack]
) -> None:
    # PubAcks may take a while below (NATS is paused on purpose): give them time, not a timeout.
    stack = private_stack(nats_url=private_nats.url, extra_env={"ANALYTICS_PUBLISH_TIMEOUT_S": "10"})
    site = await new_site(stack)
    ingest_process = stack.processes["ingest"]
    clients, batch_size = 4, 50
    outcomes: list[Outcome] = []
    stop = asyncio.Event()

    async def client(number: int) -> None:
        async with grpc.aio.insecure_channel(stack.addresses["ingest"], options=CHANNEL_OPTIONS) as channel:
            ingest = ingest_pb2_grpc.IngestServiceStub(channel)
            for request in range(5000):  # bounded; normally ended by `stop`
                if stop.is_set():
                    return
                events = make_events(site, f"/load/{number}/{request}", batch_size)
                started = time.monotonic()
                code = await grpc_code(
                    ingest.TrackBatch(
                        ingest_pb2.TrackBatchRequest(events=events),
                        metadata=site.metadata,
                        timeout=CALL_TIMEOUT_S,
                    )
                )
                outcomes.append(Outcome(tuple(ids(events)), started, time.monotonic(), code))
                if code != grpc.StatusCode.OK:
                    await asyncio.sleep(0.05)

    def ok_since(moment: float) -> int:
        return sum(1 for o in outcomes if o.code == grpc.StatusCode.OK and o.started > moment)

    async def enough(moment: float, count: int) -> bool:
        return ok_since(moment) >= count

    tasks = [asyncio.create_task(client(n)) for n in range(clients)]
    try:
        await eventually(lambda: enough(0, 40), "40 acknowledged requests before the signal", 20)

        # Pausing nats-server holds every client's current request at "waiting for the PubAck", so
        # each one is certainly inside ingest when SIGTERM arrives; resuming it lets them finish.
        pid = nats_pid(private_nats)
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(0.5)
            sigterm_at = time.monotonic()
            ingest_process.signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
        finally:
            os.kill(pid, signal.SIGCONT)
        exit_code = await asyncio.to_thread(ingest_process.wait, 20)
        assert exit_code == 0, f"ingest exited with {exit_code}:\n{ingest_process.log_tail()}"
        exited_at = time.monotonic()

        ingest_process.start()
        await asyncio.to_thread(stack.wait_ready, 30, ["ingest"])
        restarted_at = time.monotonic()
        await eventually(lambda: enough(restarted_at, 20), "20 acknowledged requests after restart", 20)
    finally:
        stop.set()
        await asyncio.gather(*tasks)

    codes = Counter(o.code for o in outcomes)
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    # Requests sent well before the signal were inside ingest when it came: all must succeed.
    held = [o for o in outcomes if o.started < sigterm_at - 0.25 and o.ended > sigterm_at]
    assert len(held) == clients, held
    assert all(o.code == grpc.StatusCode.OK for o in held), [o.code for o in held]
    # They finished after NATS resumed, i.e. they were drained, not cut off at the signal.
    assert all(o.ended > sigterm_at + 0.45 for o in held)
    assert all(o.code == grpc.StatusCode.OK for o in outcomes if o.ended < sigterm_at)
    assert not [o for o in outcomes if o.code == grpc.StatusCode.OK and sigterm_at < o.started < exited_at]
    assert codes[grpc.StatusCode.UNAVAILABLE] > 0, "no request saw ingest down: the test proved nothing"

    acknowledged = [i for o in outcomes if o.code == grpc.StatusCode.OK for i in o.event_ids]
    counts = await counts_when_caught_up(stack, site, acknowledged)
    assert_exactly_once(counts, acknowledged)
    # A request is stored whole or not at all, even when it was not acknowledged.
    for outcome in outcomes:
        stored = sum(counts[i] for i in outcome.event_ids)
        assert stored in (0, batch_size), (outcome, stored)


async def test_paused_bus_answers_every_request_in_time_fails_fast_and_turns_health_down(
    private_nats: LocalNats, private_stack: Callable[..., ServiceStack]
) -> None:
    """nats-server paused (SIGSTOP) keeps its connections open: the client sees nothing wrong by
    itself. Every request must still be answered within the publish timeout, health must turn
    NOT_SERVING / 503 while the bus does not answer, requests meanwhile must fail at once, and events
    answered UNAVAILABLE and retried with their ids must be stored exactly once."""
    publish_timeout_s, probe_s = 2.0, 0.5
    stack = private_stack(
        nats_url=private_nats.url,
        with_edge=True,
        extra_env={
            "ANALYTICS_PUBLISH_TIMEOUT_S": str(publish_timeout_s),
            "ANALYTICS_BUS_PROBE_INTERVAL_S": str(probe_s),
            "ANALYTICS_BUS_PROBE_TIMEOUT_S": str(probe_s),
        },
    )
    site = await new_site(stack)
    acknowledged: list[str] = []
    outcomes: list[Outcome] = []
    sent: dict[tuple[str, ...], list[events_pb2.Event]] = {}
    async with (
        grpc.aio.insecure_channel(stack.addresses["ingest"], options=CHANNEL_OPTIONS) as channel,
        aiohttp.ClientSession(base_url=stack.http_url) as http,
    ):
        ingest = ingest_pb2_grpc.IngestServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)

        async def serving() -> Any:
            return (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status

        async def http_health() -> int:
            async with http.get("/health") as response:
                return response.status

        async def head_health() -> int:
            # Answered by Envoy from its own health checks of ingest (every 2 s, down after two).
            async with http.head("/health") as response:
                return response.status

        async def send(events: list[events_pb2.Event]) -> Outcome:
            started = time.monotonic()
            code = await grpc_code(
                ingest.TrackBatch(
                    ingest_pb2.TrackBatchRequest(events=events),
                    metadata=site.metadata,
                    timeout=CALL_TIMEOUT_S,
                )
            )
            outcome = Outcome(tuple(ids(events)), started, time.monotonic(), code)
            outcomes.append(outcome)
            sent[outcome.event_ids] = events
            return outcome

        for batch in range(3):
            assert (await send(make_events(site, f"/before/{batch}", 10))).code == grpc.StatusCode.OK
        assert await serving() == health_pb2.HealthCheckResponse.SERVING

        pid = nats_pid(private_nats)
        os.kill(pid, signal.SIGSTOP)
        paused_at = time.monotonic()
        try:
            # Callers keep sending through the pause, several at once, for twice the publish timeout.
            async def caller(number: int) -> None:
                request = 0
                while time.monotonic() - paused_at < 2 * publish_timeout_s and request < 200:
                    await send(make_events(site, f"/during/{number}/{request}", 10))
                    request += 1

            await asyncio.gather(*(caller(n) for n in range(4)))
            await eventually(
                lambda: answers(serving(), health_pb2.HealthCheckResponse.NOT_SERVING), "ingest NOT_SERVING"
            )
            await eventually(lambda: answers(http_health(), 503), "GET /health answers 503")
            await eventually(lambda: answers(head_health(), 503), "HEAD /health answers 503", 15)
            # Known down: an answer at once, not after waiting out a publish.
            fast = await send(make_events(site, "/during/known-down", 10))
            assert fast.code == grpc.StatusCode.UNAVAILABLE
            assert fast.ended - fast.started < publish_timeout_s / 2, fast
        finally:
            os.kill(pid, signal.SIGCONT)
        during = [o for o in outcomes if o.started >= paused_at]
        assert len(during) > 4
        slow = [o for o in during if o.ended - o.started > publish_timeout_s + SLACK_S]
        assert not slow, f"answered later than the publish timeout allows: {slow}"
        assert {o.code for o in during} <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
        assert any(o.code == grpc.StatusCode.UNAVAILABLE for o in during), "the pause was never noticed"

        await eventually(lambda: answers(serving(), health_pb2.HealthCheckResponse.SERVING), "SERVING again")
        await eventually(lambda: answers(http_health(), 200), "GET /health answers 200 again")
        await eventually(lambda: answers(head_health(), 200), "HEAD /health answers 200 again", 15)
        # The client's retry, as the README says: the same events again, with their ids.
        for outcome in outcomes:
            if outcome.code == grpc.StatusCode.OK:
                acknowledged += outcome.event_ids
                continue
            events = sent[outcome.event_ids]
            await until_ok(
                lambda events=events: ingest.TrackBatch(
                    ingest_pb2.TrackBatchRequest(events=events),
                    metadata=site.metadata,
                    timeout=CALL_TIMEOUT_S,
                ),
                "retried batch",
            )
            acknowledged += outcome.event_ids

    counts = await counts_when_caught_up(stack, site, acknowledged)
    assert_exactly_once(counts, acknowledged)


async def test_a_revoked_key_is_refused_everywhere_within_a_second_despite_the_cache(
    private_stack: Callable[..., ServiceStack],
) -> None:
    """Ingest and query cache key look-ups for 30 s here; auth's revocation announcement must end
    the key in both at once, well inside that TTL."""
    cache_ttl_s, bound_s = 30.0, 1.0
    stack = private_stack(extra_env={"ANALYTICS_AUTH_CACHE_TTL_S": str(cache_ttl_s)})
    site = await new_site(stack)
    admin = (("authorization", f"Bearer {stack.admin_token}"),)
    async with (
        grpc.aio.insecure_channel(stack.addresses["ingest"]) as ingest_channel,
        grpc.aio.insecure_channel(stack.addresses["query"]) as query_channel,
        grpc.aio.insecure_channel(stack.addresses["auth"]) as auth_channel,
    ):
        ingest = ingest_pb2_grpc.IngestServiceStub(ingest_channel)
        query = query_pb2_grpc.QueryServiceStub(query_channel)
        auth = auth_pb2_grpc.AuthServiceStub(auth_channel)
        key = await auth.CreateApiKey(
            auth_pb2.CreateApiKeyRequest(
                site_id=site.site_id, scopes=[auth_pb2.SCOPE_INGEST, auth_pb2.SCOPE_READ]
            ),
            metadata=admin,
        )
        metadata = (("x-api-key", key.api_key),)

        def track() -> Any:
            event = make_events(site, "/revoked", 1)[0]
            return ingest.Track(ingest_pb2.TrackRequest(event=event), metadata=metadata, timeout=5)

        def stats() -> Any:
            return query.GetDailyStats(
                query_pb2.GetDailyStatsRequest(site_id=site.site_id), metadata=metadata, timeout=5
            )

        # Both services now hold the key's look-up in their caches.
        assert await grpc_code(track()) == grpc.StatusCode.OK
        assert await grpc_code(stats()) == grpc.StatusCode.OK

        await auth.RevokeApiKey(auth_pb2.RevokeApiKeyRequest(key_id=key.key.key_id), metadata=admin)
        revoked_at = time.monotonic()
        refused: dict[str, float] = {}
        while len(refused) < 2 and time.monotonic() - revoked_at < cache_ttl_s / 2:
            for name, call in (("ingest", track), ("query", stats)):
                if name not in refused and await grpc_code(call()) == grpc.StatusCode.UNAUTHENTICATED:
                    refused[name] = time.monotonic() - revoked_at
            await asyncio.sleep(0.02)
    assert set(refused) == {"ingest", "query"}, refused
    assert max(refused.values()) < bound_s, refused


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    return None


async def test_unacknowledged_events_carry_their_ids_and_a_retry_with_them_counts_once(
    private_nats: LocalNats, private_stack: Callable[..., ServiceStack]
) -> None:
    """A client that sends neither ids nor timestamps (a browser) gets the ids the server gave its
    events in the UNAVAILABLE error; the README's retry, the same events with those ids, stores
    each event once, including those that reached the stream before the error."""
    stack = private_stack(nats_url=private_nats.url)
    site = await new_site(stack)
    async with grpc.aio.insecure_channel(stack.addresses["ingest"], options=CHANNEL_OPTIONS) as channel:
        ingest = ingest_pb2_grpc.IngestServiceStub(channel)
        singles = [
            events_pb2.Event(site_id=site.site_id, event_type="pageview", path=f"/anonymous/{i}")
            for i in range(3)
        ]
        batch = [
            events_pb2.Event(site_id=site.site_id, event_type="pageview", path=f"/anonymous/batch/{i}")
            for i in range(4)
        ]
        private_nats.stop()
        failed: list[tuple[list[events_pb2.Event], list[str]]] = []
        calls = [
            (
                [event],
                ingest.Track(
                    ingest_pb2.TrackRequest(event=event), metadata=site.metadata, timeout=CALL_TIMEOUT_S
                ),
            )
            for event in singles
        ]
        calls.append(
            (
                batch,
                ingest.TrackBatch(
                    ingest_pb2.TrackBatchRequest(events=batch), metadata=site.metadata, timeout=CALL_TIMEOUT_S
                ),
            )
        )
        for events, call in calls:
            error = await expect_error(call, grpc.StatusCode.UNAVAILABLE)
            info = error_info(error)
            assert info is not None, error.details()
            assert (info.reason, info.domain) == ("EVENTS_NOT_ACKNOWLEDGED", "analytics.v1")
            failed.append((events, info.metadata["event_ids"].split(",")))
        private_nats.start()
        acknowledged: list[str] = []
        for events, event_ids in failed:
            assert len(event_ids) == len(events) and all(uuid.UUID(i) for i in event_ids)
            retried = [
                events_pb2.Event(site_id=e.site_id, event_type=e.event_type, path=e.path, event_id=i)
                for e, i in zip(events, event_ids, strict=True)
            ]
            reply = await until_ok(
                lambda retried=retried: ingest.TrackBatch(
                    ingest_pb2.TrackBatchRequest(events=retried),
                    metadata=site.metadata,
                    timeout=CALL_TIMEOUT_S,
                ),
                "retried events",
            )
            assert list(reply.event_ids) == event_ids
            acknowledged += event_ids

    counts = await counts_when_caught_up(stack, site, acknowledged)
    assert_exactly_once(counts, acknowledged)
    assert sum(counts.values()) == len(singles) + len(batch)
