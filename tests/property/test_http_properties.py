"""Random and malformed HTTP input at the edge: 2xx or a JSON 4xx, never a 5xx or a stored reject."""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from analytics_testing.fuzz import THROUGH_SERVICES

pytestmark = [
    pytest.mark.e2e,
    # Reports of failing examples may hold megabyte strings; hypothesis warns before printing them.
    pytest.mark.filterwarnings("ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"),
]

FUZZ = THROUGH_SERVICES
MARK = "{MARK}"  # replaced by the request's unique path prefix when it is sent
SITE = "{SITE}"
OTHER = "{OTHER}"
INGEST_ROUTES = ("/api/event", "/event", "/v1/events", "/v1/events:batch", "/api/events/batch")
STATS_ROUTES = ("/api/stats", "/stats", "/v1/sites/{site}/stats/daily")

printable = st.characters(exclude_categories=("Cs", "Cc"))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
huge_strings = st.builds(
    lambda ch, n: ch * n,
    st.characters(exclude_categories=("Cs",)),
    # Over every field limit but under the edge's 2 MiB body limit (the "huge" body kind crosses it).
    st.sampled_from([36, 101, 257, 1025, 2049, 4097, 70_000, 300_000]),
)

# Good values per field, and the JSON names the edge accepts for it (proto and lowerCamel names).
GOOD: dict[str, st.SearchStrategy[Any]] = {
    "site_id": st.sampled_from([*[SITE] * 8, OTHER, "00000000-0000-0000-0000-000000000000"]),
    "event_type": st.sampled_from(["pageview", "page_view", "signup"]),
    "path": st.text(printable, max_size=30).map(lambda s: MARK + s),
    "url": st.sampled_from(["", "https://shop.example/a?utm_source=x&utm_medium=y"]),
    "referrer": st.sampled_from(["", "https://www.search.example/q"]),
    "title": st.text(printable, max_size=30),
    "user_id": st.text(printable, max_size=20),
    "event_id": st.uuids().map(str),
    "timestamp": st.sampled_from(["", "2024-05-01T12:30:00Z", "2024-05-01T12:30:00+02:00", "2024-05-01"]),
    "properties": st.dictionaries(
        st.text(printable, min_size=1, max_size=8), st.text(printable, max_size=8), max_size=3
    ),
    "screen_width": st.integers(0, 100_000),
    "screen_height": st.integers(0, 100_000),
    "language": st.sampled_from(["en-US", "de", ""]),
}
CAMEL = {"user_id": "userId", "event_id": "eventId", "event_type": "eventType", "screen_width": "screenWidth"}
BAD: dict[str, st.SearchStrategy[Any]] = {
    "site_id": st.sampled_from(["not-a-uuid", "", "{12345678-1234-5678-1234-567812345678}"]),
    "event_type": st.sampled_from(["", " ", "pageview\n"]),
    "path": st.sampled_from(["", "no-slash", "/with\x00nul", "/tab\there"]),
    "url": st.sampled_from(["http://[::1", "nope", "ftp://x.example/"]),
    "referrer": st.sampled_from(["http://[oops", "\x7f"]),
    "title": st.text(max_size=30),  # control characters included
    "event_id": st.sampled_from(["x", "12345678-1234-5678-1234-5678123456789"]),
    "timestamp": st.sampled_from(
        ["2024-02-30T00:00:00Z", "last tuesday", "2999-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00"]
    ),
    "screen_height": st.integers(-5, 2**33),
    "properties": st.dictionaries(st.text(max_size=3), st.text(max_size=3), min_size=1, max_size=3),
}


