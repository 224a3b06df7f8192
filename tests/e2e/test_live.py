"""Live views end to end: events sent over HTTP reach a Server-Sent Events stream through Envoy,
realtime figures agree across two query replicas, a stream survives a replica restart by
reconnecting, and a subscriber that stops reading loses only its own oldest messages."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import json_format

from analytics.v1 import live_pb2, live_pb2_grpc
from analytics_testing.plugin import NatsFactory
from analytics_testing.stack import ServiceStack
from analytics_testing.webhooks import webhook_receiver

pytestmark = pytest.mark.e2e

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"


@pytest.fixture(scope="module")
def live_stack(postgres_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    # A private NATS server, two query replicas on one port, short heartbeats and summaries, and
    # small subscriber queues so a slow subscriber overflows soon.
    servers = NatsFactory(tmp_path_factory)
    nats = servers()
    stack = ServiceStack(
        database_url=postgres_server.create_database(f"e2e_live_{secrets.token_hex(4)}"),
        nats_url=nats.url,
        log_dir=tmp_path_factory.mktemp("live-logs"),
        admin_token=secrets.token_urlsafe(32),
        replicas={"query": 2},
        extra_env={
            "ANALYTICS_LIVE_HEARTBEAT_S": "0.5",
            "ANALYTICS_LIVE_SUMMARY_INTERVAL_S": "0.5",
            "ANALYTICS_LIVE_QUEUE_SIZE": "4",
            # Alerts at 5 visitors a minute, looked for twice a second.
            "ANALYTICS_ALERT_VISITORS_PER_MINUTE": "5",
            "ANALYTICS_ALERT_INTERVAL_S": "0.5",
        },
    )
    stack.start(timeout_s=90)
    yield stack
    stack.stop()
    servers.stop_all()


@pytest.fixture
async def http(live_stack: ServiceStack) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=live_stack.http_url) as session:
        yield session


async def send(http: aiohttp.ClientSession, site_id: str, key: str, events: list[dict[str, Any]]) -> None:
    payload = [{"site_id": site_id, "event_type": "pageview", **event} for event in events]
    async with http.post("/api/events/batch", json=payload, headers={"x-api-key": key}) as response:
        assert response.status == 200, await response.text()


def ago(seconds: int) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()


async def sse_messages(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The JSON of each `data:` event of a Server-Sent Events body."""
    async for raw in response.content:
        line = raw.decode().strip()
        if line.startswith("data:"):
            yield json.loads(line.removeprefix("data:").strip())


async def test_events_reach_an_sse_stream_through_the_edge(
    live_stack: ServiceStack, http: aiohttp.ClientSession
) -> None:
    site_id, key = live_stack.create_site("live-sse")
    headers = {"x-api-key": key, "Accept": "text/event-stream"}
    async with http.get(f"/v1/sites/{site_id}/live", params={"countries": "DE"}, headers=headers) as response:
        assert response.status == 200, await response.text()
        messages = sse_messages(response)
        kinds: list[str] = []
        # A summary or heartbeat first: the stream is open before anything is sent.
        first = await asyncio.wait_for(anext(messages), 10)
        kinds.append(next(k for k in ("summary", "heartbeat") if k in first))
        await send(
            http,
            site_id,
            key,
            [
                {"path": "/fr", "url": "https://x.example/fr"},
                {"path": "/de", "referrer": "https://www.google.com/"},
            ],
        )
        # The country comes from the trusted header; send one German event on its own.
        async with http.post(
            "/api/event",
            json={"site_id": site_id, "event_type": "signup", "path": "/de/signup"},
            headers={
                "x-api-key": key,
                "cf-ipcountry": "DE",
                "user-agent": FIREFOX,
            },
        ) as sent:
            assert sent.status == 200, await sent.text()
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(20):
            async for message in messages:
                if "heartbeat" in message:
                    kinds.append("heartbeat")
                if "summary" in message:
                    kinds.append("summary")
                if "events" in message:
                    seen += message["events"]["events"]
                if seen and "heartbeat" in kinds and "summary" in kinds:
                    break
    # Only the German event passes the stream's filter, with what a live view shows and no more.
    assert [(e["page"], e["name"], e["country"]) for e in seen] == [("/de/signup", "signup", "DE")]
    assert seen[0]["browser"] == "Firefox"
    assert set(seen[0]) == {"time", "page", "name", "country", "device", "source", "channel", "browser"}
    assert message["dropped_events"] == "0"


