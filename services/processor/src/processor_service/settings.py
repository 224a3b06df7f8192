"""Processor settings, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from analytics_bus import BusConfig
from analytics_bus.sites import SitesBus
from analytics_config import Env, SettingsError
from analytics_config.names import (
    ADMIN_TOKEN,
    DATABASE_URL,
    MIGRATE_ON_START,
    NATS_URL,
    PROCESSOR_ADDR,
)

FETCH_BATCH = "ANALYTICS_PROCESSOR_FETCH_BATCH"
FETCH_TIMEOUT_S = "ANALYTICS_PROCESSOR_FETCH_TIMEOUT_S"
FETCH_LINGER_S = "ANALYTICS_PROCESSOR_FETCH_LINGER_S"
MAX_INFLIGHT = "ANALYTICS_PROCESSOR_MAX_INFLIGHT"
RETRY_DELAY_S = "ANALYTICS_PROCESSOR_RETRY_DELAY_S"
RETRY_MAX_DELAY_S = "ANALYTICS_PROCESSOR_RETRY_MAX_DELAY_S"
MAX_DELIVER = "ANALYTICS_PROCESSOR_MAX_DELIVER"
REDELIVERY_BACKOFF_S = "ANALYTICS_PROCESSOR_REDELIVERY_BACKOFF_S"
SESSIONS = "ANALYTICS_PROCESSOR_SESSIONS"
RAW_RETENTION_DAYS = "ANALYTICS_RAW_RETENTION_DAYS"
# Read by the dead-letter command line only (python -m processor_service.deadletters).


def _seconds_list(env: Env, name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    values: list[float] = []
    for item in env.list(name, tuple(str(v) for v in default)):
        try:
            value = float(item)
        except ValueError:
            raise SettingsError(f"{name}: {item!r} is not a number of seconds") from None
        if not 0.1 <= value <= 86_400:
            raise SettingsError(f"{name}: {value} must be between 0.1 and 86400 seconds")
        values.append(value)
    if not values:
        raise SettingsError(f"{name} must list at least one delay")
    return tuple(values)


@dataclass(frozen=True)
class Settings:
    grpc_listen: str
    grpc_reuse_port: bool
    database_url: str
    nats_url: str
    auth_addr: str
    auth_cache_ttl_s: float
    bus: BusConfig
    sites_bus: SitesBus
    fetch_batch: int
    fetch_timeout_s: float
    fetch_linger_s: float
    max_inflight: int
    retry_delay_s: float
    retry_max_delay_s: float
    sessions: bool
    raw_retention: timedelta | None  # None: raw events are kept for ever
    migrate_on_start: bool
    log_level: str
    metrics_listen: str | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env(environ)
        defaults = BusConfig()
        backoff = _seconds_list(env, REDELIVERY_BACKOFF_S, defaults.backoff_s)
        max_deliver = env.int(MAX_DELIVER, defaults.max_deliver, minimum=2, maximum=1000)
        if max_deliver <= len(backoff):
            raise SettingsError(f"{MAX_DELIVER}={max_deliver} must exceed the {len(backoff)} backoff steps")
        retry_delay_s = env.float(RETRY_DELAY_S, 0.25, minimum=0.01, maximum=60)
        retention_days = env.int(RAW_RETENTION_DAYS, 0, minimum=0, maximum=36_500)
        if retention_days == 1:
            raise SettingsError(f"{RAW_RETENTION_DAYS} must be 0 (keep raw events) or at least 2 days")
        return cls(
            grpc_listen=env.grpc_listen(),
            grpc_reuse_port=env.grpc_reuse_port(),
            database_url=env.str(DATABASE_URL),
            nats_url=env.str(NATS_URL),
            auth_addr=env.auth_addr(),
            auth_cache_ttl_s=env.auth_cache_ttl_s(),
            bus=BusConfig(max_deliver=max_deliver, backoff_s=backoff).replicated(env.stream_replicas()),
            sites_bus=SitesBus(replicas=env.stream_replicas()),
            fetch_batch=env.int(FETCH_BATCH, 64, minimum=1, maximum=10_000),
            fetch_timeout_s=env.float(FETCH_TIMEOUT_S, 0.5, minimum=0.05, maximum=30),
            fetch_linger_s=env.float(FETCH_LINGER_S, 0.1, minimum=0, maximum=5),
            max_inflight=env.int(MAX_INFLIGHT, 2, minimum=1, maximum=16),
            retry_delay_s=retry_delay_s,
            retry_max_delay_s=env.float(RETRY_MAX_DELAY_S, 5.0, minimum=retry_delay_s, maximum=300),
            sessions=env.bool(SESSIONS, True),
            raw_retention=timedelta(days=retention_days) if retention_days else None,
            migrate_on_start=env.bool(MIGRATE_ON_START, True),
            log_level=env.log_level(),
            metrics_listen=env.metrics_listen(),
        )


@dataclass(frozen=True)
class CliSettings:
    """Where the dead-letter command line finds the processor, and the admin credential it sends."""

    processor_addr: str
    admin_token: str | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CliSettings:
        env = Env(environ)
        return cls(
            processor_addr=env.address(PROCESSOR_ADDR, "127.0.0.1:50051"),
            admin_token=env.optional_str(ADMIN_TOKEN),
        )
