"""Ingest settings, read once from the environment."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from analytics_bus import BusConfig
from analytics_config import Env, SettingsError
from analytics_config.names import (
    INTERNAL_TOKEN,
    NATS_URL,
    QUERY_ADDR,
)
from ingest_service.validation import Limits

MAX_FUTURE_SKEW_S = "ANALYTICS_MAX_FUTURE_SKEW_S"
PUBLISH_TIMEOUT_S = "ANALYTICS_PUBLISH_TIMEOUT_S"
BUS_PROBE_INTERVAL_S = "ANALYTICS_BUS_PROBE_INTERVAL_S"
BUS_PROBE_TIMEOUT_S = "ANALYTICS_BUS_PROBE_TIMEOUT_S"
BATCH_MAX_BYTES = "ANALYTICS_GROUP_COMMIT_MAX_BYTES"
BATCH_MAX_DELAY_MS = "ANALYTICS_GROUP_COMMIT_MAX_DELAY_MS"
TRUSTED_PROXIES = "ANALYTICS_TRUSTED_PROXIES"
COUNTRY_HEADER = "ANALYTICS_COUNTRY_HEADER"
RATE_LIMIT_PER_S = "ANALYTICS_DEFAULT_RATE_LIMIT_PER_S"
RATE_LIMIT_BURST = "ANALYTICS_DEFAULT_RATE_LIMIT_BURST"

MAX_BATCH_EVENTS = 1000


@dataclass(frozen=True)
class Settings:
    grpc_listen: str
    grpc_reuse_port: bool
    nats_url: str
    auth_addr: str
    # The query service, for the figures seed 000's POST /api/events answers with.
    query_addr: str
    auth_cache_ttl_s: float
    publish_timeout_s: float
    bus_probe_interval_s: float
    bus_probe_timeout_s: float
    group_commit_max_bytes: int
    group_commit_max_delay_s: float
    limits: Limits
    internal_token: str
    trusted_proxies: tuple[str, ...]
    country_header: str
    default_rate_limit_per_s: float
    default_rate_limit_burst: float
    bus: BusConfig
    log_level: str
    metrics_listen: str | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env(environ)
        return cls(
            grpc_listen=env.grpc_listen(),
            grpc_reuse_port=env.grpc_reuse_port(),
            nats_url=env.str(NATS_URL),
            auth_addr=env.auth_addr(),
            query_addr=env.address(QUERY_ADDR, "query:50051"),
            auth_cache_ttl_s=env.auth_cache_ttl_s(),
            publish_timeout_s=env.float(PUBLISH_TIMEOUT_S, 5.0, minimum=0.1, maximum=60),
            bus_probe_interval_s=env.float(BUS_PROBE_INTERVAL_S, 1.0, minimum=0.05, maximum=60),
            bus_probe_timeout_s=env.float(BUS_PROBE_TIMEOUT_S, 1.0, minimum=0.05, maximum=60),
            group_commit_max_bytes=env.int(
                BATCH_MAX_BYTES, 512 * 1024, minimum=16 * 1024, maximum=8 * 1024 * 1024
            ),
            group_commit_max_delay_s=env.float(BATCH_MAX_DELAY_MS, 2.0, minimum=0, maximum=1000) / 1000,
            limits=Limits(max_future_skew=timedelta(seconds=env.float(MAX_FUTURE_SKEW_S, 300, minimum=0))),
            internal_token=env.str(INTERNAL_TOKEN),
            trusted_proxies=_networks(env.list(TRUSTED_PROXIES, ("127.0.0.0/8", "::1/128"))),
            country_header=env.str(COUNTRY_HEADER, "cf-ipcountry").lower(),
            default_rate_limit_per_s=env.float(RATE_LIMIT_PER_S, 5000, minimum=1),
            default_rate_limit_burst=env.float(RATE_LIMIT_BURST, 10_000, minimum=1),
            bus=BusConfig().replicated(env.stream_replicas()),
            log_level=env.log_level(),
            metrics_listen=env.metrics_listen(),
        )


def _networks(values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise SettingsError(f"{TRUSTED_PROXIES}: {value!r} is not an address or CIDR network") from None
    return values
