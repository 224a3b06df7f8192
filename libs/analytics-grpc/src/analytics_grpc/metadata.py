"""Reading credentials and other values from gRPC invocation metadata."""

from __future__ import annotations

from typing import Any

import grpc


def metadata_value(context: grpc.aio.ServicerContext[Any, Any], key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key and isinstance(value, str):
            return value
    return None


def credential(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The API key from ``x-api-key`` or ``authorization: Bearer …``, whichever is present."""
    key = metadata_value(context, "x-api-key")
    if key:
        return key.strip()
    auth = metadata_value(context, "authorization")
    if auth:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None