async def test_sse_messages_are_the_grpc_streams_messages_and_errors_are_the_transcoders(
    live_stack: ServiceStack, http: aiohttp.ClientSession
) -> None:
    """The edge hands the SSE route to the query service's own HTTP server (one encoding per batch
    for every subscriber): what a client reads must be what the transcoder would have sent."""
    site_id, key = live_stack.create_site("live-sse-same")
    metadata = (("x-api-key", key),)
    async with grpc.aio.insecure_channel(live_stack.addresses["query"]) as channel:
        stream = live_pb2_grpc.LiveServiceStub(channel).StreamLive(
            live_pb2.StreamLiveRequest(site_id=site_id), metadata=metadata
        )
        await stream.read()
        async with http.get(f"/v1/sites/{site_id}/live", headers={"x-api-key": key}) as response:
            assert response.status == 200
            assert response.headers["content-type"] == "text/event-stream"
            assert response.headers["cache-control"] == "no-cache"
            messages = sse_messages(response)
            await anext(messages)
            await send(
                http, site_id, key, [{"path": f"/same/{i}", "referrer": "https://t.co/"} for i in range(30)]
            )
            over_http: list[dict[str, Any]] = []
            over_grpc: list[dict[str, Any]] = []
            async with asyncio.timeout(20):
                while len(over_http) < 30:
                    message = await anext(messages)
                    over_http += message.get("events", {}).get("events", [])
                while len(over_grpc) < 30:
                    reply = await stream.read()
                    for event in reply.events.events:
                        over_grpc.append(
                            json_format.MessageToDict(
                                event,
                                preserving_proto_field_name=True,
                                always_print_fields_with_no_presence=True,
                            )
                        )
        stream.cancel()
    assert over_http == over_grpc
    assert sorted(e["page"] for e in over_http) == sorted(f"/same/{i}" for i in range(30))
    # Errors: google.rpc.Status JSON with the transcoder's HTTP statuses and field violations.
    async with http.get("/v1/sites/not-a-uuid/live", headers={"x-api-key": key}) as response:
        assert response.status == 400
        body = await response.json()
    assert body["code"] == 3
    assert body["details"][0]["field_violations"][0]["field"] == "site_id"
    async with http.get(
        f"/v1/sites/{site_id}/live", params={"pages": ""}, headers={"x-api-key": key}
    ) as response:
        assert response.status == 400
        assert (await response.json())["details"][0]["field_violations"][0]["field"] == "pages[0]"
    other_site, other_key = live_stack.create_site("live-sse-other")
    async with http.get(f"/v1/sites/{site_id}/live", headers={"x-api-key": other_key}) as response:
        assert response.status == 403
        assert (await response.json())["code"] == 7
    async with http.get(f"/v1/sites/{other_site}/live", headers={"x-api-key": "nope"}) as response:
        assert response.status == 401
        assert (await response.json())["code"] == 16