@st.composite
def event_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly valid events, each field sometimes bad, of the wrong JSON type, or huge."""
    event: dict[str, Any] = {}
    for name, good in GOOD.items():
        if name not in ("site_id", "event_type", "path") and draw(st.booleans()):
            continue  # optional fields come and go
        choice = draw(st.integers(0, 49))
        if choice == 0:
            value = draw(json_values)  # usually the wrong JSON type
        elif choice == 1:
            value = draw(huge_strings)
        elif choice in (2, 3) and name in BAD:
            value = draw(BAD[name])
        elif choice == 4 and name != "site_id":
            continue  # a required field goes missing now and then
        else:
            value = draw(good)
        event[CAMEL[name] if name in CAMEL and draw(st.booleans()) else name] = value
    if draw(st.integers(0, 9)) == 0:
        event[draw(st.text(max_size=10))] = draw(json_values)  # an unknown field
    return event


def _nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    inner = b'{"a":' * depth + b"1" + b"}" * depth
    return (
        b'{"site_id":"'
        + SITE.encode()
        + b'","event_type":"pageview","path":"/x","properties":'
        + inner
        + b"}"
    )


bodies = st.one_of(
    st.tuples(st.just("event"), event_dicts()),
    st.tuples(st.just("event"), event_dicts()),
    st.tuples(st.just("events"), st.lists(event_dicts(), max_size=4)),
    st.tuples(st.just("json"), json_values),
    st.tuples(st.just("text"), st.text(max_size=200)),
    st.tuples(st.just("bytes"), st.binary(max_size=200)),
    st.tuples(
        st.just("nested"),
        st.tuples(
            st.sampled_from([10, 999, 1000, 1001, 5_000, 100_000]),
            st.sampled_from(["array", "object", "field"]),
        ),
    ),
    st.tuples(st.just("huge"), st.sampled_from([1_500_000, 2_100_000, 3_000_000])),
    st.tuples(
        st.just("raw"),
        st.sampled_from(
            [
                b"",
                b" ",
                b"null",
                b"NaN",
                b'{"site_id": NaN}',
                b'{"path": "\xff\xfe"}',
                b'{"path": "\\ud800"}',
                b'{"screen_width": 1e400}',
                b'{"screen_width": 123456789012345678901234567890}',
                b'{"site_id": "a", "site_id": "b"}',
                b'{"events": {"0": {}}}',
                b'{"events": [null]}',
                b"[1, 2, 3]",
                b'"just a string"',
                b"\x00\x00\x00",
            ]
        ),
    ),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
        None,
    ]
)
credentials = st.sampled_from([*["own"] * 6, "bearer", "other", "none", "garbage"])


def _substitute(value: Any, marker: str, sites: Any) -> Any:
    if isinstance(value, str):
        return value.replace(MARK, marker, 1).replace(SITE, sites.site_id).replace(OTHER, sites.other_site_id)
    if isinstance(value, list):
        return [_substitute(v, marker, sites) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, marker, sites) for k, v in value.items()}
    return value


def _event_ids(value: Any) -> list[str]:
    if isinstance(value, dict):
        ids = [v for k, v in value.items() if k in ("event_id", "eventId") and isinstance(v, str)]
        return ids + [i for v in value.values() for i in _event_ids(v)]
    if isinstance(value, list):
        return [i for v in value for i in _event_ids(v)]
    return []


def build_body(
    route: str, kind: str, value: Any, marker: str, sites: Any, *, ascii_only: bool
) -> tuple[bytes, list[str]]:
    """The request body bytes and the event ids it carries."""
    if kind in ("event", "events", "json"):
        value = _substitute(value, marker, sites)
        if kind == "event" and route in ("/v1/events:batch", "/api/events/batch"):
            value = [value] if route == "/api/events/batch" else {"events": [value]}
        elif kind == "events" and route == "/v1/events:batch":
            value = {"events": value}
        return json.dumps(value, ensure_ascii=ascii_only).encode(), _event_ids(value)
    if kind == "text":
        return value.encode(), []
    if kind == "nested":
        depth, shape = value
        return _nested(depth, shape).replace(SITE.encode(), sites.site_id.encode()), []
    if kind == "huge":
        payload = {"site_id": sites.site_id, "event_type": "pageview", "path": marker, "title": "t" * value}
        return json.dumps(payload).encode(), []
    return value, []


def parses_as_json(body: bytes) -> bool:
    try:
        value = json.loads(body, parse_constant=lambda _: math.nan)
    except (ValueError, RecursionError):
        return False
    return value is not None


def check_reply(reply: Any, context: str) -> None:
    """2xx with JSON, or 4xx with a google.rpc.Status-shaped JSON body; never 5xx."""
    assert reply.status < 500, f"{reply.status} for {context}: {reply.body[:300]!r}"
    assert reply.content_type.startswith("application/json"), (
        f"{reply.status} {reply.content_type}: {context}"
    )
    body = json.loads(reply.body)
    if reply.status >= 400:
        assert isinstance(body, dict), body
        assert isinstance(body.get("code"), int) and body["code"] > 0, body
        assert isinstance(body.get("message"), str) and body["message"], body


def headers_for(who: str, sites: Any, content_type: str | None) -> dict[str, str]:
    headers = {
        "own": {"x-api-key": sites.api_key},
        "bearer": {"Authorization": f"Bearer {sites.api_key}"},
        "other": {"x-api-key": sites.other_api_key},
        "none": {},
        "garbage": {"x-api-key": "ak_" + "q" * 40},
    }[who]
    if content_type is not None:
        headers["Content-Type"] = content_type
    return headers


def test_ingest_routes_answer_any_body_with_2xx_or_json_4xx(edge: Any, ledger: Any) -> None:
    sites = ledger.sites

    @FUZZ
    @given(
        route=st.sampled_from(INGEST_ROUTES),
        body=bodies,
        content_type=content_types,
        who=credentials,
        ascii_only=st.booleans(),
    )
    @example(
        route="/api/event",
        body=("nested", (100_000, "field")),
        content_type="application/json",
        who="own",
        ascii_only=True,
    )
    @example(
        route="/api/event",
        body=("huge", 2_100_000),
        content_type="application/json",
        who="own",
        ascii_only=True,
    )
    def run(route: str, body: tuple[str, Any], content_type: str | None, who: str, ascii_only: bool) -> None:
        marker = ledger.marker()
        data, event_ids = build_body(route, body[0], body[1], marker, sites, ascii_only=ascii_only)
        reply = edge.call("POST", route, data, headers_for(who, sites, content_type))
        check_reply(reply, f"POST {route} {body[0]} {data[:200]!r}")
        accepted = 200 <= reply.status < 300
        if accepted:
            assert parses_as_json(data), f"{route} accepted a body that is not JSON: {data[:200]!r}"
        ledger.record(marker, event_ids, accepted=accepted)

    run()
    ledger.assert_nothing_rejected_stored()
    assert ledger.accepted > 0 and ledger.rejected > 0, "the fuzzing exercised one outcome only"


query_values = st.one_of(
    st.sampled_from(
        [
            SITE,
            OTHER,
            "",
            "2024-02-30",
            "2024-01-01",
            "0",
            "1000",
            "1001",
            "-1",
            "4294967296",
            "1e3",
            "%zz",
            "%",
        ]
    ),
    st.text(max_size=20),
    huge_strings.map(lambda s: s[:1500]),
)
query_pairs = st.lists(
    st.tuples(
        st.sampled_from(["site_id", "date", "limit", "site_id", "date", "extra", "", "limit[]"])
        | st.text(max_size=8),
        query_values,
    ),
    max_size=5,
)


def test_stats_routes_answer_any_query_with_2xx_or_json_4xx(edge: Any, ledger: Any) -> None:
    sites = ledger.sites

    @FUZZ
    @given(
        route=st.sampled_from(STATS_ROUTES),
        path_site=query_values,
        pairs=query_pairs,
        raw=st.one_of(st.none(), st.text(max_size=60)),
        who=credentials,
    )
    def run(route: str, path_site: str, pairs: list[tuple[str, str]], raw: str | None, who: str) -> None:
        substituted = [(_substitute(k, "", sites), _substitute(v, "", sites)) for k, v in pairs]
        # Hand-made query strings: bad escapes, bare '=' and '&', anything but what breaks HTTP itself.
        query = urlencode(substituted) if raw is None else quote(_substitute(raw, "", sites), safe="=&%+;")
        site = quote(_substitute(path_site, "", sites), safe="%")
        # The request line stays under 8 KiB (see test_long_query_string_gets_a_json_error); a cut
        # through a percent escape is just one more malformed input.
        target = route.replace("{site}", site[:3000]) + ("?" + query[:4000] if query else "")
        reply = edge.call("GET", target, None, headers_for(who, sites, None))
        check_reply(reply, f"GET {target[:300]}")
        if reply.status == 200:
            assert isinstance(json.loads(reply.body)["total_views"], int)

    run()
    for process in ledger.stack.processes.values():
        assert process.running, f"{process.name} died:\n{process.log_tail()}"


def test_long_query_string_gets_a_json_error(edge: Any, ledger: Any) -> None:
    """Envoy accepts request headers up to 60 KiB; a 12 KiB URL (Envoy forwards it twice, in :path
    and x-envoy-original-path) must reach the query service every time, not only when gRPC's
    metadata limits happen to let it through."""
    target = "/api/stats?site_id=" + "a" * 12_000
    for _ in range(10):
        reply = edge.call("GET", target, None, {"x-api-key": ledger.sites.api_key})
        check_reply(reply, f"GET {target[:60]}... ({len(target)} bytes)")
        assert reply.status == 400 and "site_id" in json.loads(reply.body)["message"]


def test_timestamp_beyond_datetime_range_is_400_not_500(edge: Any, ledger: Any) -> None:
    sites = ledger.sites
    event = {
        "site_id": sites.site_id,
        "event_type": "pageview",
        "path": "/t",
        "timestamp": "0001-01-01T00:00:00+01:00",
    }
    reply = edge.call("POST", "/api/event", json.dumps(event).encode(), {"x-api-key": sites.api_key})
    check_reply(reply, "POST /api/event with timestamp 0001-01-01T00:00:00+01:00")
    assert reply.status == 400 and "event.timestamp" in json.loads(reply.body)["message"]


@pytest.mark.parametrize(
    "target", ["/v1/sites/%0A/stats/daily", "/api/stats%0A", "/%0D%0A", "/v1/sites/%00Q/stats/daily", "/%zz"]
)
def test_path_with_encoded_line_break_gets_a_json_error(edge: Any, ledger: Any, target: str) -> None:
    """Every path is the edge's to answer, with JSON errors."""
    reply = edge.call("GET", target, None, {"x-api-key": ledger.sites.api_key})
    check_reply(reply, f"GET {target}")
    assert 400 <= reply.status < 500
