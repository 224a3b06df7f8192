"""The Envoy configuration rendered from the real descriptor set and the repository's route table."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from google.api import annotations_pb2

from analytics_edge import envoy, launcher, openapi
from analytics_edge.__main__ import main

UPSTREAMS = [
    f"{name}=127.0.0.1:{port}"
    for name, port in (("auth", 1), ("ingest", 2), ("query", 3), ("processor", 4), ("query_ws", 5))
]


def _descriptor() -> Any:
    return openapi.load_descriptor_set(openapi.default_descriptor_set())


def _rpcs_with_http_rules() -> set[str]:
    found = set()
    for file in _descriptor().file:
        for service in file.service:
            for method in service.method:
                if method.options.HasExtension(annotations_pb2.http):
                    found.add(f"/{file.package}.{service.name}/{method.name}")
    return found


def _connection_manager(config: dict[str, Any]) -> dict[str, Any]:
    listener = config["static_resources"]["listeners"][0]
    typed: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return typed


def _render(
    tmp_path: Path, table: Path = launcher.DEFAULT_TABLE
) -> tuple[launcher.EdgeFiles, dict[str, Any]]:
    files = launcher.write_edge(
        tmp_path, listen="127.0.0.1:8080", admin="127.0.0.1:9901", upstreams=UPSTREAMS, table=table
    )
    return files, json.loads(files.config.read_text())


def test_every_rpc_with_an_http_rule_has_one_route_to_its_upstream(tmp_path: Path) -> None:
    _, config = _render(tmp_path)
    routes = _connection_manager(config)["route_config"]["virtual_hosts"][0]["routes"]
    grpc_routes = {
        r["match"]["path"]: r["route"]["cluster"]
        for r in routes
        if r["match"].get("path", "").startswith("/analytics.")
    }
    expected = _rpcs_with_http_rules()
    assert set(grpc_routes) == expected
    assert "/analytics.v1.AuthService/Authenticate" not in grpc_routes  # internal: no http rule
    assert "/analytics.v1.AuthService/GetIdentitySecret" not in grpc_routes
    assert "/analytics.v1.IngestService/TrackStream" not in grpc_routes
    assert grpc_routes["/analytics.v1.IngestService/Track"] == "ingest"
    assert grpc_routes["/analytics.v1.QueryService/GetDailyStats"] == "query"
    # Everything else ends at a cluster that does not exist: 404, never a service.
    last = routes[-1]
    assert last["match"] == {"prefix": "/"}
    assert last["route"]["cluster"] not in {c["name"] for c in config["static_resources"]["clusters"]}


def test_transcoder_serves_exactly_the_services_with_http_rules(tmp_path: Path) -> None:
    files, config = _render(tmp_path)
    filters = {f["name"]: f["typed_config"] for f in _connection_manager(config)["http_filters"]}
    transcoder = filters["envoy.filters.http.grpc_json_transcoder"]
    assert transcoder["services"] == sorted({path.split("/")[1] for path in _rpcs_with_http_rules()})
    assert transcoder["proto_descriptor"] == str(files.descriptor)
    assert files.descriptor.read_bytes() == openapi.default_descriptor_set()
    assert transcoder["convert_grpc_status"] is True
    assert transcoder["request_validation_options"] == {"reject_unknown_method": True}
    assert next(iter(filters)) == "envoy.filters.http.cors"
    assert list(filters)[-1] == "envoy.filters.http.router"


def test_a_service_missing_from_the_route_table_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "edge.toml"
    text = launcher.DEFAULT_TABLE.read_text()
    start = text.index('[services."analytics.v1.QueryService"]')
    end = text.index("[services.", start + 1)
    table.write_text(text[:start] + text[end:])
    with pytest.raises(envoy.EdgeConfigError, match=r"analytics\.v1\.QueryService is not in the route table"):
        _render(tmp_path / "out", table)


def test_websocket_paths_are_upgraded_to_their_http1_upstream(tmp_path: Path) -> None:
    _, config = _render(tmp_path)
    manager = _connection_manager(config)
    # Upgrades are off unless a route turns them on.
    assert manager["upgrade_configs"] == [{"upgrade_type": "websocket", "enabled": False}]
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]
    (ws,) = [r for r in routes if r["match"].get("path") == "/ws"]
    assert ws["route"]["cluster"] == "query_ws"
    assert ws["route"]["upgrade_configs"] == [{"upgrade_type": "websocket", "enabled": True}]
    assert ws["route"]["timeout"] == "0s"
    disabled = ws["typed_per_filter_config"]
    assert disabled["envoy.filters.http.grpc_json_transcoder"]["disabled"] is True
    assert disabled["envoy.filters.http.buffer"]["disabled"] is True
    # Before every transcoded route, so nothing else claims the path.
    assert routes.index(ws) < min(
        i for i, r in enumerate(routes) if r["match"].get("path", "").startswith("/analytics.")
    )
    (cluster,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "query_ws"]
    assert "typed_extension_protocol_options" not in cluster  # HTTP/1.1, not HTTP/2
    assert cluster["health_checks"][0]["http_health_check"] == {"path": "/health"}


def test_event_streams_are_served_by_their_http1_upstream_on_their_rpcs_get_path(tmp_path: Path) -> None:
    _, config = _render(tmp_path)
    routes = _connection_manager(config)["route_config"]["virtual_hosts"][0]["routes"]
    (live,) = [r for r in routes if "safe_regex" in r["match"]]
    regex = live["match"]["safe_regex"]["regex"]
    assert regex == "^/v1/sites/[^/]+/live$"
    assert re.match(regex, "/v1/sites/0b7c1c38-53c0-4f1e-9a43-8d1f2c1d3f4e/live")
    assert not re.match(regex, "/v1/sites/a/b/live") and not re.match(regex, "/v1/sites/a/live/x")
    assert live["match"]["headers"] == [{"name": ":method", "string_match": {"exact": "GET"}}]
    assert live["route"] == {"cluster": "query_ws", "timeout": "0s"}
    assert live["typed_per_filter_config"]["envoy.filters.http.grpc_json_transcoder"]["disabled"] is True
    # Before every transcoded route (the RPC keeps its gRPC route for native gRPC callers).
    assert routes.index(live) < min(
        i for i, r in enumerate(routes) if r["match"].get("path", "").startswith("/analytics.")
    )


@pytest.mark.parametrize(
    "rpc",
    ["analytics.v1.LiveService.GetRealtime", "analytics.v1.LiveService.NoSuchRpc", "analytics.v1.Nothing.X"],
)
def test_an_event_stream_must_be_a_server_streaming_rpc_with_a_get_rule(tmp_path: Path, rpc: str) -> None:
    table = tmp_path / "edge.toml"
    text = launcher.DEFAULT_TABLE.read_text()
    table.write_text(
        text.replace('"analytics.v1.LiveService.StreamLive" = "query_ws"', f'"{rpc}" = "query_ws"')
    )
    with pytest.raises(envoy.EdgeConfigError, match="not a server-streaming RPC with a GET http rule"):
        _render(tmp_path / "out", table)


def test_an_upstream_without_an_address_is_refused(tmp_path: Path) -> None:
    with pytest.raises(envoy.EdgeConfigError, match="no address for upstream"):
        launcher.write_edge(
            tmp_path, listen="127.0.0.1:8080", admin="127.0.0.1:9901", upstreams=UPSTREAMS[:3]
        )
    with pytest.raises(envoy.EdgeConfigError, match="name=host:port"):
        launcher.write_edge(tmp_path, listen="127.0.0.1:8080", admin="127.0.0.1:9901", upstreams=["auth"])


def test_listed_origins_are_matched_exactly(tmp_path: Path) -> None:
    table = tmp_path / "edge.toml"
    table.write_text(
        launcher.DEFAULT_TABLE.read_text().replace('["*"]', '["https://a.example", "https://b.example"]')
    )
    _, config = _render(tmp_path / "out", table)
    policy = _connection_manager(config)["route_config"]["virtual_hosts"][0]["typed_per_filter_config"]
    matchers = policy["envoy.filters.http.cors"]["allow_origin_string_match"]
    assert matchers == [{"exact": "https://a.example"}, {"exact": "https://b.example"}]


def test_the_error_body_routes_switch_the_lua_filter_on_only_for_their_paths(tmp_path: Path) -> None:
    _, config = _render(tmp_path)
    manager = _connection_manager(config)
    lua = next(f for f in manager["http_filters"] if f["name"] == "envoy.filters.http.lua")
    assert lua["disabled"] is True
    assert (
        '["/api/v2/query"] = "{\\"error\\":\\"%s\\"}"'
        in lua["typed_config"]["default_source_code"]["inline_string"]
    )
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]
    enabling = [
        r["match"].get("path")
        for r in routes
        if "envoy.filters.http.lua" in r.get("typed_per_filter_config", {})
    ]
    assert enabling == ["/api/v2/query"]


def test_an_unknown_error_style_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "edge.toml"
    table.write_text(launcher.DEFAULT_TABLE.read_text().replace('= "plausible"', '= "klingon"'))
    with pytest.raises(envoy.EdgeConfigError, match="'klingon'; known: plausible"):
        _render(tmp_path / "out", table)


def test_access_log_leaves_out_query_strings_and_addresses(tmp_path: Path) -> None:
    _, config = _render(tmp_path)
    fields = _connection_manager(config)["access_log"][0]["typed_config"]["log_format"]["json_format"]
    text = repr(fields)
    assert "DOWNSTREAM" not in text  # no client address
    assert "%REQ(:PATH)%" not in text  # the full path carries the query string
    assert fields["path"].startswith("%REQ_WITHOUT_QUERY(")
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_envoy_accepts_the_rendering(tmp_path: Path) -> None:
    files, _ = _render(tmp_path)
    checked = launcher.validate(files)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # And refuses a broken one, so the check above can fail.
    files.config.write_text(files.config.read_text().replace('"LEAST_REQUEST"', '"NO_SUCH_POLICY"'))
    assert launcher.validate(files).returncode != 0


def test_a_rendering_for_kubernetes_resolves_services_and_reads_its_files_where_mounted(
    tmp_path: Path,
) -> None:
    upstreams = [f"--upstream={n}={n}.analytics.svc.cluster.local:50051" for n in ("auth", "ingest", "query")]
    argv = [
        *("envoy", "--dir", str(tmp_path), *upstreams),
        *("--upstream=processor=processor:50051", "--upstream=query_ws=query:50052"),
    ]
    assert main([*argv, "--dns-upstreams", "--files-at", "/etc/envoy"]) == 0
    config = json.loads((tmp_path / launcher.CONFIG_NAME).read_text())
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    assert {c["type"] for c in clusters.values()} == {"STRICT_DNS"}
    endpoint = clusters["ingest"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {
        "address": "ingest.analytics.svc.cluster.local",
        "port_value": 50051,
    }
    text = json.dumps(config)
    for name in ("descriptor_set.binpb", "openapi.json", "docs.html"):
        assert f'"/etc/envoy/{name}"' in text
        assert (tmp_path / name).exists()
    assert str(tmp_path) not in text
    # Without them: static addresses and the files where they were written.
    assert main(argv) == 0
    config = json.loads((tmp_path / launcher.CONFIG_NAME).read_text())
    assert {c["type"] for c in config["static_resources"]["clusters"]} == {"STATIC"}
    assert "/etc/envoy" not in json.dumps(config)
    with pytest.raises(SystemExit):
        main([*argv, "--files-at", "/etc/envoy", "--validate"])


def test_upstreams_without_an_address_may_be_named_after_their_services(tmp_path: Path) -> None:
    argv = ["envoy", "--dir", str(tmp_path), "--dns-upstreams", "--upstream=auth=auth.elsewhere:7000"]
    assert main([*argv, "--upstream-port", "50051"]) == 0
    config = json.loads((tmp_path / launcher.CONFIG_NAME).read_text())
    addresses = {
        c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
            "socket_address"
        ]
        for c in config["static_resources"]["clusters"]
    }
    assert sorted(addresses) == envoy.RouteTable.load(launcher.DEFAULT_TABLE).upstreams
    assert addresses["auth"] == {"address": "auth.elsewhere", "port_value": 7000}
    for name in set(addresses) - {"auth"}:
        assert addresses[name] == {"address": name, "port_value": 50051}
    with pytest.raises(SystemExit):  # without it, every upstream needs its address
        main(argv)
