"""HTTP request headers to gRPC call metadata, as Envoy forwards them upstream."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

__all__ = ["Metadata", "forward_metadata", "grpc_timeout_seconds"]

Metadata = list[tuple[str, str | bytes]]

# Hop-by-hop headers (RFC 9110 section 7.6.1) and those the HTTP/2 transport owns. user-agent is
# set by grpc-core itself (a value passed as metadata is dropped), so it travels as
# x-forwarded-user-agent; the x-forwarded-* and x-request-id values are rebuilt below.
_DROPPED = frozenset(
    {
        b"connection",
        b"content-length",
        b"content-type",
        b"expect",
        b"host",
        b"http2-settings",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"user-agent",
        b"x-forwarded-for",
        b"x-forwarded-user-agent",
        b"x-request-id",
    }
)
_VALID_KEY = re.compile(rb"^[0-9a-z_.-]+$")
_PRINTABLE = re.compile(rb"^[\x20-\x7e]*$")
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def forward_metadata(
    raw_headers: Iterable[tuple[bytes, bytes]], peer: str | None, request_id: str
) -> Metadata:
    """Metadata for the upstream call: every forwardable header, lower-cased, plus
    x-forwarded-for with the peer appended, x-forwarded-user-agent and x-request-id."""
    metadata: Metadata = []
    forwarded_for: list[str] = []
    user_agent: str | None = None
    headers = [(name.lower(), value) for name, value in raw_headers]
    connection_tokens = _connection_tokens(headers)
    for name, value in headers:
        if not _PRINTABLE.match(value):
            continue  # gRPC metadata values are printable ASCII; other values cannot be sent
        if name == b"x-forwarded-for":
            forwarded_for.append(value.decode("ascii").strip())
            continue
        if name == b"user-agent":
            user_agent = value.decode("ascii")
            continue
        if (
            name in connection_tokens
            or name.startswith((b":", b"grpc-"))
            or not _VALID_KEY.match(name)
            or name in _DROPPED
        ):
            continue
        key = name.decode("ascii")
        if key.endswith("-bin"):
            try:
                metadata.append((key, base64.b64decode(value + b"=" * (-len(value) % 4), validate=True)))
            except (binascii.Error, ValueError):
                continue
        else:
            metadata.append((key, value.decode("ascii")))
    if peer:
        # Envoy (use_remote_address: true) appends the address the connection came from.
        forwarded_for.append(peer)
    if forwarded_for:
        metadata.append(("x-forwarded-for", ", ".join(item for item in forwarded_for if item)))
    if user_agent:
        metadata.append(("x-forwarded-user-agent", user_agent))
    metadata.append(("x-request-id", request_id))
    return metadata


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Headers the client named in Connection, which are hop-by-hop too."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(token.strip() for token in value.lower().split(b","))
    return frozenset(tokens)


def grpc_timeout_seconds(value: str | None) -> float | None:
    """Parses a grpc-timeout header value (e.g. "250m"), None when absent or malformed."""
    if not value or len(value) < 2 or len(value) > 9:
        return None
    digits, unit = value[:-1], value[-1]
    scale = _TIMEOUT_UNITS.get(unit)
    if scale is None or not digits.isdigit():
        return None
    return int(digits) * scale
