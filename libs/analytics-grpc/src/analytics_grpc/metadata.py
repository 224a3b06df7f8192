"""Reading credentials and other values from gRPC invocation metadata."""

from __future__ import annotations

from typing import Any, TypeAlias

# grpc ships no type information; this alias documents what a servicer method receives.
Context: TypeAlias = Any


def metadata_value(context: Context, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key and isinstance(value, str):
            return value
    return None


def credential(context: Context) -> str | None:
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
