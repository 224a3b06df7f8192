"""Request mapping (path, query, body) and response printing."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import message_factory

from gateway_service.routes import Route, http_routes, load_descriptor_set, parse_template
from gateway_service.transcode import RequestDecoder, ResponseEncoder, TranscodeError, decode_path_value

POOL, FILES = load_descriptor_set()
ROUTES = {(route.http_method, route.template.text): route for route in http_routes(POOL, FILES)}


def decoder(method: str, template: str, *, strict: bool = False) -> RequestDecoder:
    route: Route = ROUTES[(method, template)]
    message_class: Any = message_factory.GetMessageClass(route.method.input_type)
    return RequestDecoder(message_class, route.template, route.body, reject_unknown_fields=strict)


def test_body_field_takes_the_whole_body() -> None:
    message: Any = decoder("POST", "/api/event").decode((), "", b'{"site_id": "s", "screenWidth": 5}')
    assert message.event.site_id == "s"
    assert message.event.screen_width == 5


def test_repeated_body_field_takes_a_bare_array() -> None:
    body = b'[{"path": "/a"}, {"path": "/b", "properties": {"k": "v"}}]'
    message: Any = decoder("POST", "/api/events/batch").decode((), "", body)
    assert [event.path for event in message.events] == ["/a", "/b"]
    assert dict(message.events[1].properties) == {"k": "v"}


def test_star_body_ignores_query_parameters() -> None:
    message: Any = decoder("POST", "/v1/events:batch").decode((), "events.path=x", b'{"events": [{}]}')
    assert len(message.events) == 1
    assert message.events[0].path == ""


@pytest.mark.parametrize("body", [b"", b"  \n", b"null"])
def test_empty_body_is_an_empty_message(body: bytes) -> None:
    message: Any = decoder("POST", "/v1/events").decode((), "", body)
    assert not message.HasField("event")


def test_query_parameters_are_typed_and_both_spellings_work() -> None:
    get = decoder("GET", "/api/stats")
    message: Any = get.decode((), "siteId=a%20b&date=2024-01-02&limit=7&unknown=1&=x", b"")
    assert (message.site_id, message.date, message.limit) == ("a b", "2024-01-02", 7)
    # '+' is not a space, as with Envoy's default query_param_unescape_plus: false.
    assert get.decode((), "site_id=a+b", b"").site_id == "a+b"
    assert get.decode((), "limit=1&limit=2", b"").limit == 2


@pytest.mark.parametrize(
    ("query", "text"),
    [
        ("limit=abc", "'abc' is not an unsigned 32-bit integer"),
        ("limit=-1", "out of range"),
        ("limit=4294967296", "out of range"),
        ("limit=1.5", "is not an unsigned"),
        ("site_id=%FF", "invalid value for query parameter 'site_id'"),
    ],
)
def test_bad_query_values_name_the_parameter(query: str, text: str) -> None:
    with pytest.raises(TranscodeError) as info:
        decoder("GET", "/api/stats").decode((), query, b"")
    assert text in info.value.message
    assert info.value.field == query.split("=", maxsplit=1)[0]


def test_path_parameters_set_their_fields_and_are_decoded() -> None:
    message: Any = decoder("GET", "/v1/sites/{site_id}/stats/daily").decode(("a%2Fb%20c",), "limit=3", b"")
    assert (message.site_id, message.limit) == ("a/b c", 3)
    # A path-bound field is not a query parameter.
    message = decoder("GET", "/v1/sites/{site_id}/stats/daily").decode(("p",), "site_id=q", b"")
    assert message.site_id == "p"


def test_body_wins_over_a_path_binding_like_envoy() -> None:
    message: Any = decoder("POST", "/v1/sites/{site_id}/keys").decode(("path",), "", b'{"site_id": "body"}')
    assert message.site_id == "body"
    message = decoder("POST", "/v1/keys/{key_id}:revoke").decode(("k1",), "", b"{}")
    assert message.key_id == "k1"


def test_multi_segment_values_keep_reserved_escapes() -> None:
    template = parse_template("/files/{path=**}")
    assert decode_path_value("a%2Fb/c%20d%3F", template.variables[0]) == "a%2Fb/c d%3F"
    single = parse_template("/files/{name}")
    assert decode_path_value("a%2Fb%3F", single.variables[0]) == "a/b?"


@pytest.mark.parametrize(
    ("template", "body", "field", "text"),
    [
        ("/api/event", b'{"screen_width": "abc"}', "screen_width", "invalid value for field 'screen_width'"),
        ("/api/event", b'{"properties": {"a": 1}}', "properties.a", "expected a string, got a number"),
        (
            "/api/event",
            b'{"screen_width": 1.5}',
            "screen_width",
            "expected an unsigned 32-bit integer, got 1.5",
        ),
        ("/api/event", b'{"screen_width": 4294967296}', "screen_width", "out of range"),
        ("/api/event", b'{"site_id": "\\ud800"}', "site_id", "unpaired surrogate"),
        ("/v1/events:batch", b'{"events": [{"path": 1}]}', "events[0].path", "'events[0].path'"),
        ("/api/events/batch", b'[{}, {"language": 2}]', "[1].language", "'[1].language'"),
        ("/api/events/batch", b"[{}, 3]", "[1]", "expected an object, got a number"),
        ("/api/events/batch", b"[{}, null]", "[1]", "null is not allowed"),
        ("/api/event", b'{"site_id": "a", "siteId": "b"}', "siteId", "given twice"),
    ],
)
def test_wrong_types_name_the_field(template: str, body: bytes, field: str, text: str) -> None:
    with pytest.raises(TranscodeError) as info:
        decoder("POST", template).decode((), "", body)
    assert info.value.field == field
    assert text in info.value.message


@pytest.mark.parametrize(
    ("template", "body", "text"),
    [
        ("/api/event", b'{"site_id": ', "not valid JSON"),
        ("/api/event", b'"text"', "invalid request body: expected an object, got a string"),
        ("/api/event", b"[1]", "invalid request body: expected an object, got an array"),
        ("/v1/sites", b"[]", "invalid request body: expected an object, got an array"),
        ("/api/events/batch", b"{}", "invalid request body: expected an array, got an object"),
        ("/api/event", b"\xff", "not valid JSON"),
    ],
)
def test_malformed_bodies(template: str, body: bytes, text: str) -> None:
    with pytest.raises(TranscodeError) as info:
        decoder("POST", template).decode((), "", body)
    assert text in info.value.message


def test_unknown_fields_are_dropped_unless_strict() -> None:
    body = b'{"site_id": "s", "hostname": "h"}'
    message: Any = decoder("POST", "/api/event").decode((), "", body)
    assert message.event.site_id == "s"
    with pytest.raises(TranscodeError) as info:
        decoder("POST", "/api/event", strict=True).decode((), "", body)
    assert (info.value.field, info.value.message) == ("hostname", "unknown field 'hostname'")


def test_response_prints_proto_names_and_fields_without_presence() -> None:
    message_class: Any = message_factory.GetMessageClass(
        POOL.FindMessageTypeByName("analytics.v1.EnrichedEvent")
    )
    encoded = ResponseEncoder(POOL).to_dict(message_class(visitor_id=5, screen_width=3))
    assert encoded["visitor_id"] == "5"  # int64 is a string in proto3 JSON
    assert encoded["screen_width"] == 3
    assert encoded["referrer_host"] == ""
    assert encoded["is_bot"] is False
    assert encoded["kind"] == "EVENT_KIND_UNSPECIFIED"
    assert "occurred_at" not in encoded
    assert ResponseEncoder(POOL).encode(message_class(name="é")).startswith(b'{"')
