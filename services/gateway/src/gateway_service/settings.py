"""Gateway settings, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from analytics_config import Env, SettingsError
from analytics_config.names import AUTH_ADDR as ENV_AUTH_ADDR
from analytics_config.names import INGEST_ADDR as ENV_INGEST_ADDR
from analytics_config.names import LOG_LEVEL as ENV_LOG_LEVEL
from analytics_config.names import PROCESSOR_ADDR as ENV_PROCESSOR_ADDR
from analytics_config.names import QUERY_ADDR as ENV_QUERY_ADDR

__all__ = [
    "AUTH_SERVICE",
    "INGEST_SERVICE",
    "QUERY_SERVICE",
    "Settings",
    "SettingsError",
    "load_settings",
]

ENV_HTTP_HOST = "ANALYTICS_HTTP_HOST"
ENV_HTTP_PORT = "ANALYTICS_HTTP_PORT"
ENV_MAX_BODY_BYTES = "ANALYTICS_HTTP_MAX_BODY_BYTES"
ENV_UPSTREAM_TIMEOUT_S = "ANALYTICS_HTTP_UPSTREAM_TIMEOUT_S"
ENV_CORS_ALLOW_ORIGINS = "ANALYTICS_CORS_ALLOW_ORIGINS"
ENV_REJECT_UNKNOWN_FIELDS = "ANALYTICS_HTTP_REJECT_UNKNOWN_FIELDS"
ENV_REUSE_PORT = "ANALYTICS_HTTP_REUSE_PORT"

INGEST_SERVICE = "analytics.v1.IngestService"
QUERY_SERVICE = "analytics.v1.QueryService"
AUTH_SERVICE = "analytics.v1.AuthService"
PROCESSOR_SERVICE = "analytics.v1.ProcessorService"

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway can be configured with; defaults suit a single machine."""

    http_host: str = "127.0.0.1"
    http_port: int = 8080
    ingest_addr: str = "127.0.0.1:25152"
    query_addr: str = "127.0.0.1:25153"
    auth_addr: str = "127.0.0.1:25151"
    processor_addr: str = "127.0.0.1:25154"
    max_body_bytes: int = 2 * 1024 * 1024
    upstream_timeout_s: float = 10.0
    cors_allow_origins: tuple[str, ...] = ("*",)
    # Envoy's transcoder silently drops JSON fields the message does not define and has no
    # switch to reject them; strict mode is opt-in so both edges behave the same by default.
    reject_unknown_fields: bool = False
    # SO_REUSEPORT lets several gateway processes share the port when one core is not enough.
    reuse_port: bool = False
    log_level: str = "INFO"

    @property
    def upstreams(self) -> Mapping[str, str]:
        """gRPC service full name -> upstream host:port."""
        return {
            INGEST_SERVICE: self.ingest_addr,
            QUERY_SERVICE: self.query_addr,
            AUTH_SERVICE: self.auth_addr,
            PROCESSOR_SERVICE: self.processor_addr,
        }


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Builds Settings from the environment (os.environ unless given); raises SettingsError."""
    env = Env(environ)
    defaults = Settings()
    origins = env.list(ENV_CORS_ALLOW_ORIGINS, defaults.cors_allow_origins)
    if not origins:
        raise SettingsError(f"{ENV_CORS_ALLOW_ORIGINS} must name at least one origin or '*'")
    return Settings(
        http_host=env.str(ENV_HTTP_HOST, defaults.http_host),
        http_port=env.int(ENV_HTTP_PORT, defaults.http_port, minimum=0, maximum=65535),
        ingest_addr=env.address(ENV_INGEST_ADDR, defaults.ingest_addr),
        query_addr=env.address(ENV_QUERY_ADDR, defaults.query_addr),
        auth_addr=env.address(ENV_AUTH_ADDR, defaults.auth_addr),
        processor_addr=env.address(ENV_PROCESSOR_ADDR, defaults.processor_addr),
        max_body_bytes=env.int(ENV_MAX_BODY_BYTES, defaults.max_body_bytes, minimum=1),
        upstream_timeout_s=env.float(
            ENV_UPSTREAM_TIMEOUT_S, defaults.upstream_timeout_s, minimum=0.001, maximum=3600.0
        ),
        cors_allow_origins=origins,
        reject_unknown_fields=env.bool(ENV_REJECT_UNKNOWN_FIELDS, defaults.reject_unknown_fields),
        reuse_port=env.bool(ENV_REUSE_PORT, defaults.reuse_port),
        log_level=_log_level(env.str(ENV_LOG_LEVEL, defaults.log_level)),
    )


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in _LOG_LEVELS:
        raise SettingsError(f"{ENV_LOG_LEVEL}={raw!r} must be one of {', '.join(_LOG_LEVELS)}")
    return level
