"""ServiceError: the one way domain code reports a failure with a gRPC status and field details."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

# google.rpc.ErrorInfo.domain of this service's errors.
ERROR_DOMAIN = "analytics.v1"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a call failed, for programs: a reason constant and string metadata (google.rpc.ErrorInfo)."""

    reason: str
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """A request field that failed validation, named by its path (e.g. ``events[3].path``)."""

    field: str
    description: str


class ServiceError(Exception):
    """Raised by domain code; the server interceptor turns it into a gRPC status with details."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        violations: tuple[FieldViolation, ...] = (),
        retry_after_s: float | None = None,
        info: ErrorInfo | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.violations = violations
        self.retry_after_s = retry_after_s
        self.info = info

    @classmethod
    def invalid(cls, violations: list[FieldViolation] | tuple[FieldViolation, ...]) -> ServiceError:
        """INVALID_ARGUMENT naming every bad field, first ones in the message."""
        shown = "; ".join(f"{v.field}: {v.description}" for v in violations[:5])
        more = f" (and {len(violations) - 5} more)" if len(violations) > 5 else ""
        return cls(grpc.StatusCode.INVALID_ARGUMENT, shown + more, violations=tuple(violations))

    @classmethod
    def field(cls, field: str, description: str) -> ServiceError:
        return cls.invalid([FieldViolation(field, description)])

    def to_status(self) -> grpc.Status:
        """The status with its details (google.rpc.BadRequest, ErrorInfo, RetryInfo), carried in
        grpc-status-details-bin."""
        details: list[any_pb2.Any] = []
        if self.violations:
            bad_request = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in self.violations
                ]
            )
            packed = any_pb2.Any()
            packed.Pack(bad_request)
            details.append(packed)
        if self.info is not None:
            packed = any_pb2.Any()
            packed.Pack(
                error_details_pb2.ErrorInfo(
                    reason=self.info.reason, domain=ERROR_DOMAIN, metadata=dict(self.info.metadata)
                )
            )
            details.append(packed)
        if self.retry_after_s is not None:
            retry = error_details_pb2.RetryInfo()
            retry.retry_delay.FromNanoseconds(int(self.retry_after_s * 1e9))
            packed = any_pb2.Any()
            packed.Pack(retry)
            details.append(packed)
        status = rpc_status.to_status(
            status_pb2.Status(code=_CODE_NUMBERS[self.code], message=self.message, details=details)
        )
        if self.retry_after_s is None:
            return status
        # Envoy copies a retry-after trailer into the HTTP Retry-After header.
        retry_after = str(max(1, round(self.retry_after_s + 0.499)))
        return _Status(status.code, status.details, (*status.trailing_metadata, ("retry-after", retry_after)))


@dataclass(frozen=True)
class _Status(grpc.Status):  # type: ignore[misc]
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


_CODE_NUMBERS: dict[grpc.StatusCode, int] = {c: c.value[0] for c in grpc.StatusCode}


def unauthenticated(
    message: str = "missing API key: send x-api-key or Authorization: Bearer",
) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAUTHENTICATED, message)


def permission_denied(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.PERMISSION_DENIED, message)


def not_found(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, message)


def unavailable(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAVAILABLE, message)
