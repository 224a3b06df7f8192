"""Applies what one request tells (client, user agent, country, origin) to its validated events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from analytics.v1 import bus_pb2
from ingest_service.enrich.referrer import channel, host_of
from ingest_service.enrich.useragent import classify
from ingest_service.enrich.visitor import anonymous_visitor_id, identified_visitor_id


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """Per-request facts. ``client_ip`` only feeds the visitor hash: it is never stored or logged."""

    client_ip: str
    user_agent: str
    country: str
    origin: str

    def __repr__(self) -> str:
        return (
            f"RequestInfo(user_agent={self.user_agent!r}, country={self.country!r}, origin={self.origin!r})"
        )


def enrich(
    event: bus_pb2.EnrichedEvent, info: RequestInfo, salt: bytes, identity_secrets: Mapping[bytes, bytes]
) -> None:
    """Fills in what the server derives. ``salt`` is the day's visitor salt, needed by events without
    a user_id; ``identity_secrets`` maps the site ids of events with a user_id to their secrets."""
    device = classify(info.user_agent)
    event.browser = device.browser
    event.os = device.os
    event.device = device.device
    event.is_bot = device.is_bot
    event.country = info.country
    page_host = host_of(event.url) or host_of(info.origin)
    event.referrer_source = channel(event.referrer_host, page_host, event.utm_medium)
    site_id, user_id = event.site_id, event.user_id
    if user_id:
        event.visitor_id = identified_visitor_id(identity_secrets[site_id], site_id, user_id)
    else:
        event.visitor_id = anonymous_visitor_id(salt, site_id, info.client_ip, info.user_agent)
