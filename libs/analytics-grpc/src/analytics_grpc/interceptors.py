"""Server interceptor: request id, one log line and metrics per RPC, ServiceError → status."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError

from analytics_grpc.errors import ServiceError
from analytics_grpc.metadata import Context
from analytics_observability.metrics import RpcMetrics

log = structlog.get_logger("analytics.rpc")

Handler = Callable[..., Any]


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Binds a request id, logs and counts every RPC once, and turns ServiceError into its status.

    Every method of every service gets the per-RPC metrics (started, handled by status code,
    latency); the stock health and reflection services are left out, as probes would drown them.

    Unexpected exceptions become INTERNAL with a generic message: the traceback goes to the log,
    never to the caller.
    """

    def __init__(self) -> None:
        # Wrapped handlers by method: built on a method's first call, then reused by every call.
        self._wrapped: dict[str, Any] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = wrapped
        return wrapped

    @staticmethod
    def _wrap(handler: Any, method: str) -> Any:
        if method.startswith("/grpc.health.") or method.startswith("/grpc.reflection."):
            return handler
        deserializer = _tolerant(handler.request_deserializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, RpcMetrics(method, "unary"), method),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(
                    _checked_stream(handler.stream_unary), RpcMetrics(method, "client_stream"), method
                ),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, RpcMetrics(method, "server_stream"), method),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


# Stands in for a request whose bytes are not a valid message, so the servicer wrapper can answer
# INVALID_ARGUMENT instead of grpc's UNKNOWN with an internal exception name.
_UNDECODABLE = object()


def _undecodable() -> ServiceError:
    return ServiceError.field("request", "is not a valid protobuf message of the expected type")


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:
            return _UNDECODABLE

    return deserialize


def _checked_stream(behaviour: Handler) -> Handler:
    async def checked(requests: AsyncIterator[Any], context: Context) -> Any:
        async def messages() -> AsyncIterator[Any]:
            async for request in requests:
                if request is _UNDECODABLE:
                    raise _undecodable()
                yield request

        return await behaviour(messages(), context)

    return checked


def _request_id(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return uuid.uuid4().hex


@contextlib.asynccontextmanager
async def _observed(context: Context, method: str, metrics: RpcMetrics) -> AsyncIterator[None]:
    """Binds the request id, turns failures into statuses, writes the RPC's one log line and
    counts it."""
    started = time.perf_counter()
    metrics.started()
    structlog.contextvars.bind_contextvars(request_id=_request_id(context), rpc=method)
    code = grpc.StatusCode.OK
    try:
        yield
    except ServiceError as error:
        code = error.code
        await context.abort_with_status(error.to_status())
    except grpc.aio.AbortError:
        code = context.code() or grpc.StatusCode.UNKNOWN
        raise
    except (asyncio.CancelledError, GeneratorExit):
        # The caller went away: a cancelled call, a deadline passed, a stream it stopped reading.
        code = grpc.StatusCode.CANCELLED
        raise
    except Exception:
        code = grpc.StatusCode.INTERNAL
        log.exception("rpc failed")
        await context.abort(grpc.StatusCode.INTERNAL, "internal error")
    finally:
        duration_s = time.perf_counter() - started
        metrics.handled(code.name, duration_s)
        _log_rpc(code, duration_s)
        structlog.contextvars.unbind_contextvars("request_id", "rpc")


def _wrap_unary(behaviour: Handler, metrics: RpcMetrics, method: str) -> Handler:
    async def wrapper(request: Any, context: Context) -> Any:
        async with _observed(context, method, metrics):
            if request is _UNDECODABLE:
                raise _undecodable()
            return await behaviour(request, context)

    return wrapper


def _wrap_stream(behaviour: Handler, metrics: RpcMetrics, method: str) -> Handler:
    async def wrapper(request: Any, context: Context) -> AsyncIterator[Any]:
        async with _observed(context, method, metrics):
            if request is _UNDECODABLE:
                raise _undecodable()
            async for response in behaviour(request, context):
                yield response

    return wrapper


def _log_rpc(code: grpc.StatusCode, duration_s: float) -> None:
    duration_ms = round(duration_s * 1000, 2)
    level = "error" if code in _SERVER_FAULTS else "info"
    getattr(log, level)("rpc", code=code.name, duration_ms=duration_ms)


_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
