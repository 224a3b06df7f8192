"""One long-lived grpc.aio channel per upstream address, shared by every route to it."""

from __future__ import annotations

from collections.abc import Mapping

import grpc

__all__ = ["USER_AGENT", "Upstreams"]

USER_AGENT = "analytics-gateway/0.1"

_CHANNEL_OPTIONS: tuple[tuple[str, str | int], ...] = (
    ("grpc.primary_user_agent", USER_AGENT),
    # grpc's reconnect backoff grows to 120 s by default, and every call fails fast (503) until
    # it expires: an upstream that restarts must be usable again within a couple of seconds.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


class Upstreams:
    """Channels by gRPC service name; create inside the running event loop."""

    def __init__(self, addresses: Mapping[str, str]) -> None:
        by_address: dict[str, grpc.aio.Channel] = {}
        self._by_service: dict[str, grpc.aio.Channel] = {}
        for service, address in addresses.items():
            channel = by_address.get(address)
            if channel is None:
                channel = by_address[address] = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
            self._by_service[service] = channel
        self._channels = tuple(by_address.values())

    def channel(self, service: str) -> grpc.aio.Channel | None:
        return self._by_service.get(service)

    async def close(self, grace: float | None = None) -> None:
        for channel in self._channels:
            await channel.close(grace)
