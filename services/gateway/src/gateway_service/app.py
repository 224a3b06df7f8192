"""The aiohttp application: route, transcode, call the upstream, render, log one line."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from aiohttp import web
from google.protobuf import message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import Message

from .cors import Cors
from .errors import ErrorRenderer, GatewayError, RenderedError, retry_after
from .json_input import JsonParser
from .metadata import forward_metadata, grpc_timeout_seconds
from .routes import Route, RouteTable
from .settings import Settings
from .transcode import RequestDecoder, ResponseEncoder, TranscodeError
from .upstream import Upstreams

__all__ = ["Endpoint", "Gateway", "build_endpoints", "create_app"]

_JSON = "application/json"
_MAX_REQUEST_ID = 128

_log = structlog.stdlib.get_logger("gateway_service.access")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Everything one route needs at request time, resolved once at start-up."""

    route: Route
    decoder: RequestDecoder
    call: grpc.aio.UnaryUnaryMultiCallable[Message, Message]


def build_endpoints(
    routes: Sequence[Route], pool: DescriptorPool, upstreams: Upstreams, settings: Settings
) -> list[Endpoint]:
    """One endpoint per route whose service has an upstream; others are left unreachable."""
    endpoints: list[Endpoint] = []
    # One parser for all routes: the tables of shared message types are compiled once.
    parser = JsonParser(pool, ignore_unknown_fields=not settings.reject_unknown_fields)
    for route in routes:
        channel = upstreams.channel(route.service)
        if channel is None:
            _log.warning("route_without_upstream", service=route.service, route=route.template.text)
            continue
        request_class: Any = message_factory.GetMessageClass(route.method.input_type)
        response_class: Any = message_factory.GetMessageClass(route.method.output_type)
        decoder = RequestDecoder(
            request_class,
            route.template,
            route.body,
            parser=parser,
        )
        call = channel.unary_unary(
            route.grpc_path,
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        endpoints.append(Endpoint(route, decoder, call))
    return endpoints


class Gateway:
    """Request handler holding the route table, the upstream calls and the renderers."""

    def __init__(self, settings: Settings, pool: DescriptorPool, endpoints: Sequence[Endpoint]) -> None:
        self._settings = settings
        self._table: RouteTable[Endpoint] = RouteTable(
            (endpoint.route.http_method, endpoint.route.template, endpoint) for endpoint in endpoints
        )
        self._errors = ErrorRenderer(pool)
        self._encoder = ResponseEncoder(pool)
        self._cors = Cors(settings.cors_allow_origins)
        self._timeout = settings.upstream_timeout_s
        self._max_body = settings.max_body_bytes

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        method = request.method
        path, _, query = request.raw_path.partition("?")
        request_id = _request_id(request.headers.get("X-Request-Id"))
        cors = self._cors.headers(request.headers.get("Origin"))
        route: str | None = None
        code: grpc.StatusCode | None = None
        try:
            if method == "OPTIONS":
                response = self._preflight(path, request.headers.get("Origin"))
            else:
                found = self._table.lookup(method, path)
                if found is None:
                    raise self._no_route(method, path)
                endpoint, template, captured = found
                route = template.text
                body = await self._read_body(request) if endpoint.decoder.has_body else b""
                try:
                    message = endpoint.decoder.decode(captured, query, body)
                except TranscodeError as exc:
                    violations = ((exc.field, exc.message),) if exc.field else ()
                    raise GatewayError(
                        400, grpc.StatusCode.INVALID_ARGUMENT, exc.message, violations
                    ) from None
                response, code = await self._call(endpoint, message, request, request_id, cors)
        except GatewayError as exc:
            response = self._error_response(self._errors.gateway_error(exc), cors)
            if exc.status == 413:
                # Stop here rather than let aiohttp drain the rest of an oversized upload.
                response.force_close()
        except Exception:
            _log.exception("unhandled_error", request_id=request_id, route=route)
            error = GatewayError(500, grpc.StatusCode.INTERNAL, "internal gateway error")
            response = self._error_response(self._errors.gateway_error(error), cors)
        _log.info(
            "http_request",
            method=method,
            route=route,
            status=response.status,
            grpc_status=code.name if code is not None else None,
            duration_ms=round((time.perf_counter() - started) * 1000.0, 3),
            request_id=request_id,
        )
        return response

    async def _call(
        self,
        endpoint: Endpoint,
        message: Message,
        request: web.Request,
        request_id: str,
        cors: dict[str, str],
    ) -> tuple[web.Response, grpc.StatusCode]:
        timeout = self._timeout
        asked = grpc_timeout_seconds(request.headers.get("grpc-timeout"))
        if asked is not None and asked < timeout:
            # Zero would mean "no deadline" to grpc; the client wants an immediate one.
            timeout = max(asked, 0.001)
        metadata = forward_metadata(request.raw_headers, request.remote, request_id)
        call = endpoint.call(message, timeout=timeout, metadata=metadata)
        try:
            reply = await call
        except grpc.aio.AioRpcError as exc:
            rendered = self._errors.rpc_error(exc)
            return self._error_response(rendered, cors), rendered.grpc_code
        headers = cors | retry_after(await call.trailing_metadata())
        body = self._encoder.encode(reply)
        return web.Response(body=body, status=200, content_type=_JSON, headers=headers), grpc.StatusCode.OK

    def _preflight(self, path: str, origin: str | None) -> web.Response:
        if not self._table.allowed_methods(path):
            raise self._no_route("OPTIONS", path)
        return web.Response(status=204, headers=self._cors.preflight_headers(origin))

    def _no_route(self, method: str, path: str) -> GatewayError:
        allowed = self._table.allowed_methods(path)
        if not allowed:
            return GatewayError(404, grpc.StatusCode.NOT_FOUND, "no route matches the request path")
        return GatewayError(
            405,
            grpc.StatusCode.UNIMPLEMENTED,
            f"method {method} is not allowed here; allowed: {', '.join(allowed)}",
            headers={"Allow": ", ".join((*allowed, "OPTIONS"))},
        )

    async def _read_body(self, request: web.Request) -> bytes:
        """The body, refused with 413 as soon as it is known to exceed the limit."""
        limit = self._max_body
        length = request.content_length
        if length is not None and length > limit:
            raise _too_large(limit)
        chunks: list[bytes] = []
        size = 0
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _error_response(rendered: RenderedError, cors: dict[str, str]) -> web.Response:
        headers = cors | rendered.headers
        return web.Response(body=rendered.body, status=rendered.status, content_type=_JSON, headers=headers)


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, grpc.StatusCode.INVALID_ARGUMENT, f"request body is larger than the limit of {limit} bytes"
    )


def _request_id(value: str | None) -> str:
    """The client's x-request-id when it is usable as metadata, else a fresh one (as Envoy does)."""
    if value and len(value) <= _MAX_REQUEST_ID and value.isascii() and value.isprintable():
        return value
    return uuid.uuid4().hex


def create_app(gateway: Gateway, settings: Settings) -> web.Application:
    """An aiohttp application sending every path and method to the gateway."""
    # The gateway enforces its own limit while streaming the body; this only covers request.read().
    app = web.Application(client_max_size=settings.max_body_bytes)
    # [\s\S] rather than . so that paths with encoded line breaks still reach the JSON 404.
    app.router.add_route("*", r"/{path:[\s\S]*}", gateway.handle)
    return app
