"""Site fields as clients send them: domain and time zone, normalised or refused naming the field."""

from __future__ import annotations

import re
import zoneinfo
from functools import cache

from analytics_grpc.errors import ServiceError

DEFAULT_TIMEZONE = "UTC"
MAX_NAME = 200
MAX_DOMAIN = 253
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


@cache
def _zones() -> frozenset[str]:
    # Read once: available_timezones() walks the tz database on every call.
    return frozenset(zoneinfo.available_timezones())


def parse_name(value: str, field: str = "name") -> str:
    name = value.strip()
    if not name:
        raise ServiceError.field(field, "is required")
    if len(name) > MAX_NAME:
        raise ServiceError.field(field, f"must be at most {MAX_NAME} characters")
    return name


def parse_domain(value: str, field: str = "domain") -> str:
    """A host name, lower-cased, without a trailing dot; "" when empty (no domain)."""
    domain = value.strip().lower().removesuffix(".")
    if not domain:
        return ""
    if len(domain) > MAX_DOMAIN or not _HOST.fullmatch(domain):
        shown = value[:100]
        raise ServiceError.field(field, f"must be a host name like example.com, got {shown!r}")
    return domain


def parse_timezone(value: str, field: str = "timezone") -> str:
    """An IANA time zone name known to the tz database; DEFAULT_TIMEZONE when empty."""
    name = value.strip()
    if not name:
        return DEFAULT_TIMEZONE
    if name not in _zones() and name != DEFAULT_TIMEZONE:
        raise ServiceError.field(
            field, f"must be an IANA time zone name like Europe/Berlin, got {value[:100]!r}"
        )
    return name