async def test_realtime_agrees_on_both_replicas_and_plausible_route(
    live_stack: ServiceStack, http: aiohttp.ClientSession
) -> None:
    site_id, key = live_stack.create_site("live-realtime")
    await send(
        http,
        site_id,
        key,
        [
            # The visit's first event carries its source (events without a time share the server's).
            {"path": "/", "user_id": "ann", "referrer": "https://www.google.com/", "timestamp": ago(20)},
            {"path": "/pricing", "user_id": "ann", "timestamp": ago(10)},
            {"path": "/", "user_id": "bob"},
        ],
    )
    answer: dict[str, Any] = {}
    for _ in range(100):
        async with http.get(f"/v1/sites/{site_id}/realtime", headers={"x-api-key": key}) as response:
            assert response.status == 200, await response.text()
            answer = await response.json()
        if answer["events"] == "3":
            break
        await asyncio.sleep(0.1)
    assert answer["visitors"] == "2"
    assert answer["pageviews"] == "3"
    assert answer["window_s"] == 300
    assert [(r["value"], r["visitors"], r["pageviews"]) for r in answer["top_pages"]] == [
        ("/", "2", "2"),
        ("/pricing", "1", "1"),
    ]
    assert {r["value"]: r["visitors"] for r in answer["top_sources"]} == {"google.com": "1", "": "1"}
    # Each replica reads the database: both answer the same, whichever a connection reaches.
    for _ in range(6):
        options = [("grpc.use_local_subchannel_pool", 1)]
        async with grpc.aio.insecure_channel(live_stack.addresses["query"], options=options) as channel:
            reply = await live_pb2_grpc.LiveServiceStub(channel).GetRealtime(
                live_pb2.GetRealtimeRequest(site_id=site_id), metadata=(("x-api-key", key),)
            )
        assert (reply.visitors, reply.events) == (2, 3)
    async with http.get(
        "/api/v1/stats/realtime/visitors",
        params={"site_id": site_id},
        headers={"Authorization": f"Bearer {key}"},
    ) as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert await response.text() == "2"
    # Plausible's clients name the site by its domain.
    admin = {"Authorization": f"Bearer {live_stack.admin_token}"}
    domain = f"realtime-{site_id[:8]}.example"
    async with http.patch(f"/v1/sites/{site_id}", json={"domain": domain}, headers=admin) as response:
        assert response.status == 200, await response.text()
    async with http.get(
        "/api/v1/stats/realtime/visitors",
        params={"site_id": domain},
        headers={"Authorization": f"Bearer {key}"},
    ) as response:
        assert await response.text() == "2"
    async with http.get(
        f"/v1/sites/{site_id}/realtime", params={"window_minutes": "61"}, headers={"x-api-key": key}
    ) as response:
        assert response.status == 400
        assert "window_minutes" in (await response.json())["message"]
    async with http.get(f"/v1/sites/{site_id}/live") as response:
        assert response.status == 401


async def test_a_stream_reconnects_across_a_replica_restart(
    live_stack: ServiceStack, http: aiohttp.ClientSession
) -> None:
    site_id, key = live_stack.create_site("live-restart")
    pages: list[str] = []
    ended = 0
    got_before, reconnected = asyncio.Event(), asyncio.Event()

    async def watch(until: str) -> None:
        """Follows the stream, reconnecting whenever it ends, until ``until`` was seen."""
        nonlocal ended
        while until not in pages:
            try:
                async with http.get(f"/v1/sites/{site_id}/live", headers={"x-api-key": key}) as response:
                    if response.status != 200:
                        await asyncio.sleep(0.2)
                        continue
                    if ended:
                        reconnected.set()
                    async for message in sse_messages(response):
                        pages.extend(e["page"] for e in message.get("events", {}).get("events", []))
                        if "/before" in pages:
                            got_before.set()
                        if until in pages:
                            return
            except aiohttp.ClientPayloadError:
                pass
            ended += 1

    watcher = asyncio.create_task(watch("/after"))
    await send(http, site_id, key, [{"path": "/before"}])
    await asyncio.wait_for(got_before.wait(), 30)
    # Both replicas restart in turn: whichever served the stream ended it, and the client came
    # back through the edge to a replica that was up.
    await asyncio.to_thread(live_stack.restart, "query")
    await asyncio.to_thread(live_stack.restart, "query.2")
    await asyncio.wait_for(reconnected.wait(), 30)
    async with asyncio.timeout(30):
        # Sent until the new stream sees one: events committed while no stream was open are not
        # replayed (live views show what arrives; the realtime figures hold the rest).
        while not watcher.done():
            await send(http, site_id, key, [{"path": "/after"}])
            await asyncio.wait({watcher}, timeout=0.5)
    await watcher
    assert pages[0] == "/before" and pages[-1] == "/after"
    assert ended >= 1


