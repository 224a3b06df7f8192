"""Ingest settings, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from analytics_bus import BusConfig
from analytics_config import Env
from ingest_service.validation import Limits

GRPC_LISTEN = "ANALYTICS_GRPC_LISTEN"
NATS_URL = "ANALYTICS_NATS_URL"
AUTH_ADDR = "ANALYTICS_AUTH_ADDR"
AUTH_CACHE_TTL_S = "ANALYTICS_AUTH_CACHE_TTL_S"
MAX_FUTURE_SKEW_S = "ANALYTICS_MAX_FUTURE_SKEW_S"
PUBLISH_TIMEOUT_S = "ANALYTICS_PUBLISH_TIMEOUT_S"
BATCH_MAX_BYTES = "ANALYTICS_GROUP_COMMIT_MAX_BYTES"
BATCH_MAX_DELAY_MS = "ANALYTICS_GROUP_COMMIT_MAX_DELAY_MS"
LOG_LEVEL = "ANALYTICS_LOG_LEVEL"

MAX_BATCH_EVENTS = 1000


@dataclass(frozen=True)
class Settings:
    grpc_listen: str
    nats_url: str
    auth_addr: str
    auth_cache_ttl_s: float
    publish_timeout_s: float
    group_commit_max_bytes: int
    group_commit_max_delay_s: float
    limits: Limits
    bus: BusConfig
    log_level: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env(environ)
        return cls(
            grpc_listen=env.address(GRPC_LISTEN, "0.0.0.0:50051"),
            nats_url=env.str(NATS_URL),
            auth_addr=env.address(AUTH_ADDR, "auth:50051"),
            auth_cache_ttl_s=env.float(AUTH_CACHE_TTL_S, 10.0, minimum=0, maximum=3600),
            publish_timeout_s=env.float(PUBLISH_TIMEOUT_S, 5.0, minimum=0.1, maximum=60),
            group_commit_max_bytes=env.int(
                BATCH_MAX_BYTES, 512 * 1024, minimum=16 * 1024, maximum=8 * 1024 * 1024
            ),
            group_commit_max_delay_s=env.float(BATCH_MAX_DELAY_MS, 2.0, minimum=0, maximum=1000) / 1000,
            limits=Limits(max_future_skew=timedelta(seconds=env.float(MAX_FUTURE_SKEW_S, 300, minimum=0))),
            bus=BusConfig(),
            log_level=env.str(LOG_LEVEL, "INFO"),
        )
