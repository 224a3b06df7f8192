"""Reading credentials and other values from gRPC invocation metadata."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

# grpc ships no type information; this alias documents what a servicer method receives.
Context: TypeAlias = Any


def metadata_value(context: Context, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key and isinstance(value, str):
            return value
    return None


def metadata_map(context: Context) -> dict[str, str]:
    """The first value of every text key, for handlers that read several (one pass, not one per key)."""
    found: dict[str, str] = {}
    for name, value in reversed(context.invocation_metadata() or ()):
        if isinstance(value, str):
            found[name] = value
    return found


def credential(context: Context) -> str | None:
    """The API key from ``x-api-key`` or ``authorization: Bearer …``, whichever is present."""
    return credential_in(metadata_map(context))


def credential_in(metadata: Mapping[str, str]) -> str | None:
    """credential() over metadata already read with metadata_map()."""
    key = metadata.get("x-api-key")
    if key:
        return key.strip()
    auth = metadata.get("authorization")
    if auth:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None