async def test_a_slow_subscriber_loses_only_its_own_oldest_events(
    live_stack: ServiceStack, http: aiohttp.ClientSession
) -> None:
    site_id, key = live_stack.create_site("live-slow")
    metadata = (("x-api-key", key),)
    # A small HTTP/2 window, so the unread gRPC stream backs up into the hub's queue (4 messages).
    options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
    async with grpc.aio.insecure_channel(live_stack.addresses["query"], options=options) as channel:
        slow = live_pb2_grpc.LiveServiceStub(channel).StreamLive(
            live_pb2.StreamLiveRequest(site_id=site_id), metadata=metadata
        )
        first = await slow.read()
        assert first.WhichOneof("kind") in ("summary", "heartbeat")
        headers = {"x-api-key": key}
        total = 4000
        async with http.get(f"/v1/sites/{site_id}/live", headers=headers) as response:
            fast: list[dict[str, Any]] = []
            messages = sse_messages(response)
            await anext(messages)
            async with asyncio.timeout(60):
                for start in range(0, total, 200):
                    # One batch at a time, each read by the fast subscriber before the next is
                    # sent: every batch is a message of its own, so the slow one's queue overflows.
                    await send(http, site_id, key, [{"path": f"/p{start + i}"} for i in range(200)])
                    async for message in messages:
                        fast += message.get("events", {}).get("events", [])
                        if len(fast) >= start + 200:
                            break
            # The fast reader got everything and lost nothing.
            assert sorted(e["page"] for e in fast) == sorted(f"/p{i}" for i in range(total))
            assert message["dropped_events"] == "0"
        # The slow one now reads: what it gets plus what it lost is everything.
        got = 0
        dropped = 0
        async with asyncio.timeout(60):
            while got + dropped < total:
                reply = await slow.read()
                got += len(reply.events.events)
                dropped = reply.dropped_events
        assert got + dropped == total
        assert dropped > 0
        slow.cancel()


