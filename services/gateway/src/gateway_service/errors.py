"""gRPC status to HTTP status, and google.rpc.Status-shaped JSON error bodies."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import DecodeError, Message

__all__ = [
    "HTTP_STATUS",
    "ErrorRenderer",
    "GatewayError",
    "RenderedError",
    "http_status",
    "retry_after",
]

# The mapping Envoy applies (Grpc::Utility::grpcToHttpStatus), which follows google.rpc.Code.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

_DETAILS_KEY = "grpc-status-details-bin"
_RETRY_AFTER_KEY = "retry-after"
_BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
# grpc-core's own wording when no connection could be made; it names internal addresses.
_CONNECT_FAILURE_PREFIXES = ("failed to connect to all addresses", "DNS resolution failed")


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


class GatewayError(Exception):
    """An error the gateway answers itself, before or instead of calling the upstream."""

    def __init__(
        self,
        status: int,
        code: grpc.StatusCode,
        message: str,
        field_violations: Sequence[tuple[str, str]] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field_violations = field_violations
        self.headers = headers or {}


@dataclass(frozen=True, slots=True)
class RenderedError:
    """An HTTP error response: status, JSON body and extra headers."""

    status: int
    body: bytes
    headers: dict[str, str]
    grpc_code: grpc.StatusCode


class ErrorRenderer:
    """Renders google.rpc.Status JSON, resolving detail types through the descriptor pool."""

    def __init__(self, pool: DescriptorPool) -> None:
        self._pool = pool
        self._status_class = message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status"))

    def gateway_error(self, error: GatewayError) -> RenderedError:
        details: list[dict[str, Any]] = []
        if error.field_violations:
            violations = [{"field": name, "description": text} for name, text in error.field_violations]
            details.append({"@type": _BAD_REQUEST_TYPE, "field_violations": violations})
        body = self._body(error.code.value[0], error.message, details)
        return RenderedError(error.status, body, dict(error.headers), error.code)

    def rpc_error(self, error: grpc.aio.AioRpcError) -> RenderedError:
        """Maps a failed upstream call; the status details trailer becomes the body's details."""
        code = error.code()
        message = error.details() or ""
        # grpc.aio.Metadata iterates as (key, value) pairs; the stubs type it otherwise.
        trailing: Sequence[Any] = tuple(error.trailing_metadata() or ())
        if code == grpc.StatusCode.UNAVAILABLE and message.startswith(_CONNECT_FAILURE_PREFIXES):
            message = "upstream unavailable"
        details: list[dict[str, Any]] = []
        for key, value in trailing:
            if key == _DETAILS_KEY and isinstance(value, bytes):
                details = self._details(value)
                break
        headers = retry_after(trailing, tuple(error.initial_metadata() or ()))
        return RenderedError(http_status(code), self._body(code.value[0], message, details), headers, code)

    def _details(self, raw: bytes) -> list[dict[str, Any]]:
        try:
            status: Any = self._status_class.FromString(raw)
        except DecodeError:
            return []
        return [self._detail(any_message) for any_message in status.details]

    def _detail(self, any_message: Message) -> dict[str, Any]:
        try:
            return json_format.MessageToDict(
                any_message,
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
                descriptor_pool=self._pool,
            )
        except (TypeError, KeyError, json_format.Error):
            # A detail type missing from the descriptor set still shows what it is.
            type_url: str = getattr(any_message, "type_url", "")
            value: bytes = getattr(any_message, "value", b"")
            return {"@type": type_url, "value": base64.b64encode(value).decode("ascii")}

    @staticmethod
    def _body(code: int, message: str, details: list[dict[str, Any]]) -> bytes:
        payload = {"code": code, "message": message, "details": details}
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def retry_after(*metadata: Iterable[Any]) -> dict[str, str]:
    """Retry-After header from the upstream's trailing (or initial) metadata, if any."""
    for entries in metadata:
        for key, value in entries:
            if key == _RETRY_AFTER_KEY and isinstance(value, str):
                return {"Retry-After": value}
    return {}
