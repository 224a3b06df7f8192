"""Auth service settings, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from analytics_bus.sites import SitesBus
from analytics_config import Env, SettingsError
from analytics_config.names import (
    ADMIN_TOKEN,
    DATABASE_URL,
    INTERNAL_TOKEN,
    MIGRATE_ON_START,
    NATS_URL,
)

MIN_ADMIN_TOKEN_LENGTH = 24


@dataclass(frozen=True)
class Settings:
    grpc_listen: str
    database_url: str
    admin_token: str
    internal_token: str
    nats_url: str
    migrate_on_start: bool
    log_level: str
    metrics_listen: str | None
    sites_bus: SitesBus

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env(environ)
        admin_token = env.str(ADMIN_TOKEN)
        internal_token = env.str(INTERNAL_TOKEN)
        for name, value in ((ADMIN_TOKEN, admin_token), (INTERNAL_TOKEN, internal_token)):
            if len(value) < MIN_ADMIN_TOKEN_LENGTH:
                raise SettingsError(f"{name} must be at least {MIN_ADMIN_TOKEN_LENGTH} characters")
        if admin_token == internal_token:
            raise SettingsError(f"{ADMIN_TOKEN} and {INTERNAL_TOKEN} must differ")
        return cls(
            grpc_listen=env.grpc_listen(),
            database_url=env.str(DATABASE_URL),
            admin_token=admin_token,
            internal_token=internal_token,
            nats_url=env.str(NATS_URL),
            migrate_on_start=env.bool(MIGRATE_ON_START, True),
            log_level=env.log_level(),
            metrics_listen=env.metrics_listen(),
            sites_bus=SitesBus(replicas=env.stream_replicas()),
        )

    def __repr__(self) -> str:  # keep the admin token out of logs and tracebacks
        return f"Settings(grpc_listen={self.grpc_listen!r}, migrate_on_start={self.migrate_on_start})"
