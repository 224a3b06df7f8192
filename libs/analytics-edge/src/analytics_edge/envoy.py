"""Renders Envoy's configuration for the HTTP edge from the descriptor set and the route table."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

_TYPE = "type.googleapis.com/"
HCM = _TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
TRANSCODER = _TYPE + "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder"
CORS_FILTER = _TYPE + "envoy.extensions.filters.http.cors.v3.Cors"
CORS_POLICY = _TYPE + "envoy.extensions.filters.http.cors.v3.CorsPolicy"
ROUTER = _TYPE + "envoy.extensions.filters.http.router.v3.Router"
FILTER_CONFIG = _TYPE + "envoy.config.route.v3.FilterConfig"
STDOUT_LOG = _TYPE + "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
REQ_WITHOUT_QUERY = _TYPE + "envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery"
DOWNSTREAM_CONNECTIONS = (
    _TYPE + "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)
MAX_DOWNSTREAM_CONNECTIONS = 50_000
UPSTREAM_STREAM_WINDOW = 256 * 1024
HEADER_MUTATION = _TYPE + "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
BUFFER = _TYPE + "envoy.extensions.filters.http.buffer.v3.Buffer"
BUFFER_PER_ROUTE = _TYPE + "envoy.extensions.filters.http.buffer.v3.BufferPerRoute"
LUA = _TYPE + "envoy.extensions.filters.http.lua.v3.Lua"
LUA_PER_ROUTE = _TYPE + "envoy.extensions.filters.http.lua.v3.LuaPerRoute"
HEALTH_CHECK = _TYPE + "envoy.extensions.filters.http.health_check.v3.HealthCheck"
HTTP_OPTIONS = _TYPE + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

# Envoy's own answers (no route, malformed JSON, body too large, upstream down) get the same body
# as every gRPC error the transcoder converts: google.rpc.Status with the code the HTTP status maps
# back to (the inverse of Envoy's gRPC → HTTP mapping).
LOCAL_REPLY_CODES: dict[int, int] = {
    400: 3,  # INVALID_ARGUMENT
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND
    405: 12,  # UNIMPLEMENTED
    408: 4,  # DEADLINE_EXCEEDED
    413: 3,  # INVALID_ARGUMENT: the request, not the server, is at fault
    415: 3,
    429: 8,  # RESOURCE_EXHAUSTED
    431: 3,
    499: 1,  # CANCELLED
    500: 13,  # INTERNAL
    501: 12,
    502: 14,  # UNAVAILABLE
    503: 14,
    504: 4,
}
# Headers a browser may send on a cross-origin call, and those its script may read in the answer.
CORS_ALLOW_HEADERS = ("content-type", "x-api-key", "authorization", "x-request-id")
CORS_EXPOSE_HEADERS = ("retry-after", "x-request-id")
# What only Envoy and the services need to see: gRPC framing and Envoy's upstream timing.
INTERNAL_RESPONSE_HEADERS = (
    "grpc-status",
    "grpc-message",
    "grpc-accept-encoding",
    "x-envoy-upstream-service-time",
)
UNROUTED = "unrouted"
# The upstream whose health HEAD /health reports: the edge exists to take events.
HEALTH_UPSTREAM = "ingest"
# Request bodies are taken as sent. Envoy's decompressor ends a request with trailers, and on a
# corrupt gzip body the transcoder then never fails it: the call hung until the route timeout (504)
# in Envoy 1.40. Browsers do not compress request bodies; gRPC callers have gRPC's compression.
ACCEPTED_ENCODINGS = "(?i)identity"


# Lua that rewrites the error answers (4xx/5xx: google.rpc.Status JSON from the transcoder or the
# local reply config) of listed HTTP paths into another shape, keeping the message's JSON escapes.
# The path is read on the request, before the transcoder rewrites it to the gRPC method, and kept
# in the stream's dynamic metadata for the response.
_ERROR_LUA = """
local FORMATS = {FORMATS}

local function json_string(text, key)
  local first = string.find(text, '"' .. key .. '":"', 1, true)
  if first == nil then return nil end
  local i = first + #key + 4
  local j = i
  while j <= #text do
    local c = string.sub(text, j, j)
    if c == "\\\\" then j = j + 2
    elseif c == '"' then return string.sub(text, i, j - 1)
    else j = j + 1 end
  end
  return nil