async def receive_type(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    """The next message of that type (others are skipped)."""
    async with asyncio.timeout(20):
        while True:
            message: dict[str, Any] = await ws.receive_json()
            if message["type"] == kind:
                return message


async def test_websocket_dashboard_speaks_seed_000s_protocol(
    live_stack: ServiceStack, http: aiohttp.ClientSession
) -> None:
    site_id, key = live_stack.create_site("live-ws")
    # The key in the URL…
    async with http.ws_connect(f"/ws?api_key={key}") as first:
        joined = await receive_type(first, "user_connected")
        assert joined["data"]["total_dashboards"] >= 1
        # …or in a first `auth` message.
        async with http.ws_connect("/ws") as second:
            await second.send_json({"type": "auth", "api_key": key, "site_id": site_id})
            await receive_type(second, "user_connected")
            async with http.post(
                "/api/event",
                json={
                    "site_id": site_id,
                    "event_type": "pageview",
                    "path": "/products",
                    "referrer": "https://www.google.com/",
                },
                headers={"x-api-key": key, "cf-ipcountry": "IN", "user-agent": FIREFOX},
            ) as sent:
                assert sent.status == 200
            for ws in (first, second):
                update = await receive_type(ws, "visitor_update")
                event = update["data"]["event"]
                assert (event["type"], event["page"], event["country"]) == ("pageview", "/products", "IN")
                assert event["metadata"]["referrer"] == "google.com"
                assert event["metadata"]["device"] == "desktop"
                assert set(update["data"]["stats"]) == {"total_active", "events_per_minute", "dropped_events"}
            await first.send_json(
                {"type": "request_detailed_stats", "filter": {"country": "IN", "page": "/products"}}
            )
            detailed = await receive_type(first, "detailed_stats")
            assert detailed["data"]["stats"]["total_active"] == 1
            assert detailed["data"]["stats"]["pages_visited"] == {"/products": 1}
            await first.send_json({"type": "request_detailed_stats", "filter": {"country": "DE"}})
            assert (await receive_type(first, "detailed_stats"))["data"]["stats"]["total_active"] == 0
            await first.send_json(
                {"type": "track_dashboard_action", "action": "filter_applied", "details": {"x": 1}}
            )
            await first.send_json({"type": "nonsense"})
            error = await receive_type(first, "error")
            assert error["data"]["code"] == "INVALID_ARGUMENT" and "type" in error["data"]["message"]
    # A bad key is refused with a message and a close code in the application range.
    async with http.ws_connect("/ws?api_key=nope") as refused:
        error = await receive_type(refused, "error")
        assert error["data"]["code"] == "UNAUTHENTICATED"
        assert (await refused.receive()).type == aiohttp.WSMsgType.CLOSE
        assert refused.close_code == 4401


async def test_seed_000s_read_routes(live_stack: ServiceStack, http: aiohttp.ClientSession) -> None:
    site_id, key = live_stack.create_site("live-seed")
    headers = {"x-api-key": key}
    events = [
        {"path": "/", "user_id": "ann", "referrer": "https://www.google.com/", "timestamp": ago(20)},
        {"path": "/products", "user_id": "ann", "timestamp": ago(10)},
        {"path": "/", "user_id": "bob", "timestamp": ago(5)},
    ]
    payload = [{"site_id": site_id, "event_type": "pageview", **event} for event in events]
    async with http.post(
        "/api/events/batch", json=payload, headers={**headers, "cf-ipcountry": "IN", "user-agent": FIREFOX}
    ) as response:
        assert response.status == 200, await response.text()

    async def get(path: str, **params: str) -> dict[str, Any]:
        async with http.get(path, params=params, headers=headers) as response:
            assert response.status == 200, await response.text()
            body: dict[str, Any] = await response.json()
        assert body["success"] is True
        return body["data"]

    for _ in range(100):
        summary = (await get("/api/analytics/summary"))["summary"]
        if summary["total_today"] == 3:
            break
        await asyncio.sleep(0.1)
    assert summary == {"total_active": 2, "total_today": 3, "pages_visited": {"/": 2, "/products": 1}}
    narrowed = (await get("/api/analytics/summary", page="/products", country="IN"))["summary"]
    assert narrowed == {"total_active": 1, "total_today": 1, "pages_visited": {"/products": 1}}
    assert (await get("/api/analytics/summary", country="DE"))["summary"]["total_active"] == 0

    sessions = await get("/api/analytics/sessions")
    assert sessions["total_count"] == 2
    bob, ann = sessions["sessions"]
    assert (bob["journey"], bob["current_page"], bob["duration"]) == (["/"], "/", 0)
    assert (ann["journey"], ann["current_page"], ann["duration"]) == (["/", "/products"], "/products", 10)
    assert (ann["country"], ann["device"]) == ("IN", "desktop")
    assert set(ann) == {
        "session_id",
        "current_page",
        "journey",
        "duration",
        "country",
        "device",
        "last_activity",
    }
    limited = await get("/api/analytics/sessions", limit="1")
    assert (len(limited["sessions"]), limited["total_count"]) == (1, 2)
    on_products = await get("/api/analytics/sessions", page="/products")
    assert [s["journey"] for s in on_products["sessions"]] == [["/", "/products"]]
    assert (await get("/api/analytics/sessions", country="DE"))["total_count"] == 0

    detailed = await get("/api/analytics/detailed")
    assert detailed["active_sessions"] == 2
    assert detailed["sources"] == {"google.com": 1, "": 1}
    assert detailed["active_pages"] == {"/": 2, "/products": 1}
    status = await get("/api/status")
    assert status["status"] == "running"
    assert {"live_sites", "live_subscribers", "dropped_events", "alerts_raised", "webhooks_failed"} <= set(
        status
    )
    async with http.get("/api/status") as response:
        assert response.status == 401
    async with http.get("/api/analytics/sessions", params={"limit": "5000"}, headers=headers) as response:
        assert response.status == 400
        assert "limit" in (await response.json())["message"]


async def test_an_alert_reaches_sse_and_websocket_subscribers_once(
    live_stack: ServiceStack, http: aiohttp.ClientSession
) -> None:
    site_id, key = live_stack.create_site("live-alert")
    headers = {"x-api-key": key}
    async with (
        http.ws_connect(f"/ws?api_key={key}") as ws,
        http.get(f"/v1/sites/{site_id}/live", headers=headers) as stream,
    ):
        await receive_type(ws, "user_connected")
        await send(http, site_id, key, [{"path": "/", "user_id": f"u{i}"} for i in range(6)])
        alert = await receive_type(ws, "alert")
        assert alert["data"]["level"] == "warning"
        assert alert["data"]["details"]["visitors_last_minute"] == 6
        assert alert["data"]["details"]["threshold"] == 5
        async with asyncio.timeout(20):
            async for message in sse_messages(stream):
                if "alert" in message:
                    assert message["alert"]["metric"] == "visitors_per_minute"
                    assert message["alert"]["value"] == 6
                    break
    # Evaluated by one replica of the two: one log line for the site's alert in all.
    assert len(_alert_log_lines(live_stack, site_id)) == 1


async def _stored_events(http: aiohttp.ClientSession, site_id: str, key: str, events: int) -> None:
    """Waits until the site's realtime figures count ``events`` events."""
    for _ in range(200):
        async with http.get(f"/v1/sites/{site_id}/realtime", headers={"x-api-key": key}) as response:
            if (await response.json())["events"] == str(events):
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{events} events of {site_id} were never stored")


def _alert_log_lines(live_stack: ServiceStack, site_id: str) -> list[str]:
    return [
        line
        for name, process in live_stack.processes.items()
        if name.startswith("query")
        for line in process.log_path.read_text().splitlines()
        if "traffic alert" in line and site_id in line
    ]


async def test_a_sites_own_alert_rule_over_http_and_its_webhook(
    live_stack: ServiceStack, http: aiohttp.ClientSession
) -> None:
    strict, strict_key = live_stack.create_site("live-rule-strict")
    lenient, lenient_key = live_stack.create_site("live-rule-lenient")
    admin = {"Authorization": f"Bearer {live_stack.admin_token}"}
    rule_of = "/v1/sites/{}/alert-rule".format
    async with webhook_receiver() as receiver:
        hook = f"{receiver.url}/strict?token=not-for-logs"
        async with http.get(rule_of(strict), headers={"x-api-key": strict_key}) as response:
            assert response.status == 200, await response.text()
            default = (await response.json())["rule"]
        assert default["visitors_per_minute"] == 5
        assert (default["is_default"], default["webhook_host"]) == (True, "")
        async with http.put(
            rule_of(strict), json={"visitors_per_minute": 3, "webhook_url": hook}, headers=admin
        ) as response:
            assert response.status == 200, await response.text()
            made = (await response.json())["rule"]
        async with http.get(rule_of(strict), headers={"x-api-key": strict_key}) as response:
            assert (await response.json())["rule"] == made
        assert made["visitors_per_minute"] == 3 and made["events_per_minute"] == 0
        assert (made["webhook_host"], made["own_webhook"], made["is_default"]) == ("127.0.0.1", True, False)
        assert "not-for-logs" not in json.dumps(made)
        # A bad value is refused naming the field; a read key may not write.
        async with http.put(rule_of(strict), json={"spike_factor": 5000}, headers=admin) as response:
            assert response.status == 400
            refused = await response.json()
        assert refused["message"].startswith("spike_factor: must be between 0 and 1000")
        async with http.put(rule_of(strict), json={}, headers={"x-api-key": strict_key}) as response:
            assert response.status == 403
        async with http.delete(rule_of(strict), headers={"x-api-key": strict_key}) as response:
            assert response.status == 403
        async with http.put(rule_of(lenient), json={"visitors_per_minute": 50}, headers=admin) as response:
            assert response.status == 200, await response.text()

        # 6 visitors: over the configured 5 but under the lenient site's own 50. Once stored, the
        # strict site's 3 visitors alert (over its 3, under the configured 5), and the round that
        # sees them sees the lenient site's minute too.
        await send(http, lenient, lenient_key, [{"path": "/", "user_id": f"u{i}"} for i in range(6)])
        await _stored_events(http, lenient, lenient_key, 6)
        await send(http, strict, strict_key, [{"path": "/", "user_id": f"u{i}"} for i in range(3)])
        (delivered,) = await receiver.wait_for("/strict")
        assert delivered["site_id"] == strict
        assert delivered["metric"] == "visitors_per_minute"
        assert (delivered["value"], delivered["threshold"]) == (3, 3)
        # One evaluator across the two replicas, and the site's cooldown: one delivery.
        await asyncio.sleep(1.5)
        assert len(receiver.received["/strict"]) == 1
    assert len(_alert_log_lines(live_stack, strict)) == 1
    assert _alert_log_lines(live_stack, lenient) == []
    logs = "".join(p.log_path.read_text() for n, p in live_stack.processes.items() if n.startswith("query"))
    assert "not-for-logs" not in logs

    async with http.delete(rule_of(strict), headers=admin) as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["rule"] == default


async def test_websocket_dashboards_hear_session_activity(
    live_stack: ServiceStack, http: aiohttp.ClientSession
) -> None:
    site_id, key = live_stack.create_site("live-sessions")
    async with http.ws_connect(f"/ws?api_key={key}") as ws:
        await receive_type(ws, "user_connected")
        await send(
            http,
            site_id,
            key,
            [
                {"path": "/home", "user_id": "ann", "timestamp": ago(8)},
                {"path": "/products", "user_id": "ann", "timestamp": ago(2)},
            ],
        )
        # The visit as its last page view left it (an earlier message may show it before that).
        data: dict[str, Any] = {}
        while data.get("current_page") != "/products":
            data = (await receive_type(ws, "session_activity"))["data"]
    assert (data["current_page"], data["journey"], data["duration"]) == (
        "/products",
        ["/home", "/products"],
        6,
    )
    assert set(data) == {"session_id", "current_page", "journey", "duration", "last_activity"}


async def test_seed_000s_event_route(live_stack: ServiceStack, http: aiohttp.ClientSession) -> None:
    _, key = live_stack.create_site("live-seed-events")
    headers = {"x-api-key": key, "cf-ipcountry": "IN", "user-agent": FIREFOX}
    body = {
        "type": "pageview",
        "page": "/products",
        "session_id": "user-123",
        "timestamp": ago(3),
        "country": "India",
        "metadata": {"device": "mobile", "referrer": "google.com"},
    }
    async with http.post("/api/events", json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        answer = await response.json()
    assert answer["success"] is True and answer["message"] == "Event processed successfully"
    assert answer["data"]["session_id"] == "user-123"
    assert set(answer["data"]["current_stats"]) == {"total_active", "total_today", "pages_visited"}
    # Stored as any event: the key's site, the session id as the visitor, the referrer's host.
    for _ in range(100):
        async with http.get("/api/analytics/sessions", headers=headers) as response:
            sessions = (await response.json())["data"]["sessions"]
        if sessions:
            break
        await asyncio.sleep(0.1)
    assert [(s["current_page"], s["country"]) for s in sessions] == [("/products", "IN")]
    async with http.post("/api/events", json=body, headers=headers) as response:
        stats = (await response.json())["data"]["current_stats"]
    assert stats["total_today"] >= 1 and stats["pages_visited"]["/products"] >= 1
    # Errors name the seed's fields.
    async with http.post("/api/events", json={**body, "page": ""}, headers=headers) as response:
        assert response.status == 400
        assert (await response.json())["message"].startswith("page:")
    async with http.post("/api/events", json={**body, "session_id": ""}, headers=headers) as response:
        assert response.status == 400
        assert "session_id" in (await response.json())["message"]
    async with http.post("/api/events", json=body) as response:
        assert response.status == 401
