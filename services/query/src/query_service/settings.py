"""Query settings, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from analytics_config import Env
from analytics_config.names import DATABASE_URL, MIGRATE_ON_START, NATS_URL

STATEMENT_TIMEOUT_MS = "ANALYTICS_QUERY_STATEMENT_TIMEOUT_MS"


@dataclass(frozen=True)
class Settings:
    grpc_listen: str
    database_url: str
    nats_url: str
    auth_addr: str
    auth_cache_ttl_s: float
    statement_timeout_ms: int
    log_level: str
    metrics_listen: str | None
    # Apply the migrations of schema query (goals, funnels) at start, under an advisory lock.
    migrate_on_start: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env(environ)
        return cls(
            grpc_listen=env.grpc_listen(),
            database_url=env.str(DATABASE_URL),
            nats_url=env.str(NATS_URL),
            auth_addr=env.auth_addr(),
            auth_cache_ttl_s=env.auth_cache_ttl_s(),
            statement_timeout_ms=env.int(STATEMENT_TIMEOUT_MS, 30_000, minimum=100),
            log_level=env.log_level(),
            metrics_listen=env.metrics_listen(),
            migrate_on_start=env.bool(MIGRATE_ON_START, True),
        )
