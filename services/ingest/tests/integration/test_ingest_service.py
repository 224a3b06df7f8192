"""Ingest through a real gRPC server, a real auth service and real NATS JetStream."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import grpc
import nats
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from analytics.v1 import auth_pb2, bus_pb2, events_pb2, ingest_pb2
from analytics_bus import BusConfig, ensure_stream
from ingest_service.publisher import GroupCommitPublisher, PublishError

from .conftest import ADMIN, Harness, pageview

pytestmark = pytest.mark.integration


async def rejected(call: object, code: grpc.StatusCode) -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == code, caught.value.details()
    status = rpc_status.from_call(caught.value)
    fields: dict[str, str] = {}
    for detail in status.details if status else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields.update({v.field: v.description for v in bad.field_violations})
    return fields


async def test_track_and_batch_are_queued_with_enrichment(harness: Harness) -> None:
    site = await harness.new_site()
    key = (("x-api-key", site.api_key),)
    one = await harness.ingest.Track(
        ingest_pb2.TrackRequest(event=pageview(site.site_id, "/a", user_id="u1")), metadata=key
    )
    batch = await harness.ingest.TrackBatch(
        ingest_pb2.TrackBatchRequest(events=[pageview(site.site_id, f"/b{i}") for i in range(3)]),
        metadata=(("authorization", f"Bearer {site.api_key}"),),
    )
    assert batch.accepted == 3 and len(batch.event_ids) == 3
    events = await harness.stored_events()
    assert [e.path for e in events] == ["/a", "/b0", "/b1", "/b2"]
    assert str(uuid.UUID(bytes=events[0].event_id)) == one.event_id
    assert [str(uuid.UUID(bytes=e.event_id)) for e in events[1:]] == list(batch.event_ids)
    assert all(uuid.UUID(bytes=e.site_id) == uuid.UUID(site.site_id) for e in events)


async def test_concurrent_requests_share_bus_messages(harness: Harness) -> None:
    site = await harness.new_site()
    key = (("x-api-key", site.api_key),)
    await asyncio.gather(
        *(
            harness.ingest.Track(ingest_pb2.TrackRequest(event=pageview(site.site_id, f"/{i}")), metadata=key)
            for i in range(200)
        )
    )
    events = await harness.stored_events()
    assert sorted(e.path for e in events) == sorted(f"/{i}" for i in range(200))
    assert await harness.stored_messages() < 100


async def test_bad_requests_are_refused_and_nothing_is_queued(harness: Harness) -> None:
    site = await harness.new_site()
    other = await harness.new_site()
    key = (("x-api-key", site.api_key),)
    stub = harness.ingest

    await rejected(
        stub.Track(ingest_pb2.TrackRequest(event=pageview(site.site_id))), grpc.StatusCode.UNAUTHENTICATED
    )
    await rejected(
        stub.Track(
            ingest_pb2.TrackRequest(event=pageview(site.site_id)),
            metadata=(("x-api-key", "ak_bogus_" + "x" * 40),),
        ),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    await rejected(
        stub.Track(ingest_pb2.TrackRequest(event=pageview(other.site_id)), metadata=key),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await rejected(
        stub.Track(ingest_pb2.TrackRequest(event=pageview(str(uuid.uuid4()))), metadata=key),
        grpc.StatusCode.NOT_FOUND,
    )
    fields = await rejected(
        stub.Track(ingest_pb2.TrackRequest(event=events_pb2.Event(site_id=site.site_id)), metadata=key),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(fields) == {"event.event_type", "event.path"}
    fields = await rejected(
        stub.TrackBatch(ingest_pb2.TrackBatchRequest(events=[pageview(site.site_id)] * 1001), metadata=key),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert fields == {"events": "must contain at most 1000 events"}
    fields = await rejected(
        stub.TrackBatch(ingest_pb2.TrackBatchRequest(), metadata=key), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert fields == {"events": "must contain at least one event"}
    # One bad event rejects the whole batch: nothing of it is queued.
    fields = await rejected(
        stub.TrackBatch(
            ingest_pb2.TrackBatchRequest(
                events=[
                    pageview(site.site_id, "/ok"),
                    pageview(site.site_id, "/ok", timestamp="2999-01-01T00:00:00Z"),
                ]
            ),
            metadata=key,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert list(fields) == ["events[1].timestamp"]
    # A batch mixing the key's site with another site is refused whole.
    await rejected(
        stub.TrackBatch(
            ingest_pb2.TrackBatchRequest(events=[pageview(site.site_id), pageview(other.site_id)]),
            metadata=key,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert await harness.stored_messages() == 0
    # ...and the service keeps serving.
    await stub.Track(ingest_pb2.TrackRequest(event=pageview(site.site_id)), metadata=key)
    assert await harness.stored_messages() == 1


async def test_health_reports_ok(harness: Harness) -> None:
    reply = await harness.ingest.GetHealth(ingest_pb2.GetHealthRequest())
    assert reply.status == "ok"


async def test_publish_fails_when_nats_is_gone(nats_factory: object) -> None:
    server = nats_factory()  # type: ignore[operator]
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    bus = BusConfig(stream="DOWN", subject="down.events")
    await ensure_stream(js, bus)
    publisher = GroupCommitPublisher(js, bus.subject, ack_timeout_s=0.5)
    event = bus_pb2.EnrichedEvent(event_id=uuid.uuid4().bytes, site_id=uuid.uuid4().bytes, path="/")
    await publisher.publish([event])
    server.stop()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(PublishError):
        await publisher.publish([event])
    assert loop.time() - started < 5
    await publisher.close()
    with contextlib.suppress(OSError):  # closing a client whose server is gone may fail; that's fine
        await nc.close()


IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.0 Mobile/15E148 Safari/604.1"
)


async def test_events_are_enriched_and_raw_addresses_never_queued(harness: Harness) -> None:
    site = await harness.new_site()
    metadata = (
        ("x-api-key", site.api_key),
        ("x-forwarded-for", "203.0.113.77"),
        ("x-forwarded-user-agent", IPHONE),
        ("cf-ipcountry", "de"),
        ("origin", "https://shop.example"),
    )
    event = pageview(
        site.site_id,
        "",
        url="https://shop.example/p?utm_source=news&utm_medium=email",
        referrer="https://www.google.com/",
        user_id="",
    )
    await harness.ingest.Track(ingest_pb2.TrackRequest(event=event), metadata=metadata)
    await harness.ingest.Track(ingest_pb2.TrackRequest(event=pageview(site.site_id, "/x")), metadata=metadata)
    bot = (("x-api-key", site.api_key), ("x-forwarded-user-agent", "Mozilla/5.0 (compatible; Googlebot/2.1)"))
    await harness.ingest.Track(ingest_pb2.TrackRequest(event=pageview(site.site_id, "/bot")), metadata=bot)

    first, second, crawler = await harness.stored_events()
    assert (first.browser, first.os, first.device, first.is_bot) == ("Mobile Safari", "iOS", "mobile", False)
    assert first.country == "DE"
    assert (first.referrer_host, first.referrer_source) == ("google.com", "email")  # utm_medium wins
    assert (first.utm_source, first.utm_medium, first.path) == ("news", "email", "/p")
    assert first.visitor_id != 0 and first.visitor_id == second.visitor_id
    assert crawler.is_bot and crawler.device == "bot"  # stored flagged, not dropped
    assert crawler.visitor_id != first.visitor_id
    info = await harness.js.stream_info(harness.bus.stream)
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        message = await harness.js.get_msg(harness.bus.stream, seq)
        assert b"203.0.113.77" not in (message.data or b"")


async def create_key(harness: Harness, site: auth_pb2.CreateSiteResponse, **fields: object) -> str:
    reply = await harness.auth.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(site_id=site.site_id, **fields),  # type: ignore[arg-type]
        metadata=(("authorization", f"Bearer {ADMIN}"),),
    )
    return str(reply.api_key)


async def test_rate_limit_per_key_answers_resource_exhausted_with_retry_after(harness: Harness) -> None:
    site = await harness.new_site()
    key = await create_key(harness, site, rate_limit_per_second=1, rate_limit_burst=3)
    metadata = (("x-api-key", key),)
    batch = ingest_pb2.TrackBatchRequest(events=[pageview(site.site_id)] * 3)
    await harness.ingest.TrackBatch(batch, metadata=metadata)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.ingest.Track(ingest_pb2.TrackRequest(event=pageview(site.site_id)), metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict((k, v) for k, v in (caught.value.trailing_metadata() or ()) if isinstance(v, str))
    assert trailers["retry-after"] == "1"
    status = rpc_status.from_call(caught.value)
    retry = error_details_pb2.RetryInfo()
    assert status is not None and any(d.Unpack(retry) for d in status.details)
    # The site's other key has its own bucket.
    await harness.ingest.Track(
        ingest_pb2.TrackRequest(event=pageview(site.site_id)), metadata=(("x-api-key", site.api_key),)
    )
    assert await harness.stored_messages() == 2


async def test_allowed_origins_are_enforced_for_browsers(harness: Harness) -> None:
    site = await harness.new_site()
    key = await create_key(harness, site, allowed_origins=["https://shop.example"])
    request = ingest_pb2.TrackRequest(event=pageview(site.site_id))
    await harness.ingest.Track(request, metadata=(("x-api-key", key), ("origin", "https://shop.example")))
    await harness.ingest.Track(request, metadata=(("x-api-key", key),))  # server-side senders send no Origin
    await rejected(
        harness.ingest.Track(request, metadata=(("x-api-key", key), ("origin", "https://evil.example"))),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert await harness.stored_messages() == 2


async def test_client_stream_queues_everything_in_groups(harness: Harness) -> None:
    site = await harness.new_site()
    key = await create_key(harness, site, rate_limit_per_second=100_000, rate_limit_burst=100_000)

    async def messages(total: int, bad_at: int | None = None) -> AsyncIterator[ingest_pb2.TrackStreamRequest]:
        for start in range(0, total, 100):
            events = [pageview(site.site_id, f"/s{start + i}") for i in range(100)]
            if bad_at is not None and start <= bad_at < start + 100:
                events[bad_at - start].path = "oops"
            yield ingest_pb2.TrackStreamRequest(events=events)

    stream = {"grpc_service": "analytics.v1.IngestService", "grpc_method": "TrackStream"}
    samples = (
        ("grpc_server_handled_total", {**stream, "grpc_type": "client_stream", "grpc_code": "OK"}),
        (
            "grpc_server_handled_total",
            {**stream, "grpc_type": "client_stream", "grpc_code": "INVALID_ARGUMENT"},
        ),
        ("analytics_ingest_events_accepted_total", {}),
        ("analytics_ingest_events_rejected_total", {"reason": "invalid"}),
    )

    def counters() -> list[float]:  # this process's registry, shared by every test: compare deltas
        return [REGISTRY.get_sample_value(name, labels) or 0.0 for name, labels in samples]

    before = counters()
    reply = await harness.ingest.TrackStream(messages(2500), metadata=(("x-api-key", key),))
    assert reply.accepted == 2500
    events = await harness.stored_events()
    assert len(events) == 2500 and len({e.path for e in events}) == 2500

    fields = await rejected(
        harness.ingest.TrackStream(messages(1500, bad_at=1234), metadata=(("x-api-key", key),)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert fields == {"events[1234].path": "must start with /"}
    # The first full group of 1000 was queued before the bad one; the rest was not.
    assert len(await harness.stored_events()) == 3500
    # One stream each way; 3500 events accepted, the 500 of the refused group counted as invalid.
    assert [after - b for after, b in zip(counters(), before, strict=True)] == [1, 1, 3500, 500]
