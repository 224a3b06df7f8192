"""Status mapping, error rendering, settings and CORS policy."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from gateway_service.cors import Cors
from gateway_service.errors import HTTP_STATUS, ErrorRenderer, GatewayError, http_status, retry_after
from gateway_service.routes import load_descriptor_set
from gateway_service.settings import Settings, SettingsError, load_settings

POOL, _ = load_descriptor_set()


def test_every_status_code_has_an_http_status() -> None:
    assert set(HTTP_STATUS) == set(grpc.StatusCode)
    assert http_status(grpc.StatusCode.CANCELLED) == 499
    assert http_status(grpc.StatusCode.RESOURCE_EXHAUSTED) == 429


class FakeRpcError(grpc.aio.AioRpcError):
    def __init__(
        self, code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, str | bytes], ...]
    ) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details)


def test_status_details_render_known_and_unknown_types() -> None:
    status = status_pb2.Status(code=3, message="bad")
    known = any_pb2.Any()
    known.Pack(error_details_pb2.BadRequest(field_violations=[{"field": "a", "description": "b"}]))
    status.details.append(known)
    status.details.append(any_pb2.Any(type_url="type.googleapis.com/x.Unknown", value=b"\x01"))
    error = FakeRpcError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "bad",
        (("grpc-status-details-bin", status.SerializeToString()), ("retry-after", "5")),
    )
    rendered = ErrorRenderer(POOL).rpc_error(error)
    assert rendered.status == 400
    assert rendered.headers == {"Retry-After": "5"}
    body = json.loads(rendered.body)
    assert body["code"] == 3
    assert body["details"][0]["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert body["details"][0]["field_violations"][0]["field"] == "a"
    assert body["details"][1] == {"@type": "type.googleapis.com/x.Unknown", "value": "AQ=="}


def test_connection_failures_do_not_leak_upstream_addresses() -> None:
    error = FakeRpcError(
        grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; 10.1.2.3:50152", ()
    )
    rendered = ErrorRenderer(POOL).rpc_error(error)
    assert rendered.status == 503
    assert json.loads(rendered.body)["message"] == "upstream unavailable"


def test_gateway_errors_share_the_status_shape() -> None:
    error = GatewayError(400, grpc.StatusCode.INVALID_ARGUMENT, "no", [("f", "no")], {"X": "1"})
    rendered = ErrorRenderer(POOL).gateway_error(error)
    assert (rendered.status, rendered.headers) == (400, {"X": "1"})
    assert json.loads(rendered.body) == {
        "code": 3,
        "message": "no",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "field_violations": [{"field": "f", "description": "no"}],
            }
        ],
    }


def test_retry_after_only_from_text_values() -> None:
    assert retry_after([("retry-after", b"1")], [("retry-after", "2")]) == {"Retry-After": "2"}
    assert retry_after([]) == {}


def test_settings_defaults_and_overrides() -> None:
    assert load_settings({}) == Settings()
    settings = load_settings(
        {
            "ANALYTICS_HTTP_HOST": "0.0.0.0",
            "ANALYTICS_HTTP_PORT": "9000",
            "ANALYTICS_INGEST_ADDR": "ingest:1",
            "ANALYTICS_QUERY_ADDR": "query:2",
            "ANALYTICS_AUTH_ADDR": "auth:3",
            "ANALYTICS_PROCESSOR_ADDR": "processor:4",
            "ANALYTICS_HTTP_MAX_BODY_BYTES": "1024",
            "ANALYTICS_HTTP_UPSTREAM_TIMEOUT_S": "2.5",
            "ANALYTICS_CORS_ALLOW_ORIGINS": "https://a.example, https://b.example",
            "ANALYTICS_HTTP_REJECT_UNKNOWN_FIELDS": "true",
            "ANALYTICS_HTTP_REUSE_PORT": "yes",
            "ANALYTICS_LOG_LEVEL": "debug",
        }
    )
    assert settings.http_port == 9000
    assert settings.cors_allow_origins == ("https://a.example", "https://b.example")
    assert settings.upstreams == {
        "analytics.v1.IngestService": "ingest:1",
        "analytics.v1.QueryService": "query:2",
        "analytics.v1.AuthService": "auth:3",
        "analytics.v1.ProcessorService": "processor:4",
    }
    assert (settings.max_body_bytes, settings.upstream_timeout_s, settings.log_level) == (1024, 2.5, "DEBUG")
    assert settings.reject_unknown_fields
    assert settings.reuse_port


@pytest.mark.parametrize(
    "environ",
    [
        {"ANALYTICS_HTTP_PORT": "x"},
        {"ANALYTICS_INGEST_ADDR": "nohost"},
        {"ANALYTICS_HTTP_MAX_BODY_BYTES": "0"},
        {"ANALYTICS_CORS_ALLOW_ORIGINS": " , "},
        {"ANALYTICS_LOG_LEVEL": "loud"},
    ],
)
def test_bad_settings_fail_clearly(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match=next(iter(environ))):
        load_settings(environ)


def test_cors_policy() -> None:
    anyone = Cors(["*"])
    assert anyone.headers("https://x") == {"Access-Control-Allow-Origin": "*"}
    listed = Cors(["https://a"])
    assert listed.headers("https://a") == {"Access-Control-Allow-Origin": "https://a", "Vary": "Origin"}
    assert listed.headers("https://b") == {"Vary": "Origin"}
    assert listed.preflight_headers("https://b") == {"Vary": "Origin"}
    assert listed.preflight_headers("https://a")["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