end

function envoy_on_request(handle)
  local path = string.match(handle:headers():get(":path") or "", "^[^?]*")
  local format = FORMATS[path]
  if format ~= nil then
    handle:streamInfo():dynamicMetadata():set("analytics.edge", "error_format", format)
  end
end

function envoy_on_response(handle)
  local state = handle:streamInfo():dynamicMetadata():get("analytics.edge")
  if state == nil or state["error_format"] == nil then return end
  local status = tonumber(handle:headers():get(":status"))
  if status == nil or status < 400 then return end
  local body = handle:body()
  local message = json_string(body:getBytes(0, body:length()), "message") or ""
  local replaced = string.format(state["error_format"], message)
  body:setBytes(replaced)
  handle:headers():replace("content-type", "application/json")
  handle:headers():replace("content-length", tostring(#replaced))
end
"""
ERROR_SCRIPT = "error_bodies"
# Style → the Lua format string of the error body (%s: the message, JSON-escaped).
ERROR_STYLES = {"plausible": '{"error":"%s"}'}


class EdgeConfigError(ValueError):
    """The route table and the descriptor set do not fit together."""


@dataclass(frozen=True)
class HttpRoute:
    """One RPC reachable over HTTP: its gRPC path and the upstream that serves it."""

    grpc_path: str
    upstream: str
    timeout_s: float


@dataclass(frozen=True)
class RouteTable:
    """deploy/envoy/edge.toml, read and checked."""

    services: Mapping[str, tuple[str, float]]
    max_body_bytes: int
    cors_allow_origins: tuple[str, ...]
    cors_max_age_s: int
    # HTTP path → error body style (ERROR_STYLES) for routes that answer another system's errors.
    error_bodies: Mapping[str, str] = field(default_factory=dict)
    # HTTP path → upstream that speaks WebSocket (plain HTTP/1.1) on it, proxied with the upgrade.
    websockets: Mapping[str, str] = field(default_factory=dict)
    # Full name of a server-streaming RPC → upstream that serves the RPC's HTTP GET route itself
    # over plain HTTP/1.1 as Server-Sent Events, in place of the transcoder.
    event_streams: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> RouteTable:
        data = tomllib.loads(path.read_text())
        services: dict[str, tuple[str, float]] = {}
        for name, entry in data.get("services", {}).items():
            try:
                services[name] = (str(entry["upstream"]), float(entry["timeout_s"]))
            except (KeyError, TypeError, ValueError) as error:
                raise EdgeConfigError(f"{path}: services.{name!r} needs upstream and timeout_s") from error
        http = data.get("http", {})
        error_bodies = {str(route): str(style) for route, style in data.get("error_bodies", {}).items()}
        for route, style in error_bodies.items():
            if style not in ERROR_STYLES:
                known = ", ".join(ERROR_STYLES)
                raise EdgeConfigError(f"{path}: error_bodies.{route!r} is {style!r}; known: {known}")
        websockets = {str(route): str(upstream) for route, upstream in data.get("websockets", {}).items()}
        streams = {str(rpc): str(upstream) for rpc, upstream in data.get("event_streams", {}).items()}
        return cls(
            services=services,
            websockets=websockets,
            event_streams=streams,
            max_body_bytes=int(http.get("max_body_bytes", 2 * 1024 * 1024)),
            cors_allow_origins=tuple(http.get("cors_allow_origins", ["*"])),
            cors_max_age_s=int(http.get("cors_max_age_s", 86_400)),
            error_bodies=error_bodies,
        )

    @property
    def upstreams(self) -> list[str]:
        plain = set(self.websockets.values()) | set(self.event_streams.values())
        return sorted({upstream for upstream, _ in self.services.values()} | plain)

    @property
    def grpc_upstreams(self) -> set[str]:
        return {upstream for upstream, _ in self.services.values()}


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise EdgeConfigError(f"expected host:port, got {text!r}")
        return cls(host.strip("[]"), int(port))

    def socket(self) -> dict[str, Any]:
        return {"socket_address": {"address": self.host, "port_value": self.port}}


@dataclass(frozen=True)
class EdgeSettings:
    """Where this rendering of the edge listens, finds its files and reaches the services."""

    listen: Address
    admin: Address
    descriptor_path: str
    upstreams: Mapping[str, Address]
    openapi_path: str | None = None
    docs_path: str | None = None
    # Kubernetes Services resolve to several pods; local upstreams are single addresses.
    dns_upstreams: bool = False


def http_routes(descriptor_set: descriptor_pb2.FileDescriptorSet, table: RouteTable) -> list[HttpRoute]:
    """Every RPC with a google.api.http rule, with its upstream; fails on an unlisted service."""
    routes: list[HttpRoute] = []
    for file in descriptor_set.file:
        for service in file.service:
            full_name = f"{file.package}.{service.name}" if file.package else service.name
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue  # internal: reachable over gRPC only
                if full_name not in table.services:
                    raise EdgeConfigError(
                        f"{full_name}.{method.name} has an http rule but {full_name} is not in the "
                        "route table (deploy/envoy/edge.toml [services])"
                    )
                upstream, timeout_s = table.services[full_name]
                routes.append(HttpRoute(f"/{full_name}/{method.name}", upstream, timeout_s))
    return routes


def stream_paths(descriptor_set: descriptor_pb2.FileDescriptorSet, table: RouteTable) -> dict[str, str]:
    """The HTTP path template of each of the table's event streams (its RPC's GET rule) → upstream;
    fails unless each names a server-streaming RPC with a GET rule."""
    methods = {
        f"{file.package}.{service.name}.{method.name}": method
        for file in descriptor_set.file
        for service in file.service
        for method in service.method
    }
    paths: dict[str, str] = {}
    for name, upstream in sorted(table.event_streams.items()):
        method = methods.get(name)
        rule = method.options.Extensions[annotations_pb2.http] if method is not None else None
        if method is None or rule is None or not method.server_streaming or not rule.get:
            raise EdgeConfigError(f"event_streams.{name!r}: not a server-streaming RPC with a GET http rule")
        paths[rule.get] = upstream
    return paths


def _template_regex(template: str) -> str:
    """A path template's variables ({site_id}) as one path segment each."""
    parts = re.split(r"\{[^}/]+\}", template)
    return "^" + "[^/]+".join(re.escape(part) for part in parts) + "$"


def transcoded_services(routes: Sequence[HttpRoute]) -> list[str]:
    return sorted({route.grpc_path.split("/")[1] for route in routes})


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def _json_error(code: int) -> dict[str, Any]:
    return {
        "json_format": {"code": code, "message": "%LOCAL_REPLY_BODY%", "details": []},
        "content_type": "application/json",
    }


def _local_reply_config() -> dict[str, Any]:
    mappers = [
        {
            "filter": {
                "status_code_filter": {
                    "comparison": {
                        "op": "EQ",
                        "value": {"default_value": status, "runtime_key": f"edge.local_reply.{status}"},
                    }
                }
            },
            "body_format_override": _json_error(code),
        }
        for status, code in LOCAL_REPLY_CODES.items()
    ]
    # No default body_format: it would also wrap the direct responses that serve /openapi.json.
    return {"mappers": mappers}


def _access_log() -> list[dict[str, Any]]:
    # Never the query string (it may carry a key), the client address or credentials. No gRPC
    # status either: once the transcoder has turned an error into JSON, Envoy can only guess it from
    # the HTTP status (400 reads as INTERNAL); the service's own line, same request id, has it.
    fields = {
        "time": "%START_TIME%",
        "event": "http_request",
        "method": "%REQ(X-ENVOY-ORIGINAL-METHOD?:METHOD)%",
        "path": "%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "rpc": "%REQ_WITHOUT_QUERY(:PATH)%",
        "status": "%RESPONSE_CODE%",
        "flags": "%RESPONSE_FLAGS%",
        "duration_ms": "%DURATION%",
        "bytes_in": "%BYTES_RECEIVED%",
        "bytes_out": "%BYTES_SENT%",
        "upstream": "%UPSTREAM_CLUSTER%",
        "request_id": "%REQ(X-REQUEST-ID)%",
    }
    return [
        {
            "name": "envoy.access_loggers.stdout",
            "typed_config": {
                "@type": STDOUT_LOG,
                "log_format": {
                    "json_format": fields,
                    "formatters": [
                        {
                            "name": "envoy.formatter.req_without_query",
                            "typed_config": {"@type": REQ_WITHOUT_QUERY},
                        }
                    ],
                },
            },
        }
    ]


def _cors_policy(table: RouteTable) -> dict[str, Any]:
    origins = (
        [{"safe_regex": {"regex": ".*"}}]
        if "*" in table.cors_allow_origins
        else [{"exact": origin} for origin in table.cors_allow_origins]
    )
    return {
        "@type": CORS_POLICY,
        "allow_origin_string_match": origins,
        "allow_methods": "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
        "allow_headers": ", ".join(CORS_ALLOW_HEADERS),
        "expose_headers": ", ".join(CORS_EXPOSE_HEADERS),
        "max_age": str(table.cors_max_age_s),
    }


def _without_transcoder() -> dict[str, Any]:
    return {"envoy.filters.http.grpc_json_transcoder": {"@type": FILTER_CONFIG, "disabled": True}}


def _static_file(path: str, filename: str, content_type: str) -> dict[str, Any]:
    return {
        "match": {"path": path, "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
        "direct_response": {"status": 200, "body": {"filename": filename}},
        "response_headers_to_add": [
            {
                "header": {"key": "content-type", "value": content_type},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
        "typed_per_filter_config": _without_transcoder(),
    }


def _lua_string(text: str) -> str:
    # A JSON string literal is a valid Lua string literal for the ASCII text used here.
    return json.dumps(text)


def _error_body_filter(table: RouteTable) -> list[dict[str, Any]]:
    """The Lua filter that gives listed paths their own error bodies, off on every other route."""
    if not table.error_bodies:
        return []
    formats = ", ".join(
        f"[{_lua_string(path)}] = {_lua_string(ERROR_STYLES[style])}"
        for path, style in sorted(table.error_bodies.items())
    )
    code = _ERROR_LUA.replace("{FORMATS}", "{" + formats + "}")
    return [
        {
            # Before the transcoder: its answers, converted errors and local replies alike, pass
            # through here on the way out.
            "name": "envoy.filters.http.lua",
            "disabled": True,
            # The same script by default and by name: a route has to name a script to switch the
            # filter on, and the response may be matched to either route (HTTP path or gRPC method).
            "typed_config": {
                "@type": LUA,
                "default_source_code": {"inline_string": code},
                "source_codes": {ERROR_SCRIPT: {"inline_string": code}},
            },
        }
    ]


def _error_body_routes(table: RouteTable) -> list[dict[str, Any]]:
    # Matched on the HTTP path before the transcoder rewrites it, only to switch the Lua filter on;
    # the call itself is routed by its gRPC path like every other.
    return [
        {
            "match": {"path": path},
            "route": {"cluster": UNROUTED, "cluster_not_found_response_code": "NOT_FOUND"},
            "typed_per_filter_config": {
                "envoy.filters.http.lua": {
                    "@type": FILTER_CONFIG,
                    "config": {"@type": LUA_PER_ROUTE, "name": ERROR_SCRIPT},
                }
            },
        }
        for path in sorted(table.error_bodies)
    ]


def _routes(
    settings: EdgeSettings, routes: Sequence[HttpRoute], table: RouteTable, streams: Mapping[str, str]
) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = [
        {
            # A body in an encoding the edge cannot decode would reach the transcoder as garbage.
            "match": {
                "prefix": "/",
                "headers": [
                    {"name": "content-encoding", "present_match": True},
                    {
                        "name": "content-encoding",
                        "string_match": {"safe_regex": {"regex": ACCEPTED_ENCODINGS}},
                        "invert_match": True,
                    },
                ],
            },
            "direct_response": {
                "status": 415,
                "body": {"inline_string": "unsupported Content-Encoding: send the body uncompressed"},
            },
            "typed_per_filter_config": _without_transcoder(),
        }
    ]
    for path, upstream in sorted(table.websockets.items()):
        result.append(
            {
                # Before the transcoder's routes: proxied as it comes, upgrade included. The buffer
                # filter would wait for the end of a request that an upgrade never ends.
                "match": {"path": path},
                "route": {
                    "cluster": upstream,
                    "timeout": "0s",
                    "upgrade_configs": [{"upgrade_type": "websocket", "enabled": True}],
                },
                "typed_per_filter_config": {
                    **_without_transcoder(),
                    "envoy.filters.http.buffer": {"@type": BUFFER_PER_ROUTE, "disabled": True},
                },
            }
        )
    for template, upstream in sorted(streams.items()):
        result.append(
            {
                # Before the transcoder's routes: the upstream answers the HTTP request itself.
                "match": {
                    "safe_regex": {"regex": _template_regex(template)},
                    "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
                },
                "route": {"cluster": upstream, "timeout": "0s"},
                "typed_per_filter_config": _without_transcoder(),
            }
        )
    if settings.openapi_path:
        result.append(_static_file("/openapi.json", settings.openapi_path, "application/json"))
    if settings.docs_path:
        result.append(_static_file("/docs", settings.docs_path, "text/html; charset=utf-8"))
    for route in routes:
        result.append(
            {
                # The transcoder has already turned the HTTP request into this gRPC call.
                "match": {"path": route.grpc_path},
                "route": {"cluster": route.upstream, "timeout": _duration(route.timeout_s)},
            }
        )
    result += _error_body_routes(table)
    # Every other path. The transcoder has already answered 404 for any HTTP request it could not
    # map, so this route exists for the CORS filter, which needs a route that is not a direct
    # response to answer preflights and to tag errors. Whatever reaches the router through it (a
    # native gRPC call to a method without an http rule) finds no such cluster: 404.
    result.append(
        {
            "match": {"prefix": "/"},
            "route": {"cluster": UNROUTED, "cluster_not_found_response_code": "NOT_FOUND"},
        }
    )
    return result


def _cluster(name: str, address: Address, dns: bool, *, grpc: bool = True) -> dict[str, Any]:
    """A gRPC service's cluster (HTTP/2, its stock gRPC health service), or with ``grpc`` false an
    HTTP/1.1 one for WebSocket routes, checked on its GET /health."""
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STRICT_DNS" if dns else "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "LEAST_REQUEST",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address.socket()}}]}],
        },
        # NOT_SERVING (or a 503) takes an endpoint out of rotation.
        "health_checks": [
            {
                "timeout": "1s",
                "interval": "2s",
                # Envoy checks an upstream that has had no traffic only once a minute by default;
                # an endpoint that started after Envoy would then count as down for that long.
                "no_traffic_interval": "2s",
                "unhealthy_interval": "1s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                **({"grpc_health_check": {}} if grpc else {"http_health_check": {"path": "/health"}}),
            }
        ],
    }
    if not grpc:
        return cluster
    return {
        **cluster,
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_OPTIONS,
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "connection_keepalive": {"interval": "30s", "timeout": "5s"},
                        # What a service may send on one stream before Envoy has passed it on
                        # (Envoy's default is 256 MiB). A live stream whose client reads slowly
                        # then backs up into the service's bounded per-subscriber queue, which
                        # drops its oldest messages, instead of into gRPC's unbounded buffers.
                        "initial_stream_window_size": UPSTREAM_STREAM_WINDOW,
                    }
                },
            }
        },
        "outlier_detection": {
            "consecutive_gateway_failure": 5,
            "consecutive_5xx": 0,
            "interval": "5s",
            "base_ejection_time": "10s",
            "max_ejection_percent": 50,
        },
        "circuit_breakers": {
            "thresholds": [
                {
                    "max_connections": 1024,
                    "max_pending_requests": 4096,
                    "max_requests": 8192,
                    "max_retries": 3,
                }
            ]
        },
    }


