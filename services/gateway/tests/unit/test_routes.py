"""Path template parsing and route matching."""

from __future__ import annotations

import pytest

from gateway_service.routes import (
    RouteError,
    RouteTable,
    TemplateError,
    http_routes,
    load_descriptor_set,
    parse_template,
)


def test_literal_template_is_matched_by_equality() -> None:
    template = parse_template("/v1/events:batch")
    assert template.is_literal
    assert template.verb == "batch"
    assert template.match("/v1/events:batch") == ()
    assert template.match("/v1/events") is None


def test_variable_with_custom_verb() -> None:
    template = parse_template("/v1/keys/{key_id}:revoke")
    assert template.verb == "revoke"
    assert [variable.field_path for variable in template.variables] == [("key_id",)]
    assert template.match("/v1/keys/k-1:revoke") == ("k-1",)
    assert template.match("/v1/keys/a:b:revoke") == ("a:b",)
    assert template.match("/v1/keys/k-1") is None
    assert template.match("/v1/keys/a/b:revoke") is None


def test_nested_field_paths_and_patterns() -> None:
    template = parse_template("/v1/{shelf.name=shelves/*}/books/{book.id}")
    assert [v.field_path for v in template.variables] == [("shelf", "name"), ("book", "id")]
    assert [v.multi_segment for v in template.variables] == [True, False]
    assert template.match("/v1/shelves/s1/books/b2") == ("shelves/s1", "b2")
    assert template.match("/v1/racks/s1/books/b2") is None


def test_double_star_captures_many_segments() -> None:
    template = parse_template("/files/{path=**}")
    assert template.variables[0].multi_segment
    assert template.match("/files/a/b/c.txt") == ("a/b/c.txt",)
    star = parse_template("/files/{name=*}")
    assert star.match("/files/a/b") is None


def test_bare_wildcards_match_without_capture() -> None:
    template = parse_template("/v1/*/items")
    assert template.variables == ()
    assert not template.is_literal
    assert template.match("/v1/x/items") == ()


@pytest.mark.parametrize(
    "text",
    ["v1/x", "/v1//x", "/v1/{a", "/v1/{a{b}}", "/v1/{1a}", "/v1/**/x", "/v1/x:", "/v1/a b", "/v1/{a=b c}"],
)
def test_bad_templates_are_rejected(text: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(text)


def test_literal_routes_win_over_templates_and_order_is_deterministic() -> None:
    entries = [
        ("GET", parse_template("/v1/{a}/{b}"), "generic"),
        ("GET", parse_template("/v1/{a}/stats"), "stats"),
        ("GET", parse_template("/v1/sites/{b}"), "sites"),
        ("GET", parse_template("/v1/sites/stats"), "literal"),
    ]
    for order in (entries, list(reversed(entries))):
        table = RouteTable(order)
        assert table.lookup("GET", "/v1/sites/stats") == ("literal", entries[3][1], ())
        # The template with the earlier literal segment is the more specific one.
        assert table.lookup("GET", "/v1/sites/x")[0] == "sites"
        assert table.lookup("GET", "/v1/x/stats")[0] == "stats"
        assert table.lookup("GET", "/v1/x/y")[0] == "generic"


def test_method_is_part_of_the_match() -> None:
    table = RouteTable(
        [
            ("POST", parse_template("/v1/items"), "create"),
            ("GET", parse_template("/v1/{name}"), "get"),
        ]
    )
    assert table.lookup("GET", "/v1/items") == ("get", parse_template("/v1/{name}"), ("items",))
    assert table.lookup("DELETE", "/v1/items") is None
    assert table.allowed_methods("/v1/items") == ("GET", "POST")
    assert table.allowed_methods("/nope") == ()


def test_duplicate_bindings_are_refused() -> None:
    with pytest.raises(RouteError):
        RouteTable([("GET", parse_template("/a"), 1), ("GET", parse_template("/a"), 2)])


def test_descriptor_set_yields_every_binding_and_skips_rpcs_without_rules() -> None:
    pool, files = load_descriptor_set()
    routes = {(r.http_method, r.template.text): r for r in http_routes(pool, files)}
    assert set(routes) == {
        ("POST", "/v1/sites"),
        ("POST", "/api/site/create"),
        ("POST", "/v1/sites/{site_id}/keys"),
        ("POST", "/v1/keys/{key_id}:revoke"),
        ("POST", "/v1/events"),
        ("POST", "/api/event"),
        ("POST", "/event"),
        ("POST", "/v1/events:batch"),
        ("POST", "/api/events/batch"),
        ("GET", "/v1/health"),
        ("GET", "/health"),
        ("GET", "/api/health"),
        ("GET", "/v1/sites/{site_id}/stats/daily"),
        ("GET", "/api/stats"),
        ("GET", "/stats"),
        ("GET", "/v1/admin/dead-letters"),
        ("POST", "/v1/admin/dead-letters:replay"),
        ("GET", "/v1/sites"),
        ("GET", "/v1/sites/{site_id}"),
        ("PATCH", "/v1/sites/{site_id}"),
        ("GET", "/v1/sites/{site_id}/keys"),
        ("POST", "/v1/sites/{site_id}/query"),
        ("POST", "/api/v2/query"),
        ("GET", "/api/v1/metrics"),
        ("GET", "/api/v1/events/summary"),
    }
    assert all(route.method.name != "Authenticate" for route in routes.values())
    batch = routes[("POST", "/api/events/batch")]
    assert (batch.body, batch.grpc_path) == ("events", "/analytics.v1.IngestService/TrackBatch")
    assert routes[("POST", "/v1/events")].body == "event"
    assert routes[("GET", "/api/stats")].service == "analytics.v1.QueryService"
