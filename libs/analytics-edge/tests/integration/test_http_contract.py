"""The HTTP contract of the Envoy edge, in front of real grpc.aio fake upstreams, driven over HTTP."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest

from analytics.v1 import auth_pb2
from analytics_edge.launcher import DEFAULT_TABLE
from analytics_testing.stack import Edge

pytestmark = pytest.mark.integration

BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


async def request(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with http.request(method, url, **kwargs) as response:
        text = await response.text()
        return response.status, (json.loads(text) if text else None), response


# --- routes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/events", "/api/event", "/event"])
async def test_track_on_every_binding_takes_the_body_as_the_event(
    http: aiohttp.ClientSession, edge: str, upstream: Any, path: str
) -> None:
    event = {"site_id": "s1", "event_type": "pageview", "path": "/a", "screen_width": 1280}
    status, body, response = await request(http, "POST", edge + path, json=event)
    assert status == 200, body
    assert response.content_type == "application/json"
    assert body == {"event_id": "generated"}
    call = upstream.last
    assert call.method == "Track"
    assert call.request.event.site_id == "s1"
    assert call.request.event.screen_width == 1280


async def test_lower_camel_json_names_are_accepted(
    http: aiohttp.ClientSession, edge: str, upstream: Any
) -> None:
    event = {"siteId": "s1", "eventType": "pageview", "screenWidth": 800, "eventId": "e-1"}
    status, body, _ = await request(http, "POST", edge + "/api/event", json=event)
    assert status == 200, body
    assert body == {"event_id": "e-1"}
    assert upstream.last.request.event.screen_width == 800


async def test_batch_with_events_object_on_the_v1_route(
    http: aiohttp.ClientSession, edge: str, upstream: Any
) -> None:
    payload = {"events": [{"site_id": "s1", "path": "/a"}, {"siteId": "s1", "path": "/b", "eventId": "x"}]}
    status, body, _ = await request(http, "POST", edge + "/v1/events:batch", json=payload)
    assert status == 200, body
    assert body == {"accepted": 2, "event_ids": ["generated-0", "x"]}
    assert [event.path for event in upstream.last.request.events] == ["/a", "/b"]


async def test_batch_with_a_bare_array_on_the_seed_route(
    http: aiohttp.ClientSession, edge: str, upstream: Any
) -> None:
    payload = [{"site_id": "s1", "path": "/a"}, {"site_id": "s1", "path": "/b"}, {"site_id": "s1"}]
    status, body, _ = await request(http, "POST", edge + "/api/events/batch", json=payload)
    assert status == 200, body
    assert body["accepted"] == 3
    assert upstream.last.method == "TrackBatch"


async def test_stats_query_parameters_are_typed(
    http: aiohttp.ClientSession, edge: str, upstream: Any
) -> None:
    url = edge + "/api/stats?site_id=s1&date=2024-05-01&limit=5&unknown=ignored"
    status, body, _ = await request(http, "GET", url)
    assert status == 200, body
    # Every field is printed, int64 would be a string, uint32 is a number.
    assert body == {
        "site_id": "s1",
        "date": "2024-05-01",
        "total_views": 5,
        "unique_users": 0,
        "top_paths": [{"path": "/", "views": 3}],
    }
    assert upstream.last.request.limit == 5


async def test_stats_with_the_site_in_the_path(http: aiohttp.ClientSession, edge: str, upstream: Any) -> None:
    status, body, _ = await request(http, "GET", edge + "/v1/sites/site%20one/stats/daily?date=2024-05-02")
    assert status == 200, body
    assert upstream.last.request.site_id == "site one"
    assert upstream.last.request.date == "2024-05-02"


async def test_bad_query_value_names_the_parameter(
    http: aiohttp.ClientSession, edge: str, upstream: Any
) -> None:
    status, body, response = await request(http, "GET", edge + "/stats?site_id=s1&limit=abc")
    assert status == 400
    assert response.content_type == "application/json"
    assert body["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert body["message"].startswith("limit: ")
    assert upstream.calls == []


async def test_health_get_bindings(http: aiohttp.ClientSession, edge: str, upstream: Any) -> None:
    for path in ("/v1/health", "/health", "/api/health"):
        status, body, response = await request(http, "GET", edge + path)
        assert (status, body) == (200, {"status": "ok"})
        # The gRPC framing headers stay between Envoy and the service.
        assert not [name for name in response.headers if name.lower().startswith("grpc-")]
    assert [call.method for call in upstream.calls] == ["GetHealth"] * 3


async def test_head_health_reports_the_ingest_upstream_without_a_body(
    http: aiohttp.ClientSession, edge: str, start_edge: Any, unused_address: str, upstream: Any
) -> None:
    # Envoy answers from its active health checks (every 2 s), the first of which may have run
    # before the fake upstream could answer.
    for _ in range(50):
        async with http.head(edge + "/health") as response:
            if response.status == 200:
                break
        await asyncio.sleep(0.1)
    assert response.status == 200
    assert await response.read() == b""
    # The service sees only Envoy's health checks, which are not RPCs of its own API.
    assert upstream.calls == []
    async with (
        start_edge(upstreams={"ingest": unused_address}) as down,
        http.head(down.url + "/health") as response,
    ):
        assert response.status == 503
        assert await response.read() == b""


async def test_create_site_on_both_bindings(http: aiohttp.ClientSession, edge: str, upstream: Any) -> None:
    for path in ("/v1/sites", "/api/site/create"):
        status, body, _ = await request(http, "POST", edge + path, json={"name": "blog"})
        assert status == 200, body
        assert body["site"]["name"] == "blog"
        # Message fields without a value (the timestamp) are omitted; scalars are always printed.
        assert "create_time" not in body["site"]


async def test_create_key_path_parameter_and_enum_body(
    http: aiohttp.ClientSession, edge: str, upstream: Any
) -> None:
    url = edge + "/v1/sites/site-9/keys"
    status, body, _ = await request(http, "POST", url, json={"scopes": ["SCOPE_READ", 1]})
    assert status == 200, body
    assert upstream.last.request.site_id == "site-9"
    assert list(upstream.last.request.scopes) == [auth_pb2.SCOPE_READ, auth_pb2.SCOPE_INGEST]
    assert body["key"]["scopes"] == ["SCOPE_READ", "SCOPE_INGEST"]


async def test_revoke_uses_the_custom_verb(http: aiohttp.ClientSession, edge: str, upstream: Any) -> None:
    status, body, _ = await request(http, "POST", edge + "/v1/keys/key-7:revoke")
    assert status == 200, body
    assert upstream.last.method == "RevokeApiKey"
    assert upstream.last.request.key_id == "key-7"
    assert body["key"]["key_id"] == "key-7"


async def test_empty_body_on_a_body_route_is_an_empty_message(
    http: aiohttp.ClientSession, edge: str, upstream: Any
) -> None:
    status, _, _ = await request(http, "POST", edge + "/v1/events", data=b"")
    assert status == 200
    assert upstream.last.request.event.site_id == ""


async def test_text_plain_beacon_bodies_are_transcoded(
    http: aiohttp.ClientSession, edge: str, upstream: Any
) -> None:
    # navigator.sendBeacon posts text/plain to avoid a preflight.
    data = json.dumps({"site_id": "s1", "path": "/beacon"})
    status, _, _ = await request(
        http, "POST", edge + "/api/event", data=data, headers={"Content-Type": "text/plain"}
    )
    assert status == 200
    assert upstream.last.request.event.path == "/beacon"


async def test_internal_rpc_without_http_rule_is_unreachable(
    http: aiohttp.ClientSession, edge: str, upstream: Any
) -> None:
    for path in (
        "/analytics.v1.AuthService/Authenticate",
        "/v1/authenticate",
        "/analytics.v1.AuthService/GetIdentitySecret",
        "/analytics.v1.AuthService/GetVisitorSalts",
    ):
        status, body, _ = await request(http, "POST", edge + path, json={"api_key": "x"})
        assert status == 404
        assert body["code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert upstream.calls == []


async def test_unknown_route_and_wrong_method_are_404(http: aiohttp.ClientSession, edge: str) -> None:
    for method, path in (("GET", "/nope"), ("GET", "/v1/events"), ("DELETE", "/api/stats")):
        status, body, response = await request(http, method, edge + path)
        assert status == 404, (method, path)
        assert response.content_type == "application/json"
        assert body["code"] == grpc.StatusCode.NOT_FOUND.value[0]
        assert set(body) == {"code", "message", "details"}


async def test_openapi_document_and_docs_page_are_served(http: aiohttp.ClientSession, edge: str) -> None:
    status, document, response = await request(http, "GET", edge + "/openapi.json")
    assert status == 200
    assert response.content_type == "application/json"
    assert document["openapi"].startswith("3.1")
    assert "/api/event" in document["paths"]
    async with http.get(edge + "/docs") as page:
        assert page.status == 200
        assert page.content_type == "text/html"
        assert "/api/event" in await page.text()


# --- bad input ----------------------------------------------------------------------------------


async def test_malformed_json_is_400(http: aiohttp.ClientSession, edge: str, upstream: Any) -> None:
    status, body, response = await request(http, "POST", edge + "/api/event", data=b'{"site_id": ')
    assert status == 400
    assert response.content_type == "application/json"
    assert body["code"] == 3
    assert "Expected a value" in body["message"]
    assert upstream.calls == []


@pytest.mark.parametrize(
    ("path", "payload", "prefix", "name"),
    [
        ("/api/event", {"site_id": "s1", "screen_width": "abc"}, "event.screen_width: ", "screen_width"),
        ("/v1/events", {"site_id": "s1", "screenWidth": -1}, "event.screen_width: ", "screen_width"),
        ("/v1/events:batch", {"events": [{}, {"path": 5}]}, "events[1].path: ", "path"),
        (
            "/api/events/batch",
            [{"site_id": "s1"}, {"screen_height": "x"}],
            "events[1].screen_height: ",
            "screen_height",
        ),
        # Two quirks of the transcoder's messages: no path for an object in place of a top-level
        # scalar, and the first index for a bad enum value in a list; the field is named all the same.
        ("/v1/sites", {"name": {"nested": True}}, ": ", "name"),
        ("/v1/sites/s/keys", {"scopes": ["SCOPE_READ", "NOPE"]}, "scopes[0]: ", "NOPE"),
    ],
)
async def test_wrong_types_name_the_field(  # noqa: PLR0917 - fixtures and parameters
    http: aiohttp.ClientSession, edge: str, upstream: Any, path: str, payload: Any, prefix: str, name: str
) -> None:
    # The transcoder refuses a value it cannot convert before any service sees it; its message
    # starts with the field's path in the request message.
    status, body, _ = await request(http, "POST", edge + path, json=payload)
    assert status == 400, body
    assert body["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert body["message"].startswith(prefix), body["message"]
    assert name in body["message"]
    assert upstream.calls == []


async def test_unknown_json_fields_are_dropped_like_envoy(
    http: aiohttp.ClientSession, edge: str, upstream: Any
) -> None:
    status, _, _ = await request(http, "POST", edge + "/api/event", json={"site_id": "s1", "hostname": "x"})
    assert status == 200
    assert upstream.last.request.event.site_id == "s1"


async def test_oversized_body_is_413(
    http: aiohttp.ClientSession, edge: str, upstream: Any, max_body: int
) -> None:
    payload = io.BytesIO(json.dumps({"site_id": "s1", "title": "x" * max_body}).encode())
    status, body, _ = await request(http, "POST", edge + "/api/event", data=payload)
    assert status == 413
    assert body["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    # Just under the limit passes.
    fits = io.BytesIO(json.dumps({"site_id": "s1", "title": "x" * (max_body - 100)}).encode())
    status, _, _ = await request(http, "POST", edge + "/api/event", data=fits)
    assert status == 200
    upstream.calls.clear()

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(max_body // 1024 + 2):
            yield b" " * 1024

    status, body, _ = await request(http, "POST", edge + "/api/event", data=chunked())
    assert status == 413
    assert upstream.calls == []


# --- upstream errors ----------------------------------------------------------------------------

STATUS_TO_HTTP = [
    (grpc.StatusCode.CANCELLED, 499),
    (grpc.StatusCode.UNKNOWN, 500),
    (grpc.StatusCode.INVALID_ARGUMENT, 400),
    (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    (grpc.StatusCode.NOT_FOUND, 404),
    (grpc.StatusCode.ALREADY_EXISTS, 409),
    (grpc.StatusCode.PERMISSION_DENIED, 403),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    (grpc.StatusCode.FAILED_PRECONDITION, 400),
    (grpc.StatusCode.ABORTED, 409),
    (grpc.StatusCode.OUT_OF_RANGE, 400),
    (grpc.StatusCode.UNIMPLEMENTED, 501),
    (grpc.StatusCode.INTERNAL, 500),
    (grpc.StatusCode.UNAVAILABLE, 503),
    (grpc.StatusCode.DATA_LOSS, 500),
    (grpc.StatusCode.UNAUTHENTICATED, 401),
]


@pytest.mark.parametrize(("code", "http_status"), STATUS_TO_HTTP)
async def test_grpc_status_maps_to_http_status(
    http: aiohttp.ClientSession, edge: str, upstream: Any, code: grpc.StatusCode, http_status: int
) -> None:
    upstream.fail_next(code, f"failed with {code.name}")
    status, body, response = await request(http, "POST", edge + "/api/event", json={"site_id": "s1"})
    assert status == http_status
    assert response.content_type == "application/json"
    assert body == {"code": code.value[0], "message": f"failed with {code.name}", "details": []}


async def test_status_details_are_rendered_with_type_and_proto_names(
    http: aiohttp.ClientSession, edge: str, upstream: Any
) -> None:
    upstream.fail_next(
        grpc.StatusCode.INVALID_ARGUMENT,
        "event is invalid",
        violations=[("event.path", "must start with /"), ("event.site_id", "is required")],
    )
    status, body, _ = await request(http, "POST", edge + "/api/event", json={"path": "x"})
    assert status == 400
    assert body["code"] == 3
    assert body["message"] == "event is invalid"
    detail = body["details"][0]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert [(v["field"], v["description"]) for v in detail["field_violations"]] == [
        ("event.path", "must start with /"),
        ("event.site_id", "is required"),
    ]


async def test_retry_after_is_copied_from_trailing_metadata(
    http: aiohttp.ClientSession, edge: str, upstream: Any
) -> None:
    upstream.fail_next(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", retry_after="7")
    status, body, response = await request(http, "POST", edge + "/api/event", json={"site_id": "s1"})
    assert status == 429
    assert response.headers["Retry-After"] == "7"
    assert body["message"] == "slow down"


async def test_upstream_down_is_503(
    http: aiohttp.ClientSession, start_edge: Any, unused_address: str
) -> None:
    async with start_edge(upstreams={"ingest": unused_address}) as edge:
        status, body, response = await request(http, "POST", edge.url + "/api/event", json={"site_id": "s1"})
        # The other upstreams are unaffected.
        stats_status, _, _ = await request(http, "GET", edge.url + "/api/stats?site_id=s")
    assert status == 503
    assert response.content_type == "application/json"
    assert body["code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert unused_address not in body["message"]
    assert stats_status == 200


async def test_route_timeout_from_the_route_table_is_504(
    http: aiohttp.ClientSession, start_edge: Any, upstream: Any
) -> None:
    table = DEFAULT_TABLE.read_text().replace("timeout_s = 15", "timeout_s = 0.2")
    assert table != DEFAULT_TABLE.read_text()
    upstream.delay_s = 1.0
    async with start_edge(table=table) as edge:
        status, body, _ = await request(http, "POST", edge.url + "/api/event", json={"site_id": "s1"})
        # Another service's route keeps its own timeout.
        stats_status, _, _ = await request(http, "GET", edge.url + "/api/stats?site_id=s")
    assert status == 504
    assert body["code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert stats_status == 200


async def test_shorter_grpc_timeout_header_is_honoured(
    http: aiohttp.ClientSession, edge: str, upstream: Any
) -> None:
    upstream.delay_s = 0.5
    headers = {"grpc-timeout": "100m"}
    status, _, _ = await request(http, "POST", edge + "/api/event", json={"site_id": "s1"}, headers=headers)
    assert status == 504


# --- headers ------------------------------------------------------------------------------------


async def test_headers_are_forwarded_as_metadata(
    http: aiohttp.ClientSession, edge: str, upstream: Any
) -> None:
    headers = {
        "User-Agent": BROWSER_UA,
        "X-Api-Key": "k-123",
        "Authorization": "Bearer t",
        "X-Request-Id": "req-1",
        "X-Forwarded-For": "203.0.113.7",
        "X-Country": "DE",
        "X-Custom-Bin": "AAE",
        "X-Hop": "gone",
        "Connection": "keep-alive, X-Hop",
        "Accept-Language": "de-DE",
    }
    status, _, _ = await request(http, "POST", edge + "/api/event", json={"site_id": "s1"}, headers=headers)
    assert status == 200
    metadata = upstream.last.metadata
    assert metadata["x-api-key"] == "k-123"
    assert metadata["authorization"] == "Bearer t"
    assert metadata["x-request-id"] == "req-1"
    assert metadata["x-country"] == "DE"
    assert metadata["accept-language"] == "de-DE"
    assert metadata["x-custom-bin"] == b"\x00\x01"
    # Envoy appends the address it received the request from.
    # Envoy appends the address it received the request from; for a loopback peer, its own host
    # address: the client's entry is never the last.
    client, appended = metadata["x-forwarded-for"].split(",")
    assert client == "203.0.113.7"
    assert appended != "203.0.113.7"
    assert metadata["user-agent"] == BROWSER_UA
    for dropped in ("x-hop", "connection", "keep-alive"):
        assert dropped not in metadata


async def test_forwarded_for_without_a_previous_hop_and_generated_request_id(
    http: aiohttp.ClientSession, edge: str, upstream: Any
) -> None:
    headers = {"X-Latin": "caf\u00e9".encode().decode("latin-1")}
    status, _, _ = await request(http, "GET", edge + "/api/health", headers=headers)
    assert status == 200
    metadata = upstream.last.metadata
    assert "," not in metadata["x-forwarded-for"]
    assert len(str(metadata["x-request-id"])) == 36  # a UUID Envoy generated


# --- another system's error bodies ----------------------------------------------------------------


async def test_the_plausible_route_answers_errors_as_plausible_does(
    http: aiohttp.ClientSession, edge: str, upstream: Any
) -> None:
    status, _, _ = await request(http, "POST", edge + "/api/v2/query", json={"site_id": "example.com"})
    assert status == 200
    assert upstream.last.request.site_id == "example.com"
    message = 'metrics: "visits_x" is not a metric; say "visitors" \\ or "visits"'
    upstream.fail_next(grpc.StatusCode.INVALID_ARGUMENT, message, violations=[("metrics[0]", "unknown")])
    status, body, response = await request(http, "POST", edge + "/api/v2/query", json={"metrics": ["x"]})
    assert status == 400
    assert response.content_type == "application/json"
    assert body == {"error": message}
    upstream.fail_next(grpc.StatusCode.UNAUTHENTICATED, "missing api key")
    status, body, _ = await request(http, "POST", edge + "/api/v2/query", json={})
    assert (status, body) == (401, {"error": "missing api key"})
    # The edge's own answers on that path too.
    status, body, _ = await request(http, "POST", edge + "/api/v2/query", data=b"{")
    assert status == 400
    assert set(body) == {"error"}
    assert body["error"]
    # Every other path keeps google.rpc.Status.
    upstream.fail_next(grpc.StatusCode.INVALID_ARGUMENT, "bad")
    status, body, _ = await request(http, "POST", edge + "/v1/sites/s1/query", json={})
    assert status == 400
    assert body["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]


# --- CORS ---------------------------------------------------------------------------------------


async def test_preflight_is_answered_by_the_edge(
    http: aiohttp.ClientSession, edge: str, upstream: Any
) -> None:
    headers = {
        "Origin": "https://shop.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-api-key",
    }
    for path in ("/api/event", "/v1/sites/s1/keys"):
        async with http.options(edge + path, headers=headers) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
            methods = {item.strip() for item in response.headers["Access-Control-Allow-Methods"].split(",")}
            assert {"GET", "POST"} <= methods
            allowed = {item.strip() for item in response.headers["Access-Control-Allow-Headers"].split(",")}
            assert {"content-type", "x-api-key", "authorization", "x-request-id"} <= allowed
            assert int(response.headers["Access-Control-Max-Age"]) > 0
    assert upstream.calls == []


async def test_allow_origin_on_success_and_error(
    http: aiohttp.ClientSession, edge: str, upstream: Any
) -> None:
    headers = {"Origin": "https://shop.example"}
    _, _, ok = await request(http, "GET", edge + "/api/health", headers=headers)
    _, _, not_found = await request(http, "GET", edge + "/missing", headers=headers)
    _, _, malformed = await request(http, "POST", edge + "/api/event", data=b"{", headers=headers)
    upstream.fail_next(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", retry_after="2")
    _, _, limited = await request(http, "GET", edge + "/api/health", headers=headers)
    for response in (ok, not_found, malformed, limited):
        assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    # A script may read Retry-After of a cross-origin answer.
    assert "retry-after" in limited.headers["Access-Control-Expose-Headers"]


async def test_configured_origins_only(http: aiohttp.ClientSession, start_edge: Any) -> None:
    table = DEFAULT_TABLE.read_text().replace(
        'cors_allow_origins = ["*"]', 'cors_allow_origins = ["https://a.example", "https://b.example"]'
    )
    assert table != DEFAULT_TABLE.read_text()
    async with start_edge(table=table) as edge:
        _, _, allowed = await request(
            http, "GET", edge.url + "/api/health", headers={"Origin": "https://b.example"}
        )
        _, _, refused = await request(
            http, "GET", edge.url + "/api/health", headers={"Origin": "https://evil.example"}
        )
        async with http.options(
            edge.url + "/api/event",
            headers={"Origin": "https://a.example", "Access-Control-Request-Method": "POST"},
        ) as preflight:
            preflight_headers = preflight.headers
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://b.example"
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert preflight_headers["Access-Control-Allow-Origin"] == "https://a.example"


# --- request bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate, gzip", "x-unknown"])
async def test_compressed_bodies_are_415(
    http: aiohttp.ClientSession, edge: str, upstream: Any, encoding: str
) -> None:
    body = gzip.compress(json.dumps({"site_id": "s1", "path": "/zipped"}).encode())
    for data in (body, body[:10] + b"cut short"):
        status, payload, response = await request(
            http, "POST", edge + "/api/event", data=data, headers={"Content-Encoding": encoding}
        )
        assert status == 415
        assert response.content_type == "application/json"
        assert payload["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "Content-Encoding" in payload["message"]
    assert upstream.calls == []


async def test_identity_encoding_is_taken_as_sent(
    http: aiohttp.ClientSession, edge: str, upstream: Any
) -> None:
    status, _, _ = await request(
        http, "POST", edge + "/api/event", json={"path": "/plain"}, headers={"Content-Encoding": "Identity"}
    )
    assert status == 200
    assert upstream.last.request.event.path == "/plain"


# --- logging ------------------------------------------------------------------------------------


async def test_one_access_line_per_request_without_secrets(
    http: aiohttp.ClientSession, edge_process: Edge, upstream: Any
) -> None:
    headers = {"X-Api-Key": "k-secret", "Authorization": "Bearer secret", "X-Request-Id": "trace-1"}
    url = edge_process.url + "/v1/sites/s1/stats/daily?limit=2&api_key=query-secret"
    await request(http, "GET", url, headers=headers)
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        lines = [json.loads(line) for line in edge_process.log_lines() if '"trace-1"' in line]
        if lines or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)  # Envoy flushes access logs on its own schedule
    assert len(lines) == 1
    line = lines[0]
    assert line["event"] == "http_request"
    assert line["method"] == "GET"
    assert line["path"] == "/v1/sites/s1/stats/daily"
    assert line["rpc"] == "/analytics.v1.QueryService/GetDailyStats"
    assert line["status"] == 200
    assert "grpc_status" not in line
    assert line["duration_ms"] >= 0
    text = "\n".join(edge_process.log_lines())
    for secret in ("secret", "query-secret", "127.0.0.1"):
        assert secret not in text
