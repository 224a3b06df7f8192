"""The real gateway in front of real grpc.aio fake upstreams, driven over HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from structlog.testing import capture_logs

from analytics.v1 import auth_pb2

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
    http: aiohttp.ClientSession, gateway: str, upstream: Any, path: str
) -> None:
    event = {"site_id": "s1", "event_type": "pageview", "path": "/a", "screen_width": 1280}
    status, body, response = await request(http, "POST", gateway + path, json=event)
    assert status == 200, body
    assert response.content_type == "application/json"
    assert body == {"event_id": "generated"}
    call = upstream.last
    assert call.method == "Track"
    assert call.request.event.site_id == "s1"
    assert call.request.event.screen_width == 1280


async def test_lower_camel_json_names_are_accepted(
    http: aiohttp.ClientSession, gateway: str, upstream: Any
) -> None:
    event = {"siteId": "s1", "eventType": "pageview", "screenWidth": 800, "eventId": "e-1"}
    status, body, _ = await request(http, "POST", gateway + "/api/event", json=event)
    assert status == 200, body
    assert body == {"event_id": "e-1"}
    assert upstream.last.request.event.screen_width == 800


async def test_batch_with_events_object_on_the_v1_route(
    http: aiohttp.ClientSession, gateway: str, upstream: Any
) -> None:
    payload = {"events": [{"site_id": "s1", "path": "/a"}, {"siteId": "s1", "path": "/b", "eventId": "x"}]}
    status, body, _ = await request(http, "POST", gateway + "/v1/events:batch", json=payload)
    assert status == 200, body
    assert body == {"accepted": 2, "event_ids": ["generated-0", "x"]}
    assert [event.path for event in upstream.last.request.events] == ["/a", "/b"]


async def test_batch_with_a_bare_array_on_the_seed_route(
    http: aiohttp.ClientSession, gateway: str, upstream: Any
) -> None:
    payload = [{"site_id": "s1", "path": "/a"}, {"site_id": "s1", "path": "/b"}, {"site_id": "s1"}]
    status, body, _ = await request(http, "POST", gateway + "/api/events/batch", json=payload)
    assert status == 200, body
    assert body["accepted"] == 3
    assert upstream.last.method == "TrackBatch"


async def test_bare_array_route_rejects_an_object(http: aiohttp.ClientSession, gateway: str) -> None:
    status, body, _ = await request(http, "POST", gateway + "/api/events/batch", json={"events": []})
    assert status == 400
    assert body["message"] == "invalid request body: expected an array, got an object"


async def test_stats_query_parameters_are_typed(
    http: aiohttp.ClientSession, gateway: str, upstream: Any
) -> None:
    url = gateway + "/api/stats?site_id=s1&date=2024-05-01&limit=5&unknown=ignored"
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


async def test_stats_with_the_site_in_the_path(
    http: aiohttp.ClientSession, gateway: str, upstream: Any
) -> None:
    status, body, _ = await request(http, "GET", gateway + "/v1/sites/site%20one/stats/daily?date=2024-05-02")
    assert status == 200, body
    assert upstream.last.request.site_id == "site one"
    assert upstream.last.request.date == "2024-05-02"


async def test_bad_query_value_names_the_parameter(http: aiohttp.ClientSession, gateway: str) -> None:
    status, body, _ = await request(http, "GET", gateway + "/stats?site_id=s1&limit=abc")
    assert status == 400
    assert body["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "'limit'" in body["message"]
    assert body["details"][0]["field_violations"][0]["field"] == "limit"


async def test_health_get_bindings(http: aiohttp.ClientSession, gateway: str, upstream: Any) -> None:
    for path in ("/v1/health", "/health", "/api/health"):
        status, body, _ = await request(http, "GET", gateway + path)
        assert (status, body) == (200, {"status": "ok"})
    assert [call.method for call in upstream.calls] == ["GetHealth"] * 3


async def test_create_site_on_both_bindings(http: aiohttp.ClientSession, gateway: str, upstream: Any) -> None:
    for path in ("/v1/sites", "/api/site/create"):
        status, body, _ = await request(http, "POST", gateway + path, json={"name": "blog"})
        assert status == 200, body
        assert body["site"]["name"] == "blog"
        # Timestamps without presence are omitted, like Envoy's always_print_primitive_fields.
        assert "create_time" not in body["site"]


async def test_create_key_path_parameter_and_enum_body(
    http: aiohttp.ClientSession, gateway: str, upstream: Any
) -> None:
    url = gateway + "/v1/sites/site-9/keys"
    status, body, _ = await request(http, "POST", url, json={"scopes": ["SCOPE_READ", 1]})
    assert status == 200, body
    assert upstream.last.request.site_id == "site-9"
    assert list(upstream.last.request.scopes) == [auth_pb2.SCOPE_READ, auth_pb2.SCOPE_INGEST]
    assert body["key"]["scopes"] == ["SCOPE_READ", "SCOPE_INGEST"]


async def test_revoke_uses_the_custom_verb(http: aiohttp.ClientSession, gateway: str, upstream: Any) -> None:
    status, body, _ = await request(http, "POST", gateway + "/v1/keys/key-7:revoke")
    assert status == 200, body
    assert upstream.last.method == "RevokeApiKey"
    assert upstream.last.request.key_id == "key-7"
    assert body["key"]["key_id"] == "key-7"


async def test_empty_body_on_a_body_route_is_an_empty_message(
    http: aiohttp.ClientSession, gateway: str, upstream: Any
) -> None:
    status, _, _ = await request(http, "POST", gateway + "/v1/events", data=b"")
    assert status == 200
    assert upstream.last.request.event.site_id == ""


async def test_text_plain_beacon_bodies_are_transcoded(
    http: aiohttp.ClientSession, gateway: str, upstream: Any
) -> None:
    # navigator.sendBeacon posts text/plain to avoid a preflight.
    data = json.dumps({"site_id": "s1", "path": "/beacon"})
    status, _, _ = await request(
        http, "POST", gateway + "/api/event", data=data, headers={"Content-Type": "text/plain"}
    )
    assert status == 200
    assert upstream.last.request.event.path == "/beacon"


async def test_internal_rpc_without_http_rule_is_unreachable(
    http: aiohttp.ClientSession, gateway: str, upstream: Any
) -> None:
    for path in ("/analytics.v1.AuthService/Authenticate", "/v1/authenticate"):
        status, body, _ = await request(http, "POST", gateway + path, json={"api_key": "x"})
        assert status == 404
        assert body["code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert upstream.calls == []


async def test_unknown_route_is_404_and_wrong_method_is_405(
    http: aiohttp.ClientSession, gateway: str
) -> None:
    status, body, _ = await request(http, "GET", gateway + "/nope")
    assert status == 404
    assert set(body) == {"code", "message", "details"}
    status, body, response = await request(http, "GET", gateway + "/v1/events")
    assert status == 405
    assert response.headers["Allow"] == "POST, OPTIONS"
    assert "POST" in body["message"]


# --- bad input ----------------------------------------------------------------------------------


async def test_malformed_json_is_400(http: aiohttp.ClientSession, gateway: str, upstream: Any) -> None:
    status, body, _ = await request(http, "POST", gateway + "/api/event", data=b'{"site_id": ')
    assert status == 400
    assert body["code"] == 3
    assert "not valid JSON" in body["message"]
    assert upstream.calls == []


@pytest.mark.parametrize(
    ("path", "payload", "field"),
    [
        ("/api/event", {"site_id": "s1", "screen_width": "abc"}, "screen_width"),
        ("/v1/events", {"site_id": "s1", "screenWidth": -1}, "screenWidth"),
        ("/v1/events:batch", {"events": [{}, {"path": 5}]}, "events[1].path"),
        ("/api/events/batch", [{"site_id": "s1"}, {"screen_height": "x"}], "[1].screen_height"),
        ("/v1/sites", {"name": {"nested": True}}, "name"),
        ("/v1/sites/s/keys", {"scopes": ["SCOPE_READ", "NOPE"]}, "scopes[1]"),
    ],
)
async def test_wrong_types_name_the_field(
    http: aiohttp.ClientSession, gateway: str, path: str, payload: Any, field: str
) -> None:
    status, body, _ = await request(http, "POST", gateway + path, json=payload)
    assert status == 400, body
    assert f"'{field}'" in body["message"]
    violation = body["details"][0]
    assert violation["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert violation["field_violations"][0]["field"] == field


async def test_unknown_json_fields_are_dropped_like_envoy(
    http: aiohttp.ClientSession, gateway: str, upstream: Any
) -> None:
    status, _, _ = await request(
        http, "POST", gateway + "/api/event", json={"site_id": "s1", "hostname": "x"}
    )
    assert status == 200
    assert upstream.last.request.event.site_id == "s1"


async def test_unknown_json_fields_are_400_in_strict_mode(
    http: aiohttp.ClientSession, start_gateway: Any
) -> None:
    async with start_gateway(reject_unknown_fields=True) as server:
        payload = {"site_id": "s", "hostname": "x"}
        status, body, _ = await request(http, "POST", server.url + "/api/event", json=payload)
    assert status == 400
    assert body["message"] == "unknown field 'hostname'"


async def test_oversized_body_is_413(
    http: aiohttp.ClientSession, gateway: str, upstream: Any, max_body: int
) -> None:
    payload = json.dumps({"site_id": "s1", "title": "x" * max_body}).encode()
    status, body, _ = await request(http, "POST", gateway + "/api/event", data=payload)
    assert status == 413
    assert str(max_body) in body["message"]

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(max_body // 1024 + 2):
            yield b" " * 1024

    status, body, _ = await request(http, "POST", gateway + "/api/event", data=chunked())
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
    http: aiohttp.ClientSession, gateway: str, upstream: Any, code: grpc.StatusCode, http_status: int
) -> None:
    upstream.fail_next(code, f"failed with {code.name}")
    status, body, response = await request(http, "POST", gateway + "/api/event", json={"site_id": "s1"})
    assert status == http_status
    assert response.content_type == "application/json"
    assert body == {"code": code.value[0], "message": f"failed with {code.name}", "details": []}


async def test_status_details_are_rendered_with_type_and_proto_names(
    http: aiohttp.ClientSession, gateway: str, upstream: Any
) -> None:
    upstream.fail_next(
        grpc.StatusCode.INVALID_ARGUMENT,
        "event is invalid",
        violations=[("event.path", "must start with /"), ("event.site_id", "is required")],
    )
    status, body, _ = await request(http, "POST", gateway + "/api/event", json={"path": "x"})
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
    http: aiohttp.ClientSession, gateway: str, upstream: Any
) -> None:
    upstream.fail_next(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", retry_after="7")
    status, body, response = await request(http, "POST", gateway + "/api/event", json={"site_id": "s1"})
    assert status == 429
    assert response.headers["Retry-After"] == "7"
    assert body["message"] == "slow down"
    upstream.retry_after_ok = "3"
    status, _, response = await request(http, "POST", gateway + "/api/event", json={"site_id": "s1"})
    assert status == 200
    assert response.headers["Retry-After"] == "3"


async def test_upstream_down_is_503(
    http: aiohttp.ClientSession, start_gateway: Any, unused_address: str
) -> None:
    async with start_gateway(ingest_addr=unused_address) as server:
        status, body, _ = await request(http, "POST", server.url + "/api/event", json={"site_id": "s1"})
        # The other upstreams are unaffected.
        stats_status, _, _ = await request(http, "GET", server.url + "/api/stats?site_id=s")
    assert status == 503
    assert body["code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert body["message"] == "upstream unavailable"
    assert stats_status == 200


async def test_upstream_deadline_is_504(
    http: aiohttp.ClientSession, start_gateway: Any, upstream: Any
) -> None:
    upstream.delay_s = 0.5
    async with start_gateway(upstream_timeout_s=0.1) as server:
        status, body, _ = await request(http, "POST", server.url + "/api/event", json={"site_id": "s1"})
    assert status == 504
    assert body["code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


async def test_shorter_grpc_timeout_header_is_honoured(
    http: aiohttp.ClientSession, gateway: str, upstream: Any
) -> None:
    upstream.delay_s = 0.5
    headers = {"grpc-timeout": "100m"}
    status, _, _ = await request(
        http, "POST", gateway + "/api/event", json={"site_id": "s1"}, headers=headers
    )
    assert status == 504
    assert "grpc-timeout" not in upstream.last.metadata


# --- headers ------------------------------------------------------------------------------------


async def test_headers_are_forwarded_as_metadata(
    http: aiohttp.ClientSession, gateway: str, upstream: Any
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
    status, _, _ = await request(
        http, "POST", gateway + "/api/event", json={"site_id": "s1"}, headers=headers
    )
    assert status == 200
    metadata = upstream.last.metadata
    assert metadata["x-api-key"] == "k-123"
    assert metadata["authorization"] == "Bearer t"
    assert metadata["x-request-id"] == "req-1"
    assert metadata["x-country"] == "DE"
    assert metadata["accept-language"] == "de-DE"
    assert metadata["x-custom-bin"] == b"\x00\x01"
    assert metadata["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    # grpc-core owns user-agent: the browser's value arrives as x-forwarded-user-agent.
    assert metadata["x-forwarded-user-agent"] == BROWSER_UA
    assert str(metadata["user-agent"]).startswith("analytics-gateway/0.1 grpc-python-asyncio/")
    for dropped in ("x-hop", "host", "content-type", "content-length", "connection", "keep-alive"):
        assert dropped not in metadata


async def test_forwarded_for_without_a_previous_hop_and_generated_request_id(
    http: aiohttp.ClientSession, gateway: str, upstream: Any
) -> None:
    headers = {"X-Latin": "caf\u00e9".encode().decode("latin-1")}
    status, _, _ = await request(http, "GET", gateway + "/api/health", headers=headers)
    assert status == 200
    metadata = upstream.last.metadata
    assert metadata["x-forwarded-for"] == "127.0.0.1"
    assert len(str(metadata["x-request-id"])) == 32
    assert "x-latin" not in metadata  # non-ASCII values cannot be metadata


# --- CORS ---------------------------------------------------------------------------------------


async def test_preflight_is_answered_by_the_gateway(
    http: aiohttp.ClientSession, gateway: str, upstream: Any
) -> None:
    headers = {
        "Origin": "https://shop.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-api-key",
    }
    async with http.options(gateway + "/api/event", headers=headers) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert response.headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
        allowed = {item.strip() for item in response.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"content-type", "x-api-key", "authorization", "x-request-id"} <= allowed
        assert int(response.headers["Access-Control-Max-Age"]) > 0
    assert upstream.calls == []
    async with http.options(gateway + "/unknown", headers=headers) as response:
        assert response.status == 404


async def test_allow_origin_on_success_and_error(
    http: aiohttp.ClientSession, gateway: str, upstream: Any
) -> None:
    headers = {"Origin": "https://shop.example"}
    _, _, ok = await request(http, "GET", gateway + "/api/health", headers=headers)
    _, _, not_found = await request(http, "GET", gateway + "/missing", headers=headers)
    upstream.fail_next(grpc.StatusCode.PERMISSION_DENIED, "no")
    _, _, denied = await request(http, "GET", gateway + "/api/health", headers=headers)
    for response in (ok, not_found, denied):
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "Vary" not in response.headers


async def test_configured_origins_are_echoed_with_vary(
    http: aiohttp.ClientSession, start_gateway: Any
) -> None:
    async with start_gateway(cors_allow_origins=("https://a.example", "https://b.example")) as server:
        _, _, allowed = await request(
            http, "GET", server.url + "/api/health", headers={"Origin": "https://b.example"}
        )
        _, _, refused = await request(
            http, "GET", server.url + "/api/health", headers={"Origin": "https://evil.example"}
        )
        async with http.options(
            server.url + "/api/event", headers={"Origin": "https://a.example"}
        ) as preflight:
            preflight_headers = preflight.headers
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://b.example"
    assert allowed.headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert refused.headers["Vary"] == "Origin"
    assert preflight_headers["Access-Control-Allow-Origin"] == "https://a.example"


# --- logging ------------------------------------------------------------------------------------


async def test_one_access_line_per_request_without_secrets(
    http: aiohttp.ClientSession, gateway: str, upstream: Any
) -> None:
    headers = {"X-Api-Key": "k-secret", "Authorization": "Bearer secret", "X-Request-Id": "trace-1"}
    with capture_logs() as logs:
        await request(http, "GET", gateway + "/v1/sites/s1/stats/daily?limit=2", headers=headers)
    lines = [entry for entry in logs if entry["event"] == "http_request"]
    assert len(lines) == 1
    line = lines[0]
    assert line["method"] == "GET"
    assert line["route"] == "/v1/sites/{site_id}/stats/daily"
    assert line["status"] == 200
    assert line["grpc_status"] == "OK"
    assert line["request_id"] == "trace-1"
    assert line["duration_ms"] >= 0
    assert "secret" not in repr(logs)
    assert "127.0.0.1" not in repr(logs)
