"""Auth service settings, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from analytics_config import Env, SettingsError

GRPC_LISTEN = "ANALYTICS_GRPC_LISTEN"
DATABASE_URL = "ANALYTICS_DATABASE_URL"
ADMIN_TOKEN = "ANALYTICS_ADMIN_TOKEN"  # noqa: S105 - the variable name, not a secret
MIGRATE_ON_START = "ANALYTICS_MIGRATE_ON_START"
LOG_LEVEL = "ANALYTICS_LOG_LEVEL"

MIN_ADMIN_TOKEN_LENGTH = 24


@dataclass(frozen=True)
class Settings:
    grpc_listen: str
    database_url: str
    admin_token: str
    migrate_on_start: bool
    log_level: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env(environ)
        admin_token = env.str(ADMIN_TOKEN)
        if len(admin_token) < MIN_ADMIN_TOKEN_LENGTH:
            raise SettingsError(f"{ADMIN_TOKEN} must be at least {MIN_ADMIN_TOKEN_LENGTH} characters")
        return cls(
            grpc_listen=env.address(GRPC_LISTEN, "0.0.0.0:50051"),
            database_url=env.str(DATABASE_URL),
            admin_token=admin_token,
            migrate_on_start=env.bool(MIGRATE_ON_START, True),
            log_level=env.str(LOG_LEVEL, "INFO"),
        )

    def __repr__(self) -> str:  # keep the admin token out of logs and tracebacks
        return f"Settings(grpc_listen={self.grpc_listen!r}, migrate_on_start={self.migrate_on_start})"
