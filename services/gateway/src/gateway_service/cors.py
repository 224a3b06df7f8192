"""CORS headers for browsers: preflight answers and the allow-origin header on every response."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["Cors"]

_ALLOW_METHODS = "GET, POST, OPTIONS"
_ALLOW_HEADERS = "content-type, x-api-key, authorization, x-request-id"
_MAX_AGE = "86400"


class Cors:
    """Allow-origin policy from the configured list; "*" allows every origin."""

    def __init__(self, allow_origins: Iterable[str]) -> None:
        self._origins = frozenset(allow_origins)
        self._any = "*" in self._origins

    def headers(self, origin: str | None) -> dict[str, str]:
        """Headers for an actual (non-preflight) response."""
        if self._any:
            return {"Access-Control-Allow-Origin": "*"}
        # The answer depends on Origin, so shared caches must key on it even when it is refused.
        if origin is not None and origin in self._origins:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        return {"Vary": "Origin"}

    def preflight_headers(self, origin: str | None) -> dict[str, str]:
        headers = self.headers(origin)
        if "Access-Control-Allow-Origin" in headers:
            headers["Access-Control-Allow-Methods"] = _ALLOW_METHODS
            headers["Access-Control-Allow-Headers"] = _ALLOW_HEADERS
            headers["Access-Control-Max-Age"] = _MAX_AGE
        return headers
