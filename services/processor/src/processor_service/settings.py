"""Processor settings, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from analytics_bus import BusConfig
from analytics_config import Env

GRPC_LISTEN = "ANALYTICS_GRPC_LISTEN"
DATABASE_URL = "ANALYTICS_DATABASE_URL"
NATS_URL = "ANALYTICS_NATS_URL"
FETCH_BATCH = "ANALYTICS_PROCESSOR_FETCH_BATCH"
FETCH_TIMEOUT_S = "ANALYTICS_PROCESSOR_FETCH_TIMEOUT_S"
RETRY_DELAY_S = "ANALYTICS_PROCESSOR_RETRY_DELAY_S"
MIGRATE_ON_START = "ANALYTICS_MIGRATE_ON_START"
LOG_LEVEL = "ANALYTICS_LOG_LEVEL"


@dataclass(frozen=True)
class Settings:
    grpc_listen: str
    database_url: str
    nats_url: str
    bus: BusConfig
    fetch_batch: int
    fetch_timeout_s: float
    retry_delay_s: float
    migrate_on_start: bool
    log_level: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env(environ)
        return cls(
            grpc_listen=env.address(GRPC_LISTEN, "0.0.0.0:50051"),
            database_url=env.str(DATABASE_URL),
            nats_url=env.str(NATS_URL),
            bus=BusConfig(),
            fetch_batch=env.int(FETCH_BATCH, 64, minimum=1, maximum=10_000),
            fetch_timeout_s=env.float(FETCH_TIMEOUT_S, 0.5, minimum=0.05, maximum=30),
            retry_delay_s=env.float(RETRY_DELAY_S, 2.0, minimum=0.1, maximum=300),
            migrate_on_start=env.bool(MIGRATE_ON_START, True),
            log_level=env.str(LOG_LEVEL, "INFO"),
        )