def render(
    settings: EdgeSettings, table: RouteTable, descriptor_set: descriptor_pb2.FileDescriptorSet
) -> dict[str, Any]:
    """The whole Envoy bootstrap configuration, as a JSON-ready dict."""
    routes = http_routes(descriptor_set, table)
    missing = [name for name in table.upstreams if name not in settings.upstreams]
    if missing:
        raise EdgeConfigError(f"no address for upstream(s): {', '.join(missing)}")
    transcoder = {
        "@type": TRANSCODER,
        "proto_descriptor": settings.descriptor_path,
        "services": transcoded_services(routes),
        "print_options": {
            "preserve_proto_field_names": True,
            "always_print_primitive_fields": True,
            # Server-streaming answers (LiveService.StreamLive) as Server-Sent Events: one
            # "data: <json>" event per message, which browsers' EventSource reads.
            "stream_sse_style_delimited": True,
        },
        "convert_grpc_status": True,
        "ignore_unknown_query_parameters": True,
        "request_validation_options": {"reject_unknown_method": True},
        "max_request_body_size": table.max_body_bytes,
    }
    http_filters = [
        {"name": "envoy.filters.http.cors", "typed_config": {"@type": CORS_FILTER}},
        {
            # Runs after the transcoder on the way out: the gRPC headers it leaves on a converted
            # answer mean nothing to an HTTP client.
            "name": "envoy.filters.http.header_mutation",
            "typed_config": {
                "@type": HEADER_MUTATION,
                "mutations": {"response_mutations": [{"remove": name} for name in INTERNAL_RESPONSE_HEADERS]},
            },
        },
        *_error_body_filter(table),
        {
            # The whole body before the transcoder sees any of it: the limit counts every byte (the
            # transcoder's own limit counts only what its JSON parser holds at a time).
            "name": "envoy.filters.http.buffer",
            "typed_config": {"@type": BUFFER, "max_request_bytes": table.max_body_bytes},
        },
        {
            # HEAD /health (load balancers, uptime checks) is answered here from the active health
            # checks of the ingest upstream: 200 while one endpoint is healthy, else 503, no body.
            # GET /health goes to ingest itself through the transcoder.
            "name": "envoy.filters.http.health_check",
            "typed_config": {
                "@type": HEALTH_CHECK,
                "pass_through_mode": False,
                "headers": [
                    {"name": ":path", "string_match": {"exact": "/health"}},
                    {"name": ":method", "string_match": {"exact": "HEAD"}},
                ],
                "cluster_min_healthy_percentages": {HEALTH_UPSTREAM: {"value": 1.0}},
            },
        },
        {"name": "envoy.filters.http.grpc_json_transcoder", "typed_config": transcoder},
        {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}},
    ]
    connection_manager = {
        "@type": HCM,
        "stat_prefix": "edge",
        "codec_type": "AUTO",
        "use_remote_address": True,
        "preserve_external_request_id": True,
        # No path normalization: its refusals (a %00 in a path, say) are local replies without a
        # message, and no route here depends on it (transcoded calls are routed by gRPC method).
        "normalize_path": False,
        "merge_slashes": True,
        # Off except on the routes that enable it (the table's [websockets]).
        "upgrade_configs": [{"upgrade_type": "websocket", "enabled": False}],
        "access_log": _access_log(),
        "local_reply_config": _local_reply_config(),
        "http_filters": http_filters,
        "route_config": {
            "name": "edge",
            "max_direct_response_body_size_bytes": 1024 * 1024,
            # The catch-all route names a cluster that deliberately does not exist.
            "validate_clusters": False,
            "virtual_hosts": [
                {
                    "name": "analytics",
                    "domains": ["*"],
                    "routes": _routes(settings, routes, table, stream_paths(descriptor_set, table)),
                    "typed_per_filter_config": {"envoy.filters.http.cors": _cors_policy(table)},
                }
            ],
        },
    }
    listener = {
        "name": "http",
        "address": settings.listen.socket(),
        # The buffer filter holds a whole request body; leave room for the largest one allowed.
        "per_connection_buffer_limit_bytes": table.max_body_bytes + 64 * 1024,
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": connection_manager,
                    }
                ]
            }
        ],
    }

    clusters = [
        _cluster(name, settings.upstreams[name], settings.dns_upstreams, grpc=name in table.grpc_upstreams)
        for name in table.upstreams
    ]
    return {
        "node": {"id": "analytics-edge", "cluster": "analytics-edge"},
        "admin": {"address": settings.admin.socket()},
        "static_resources": {"listeners": [listener], "clusters": clusters},
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {}}]},
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": DOWNSTREAM_CONNECTIONS,
                        "max_active_downstream_connections": MAX_DOWNSTREAM_CONNECTIONS,
                    },
                }
            ]
        },
    }
