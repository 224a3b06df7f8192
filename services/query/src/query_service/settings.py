"""Query settings, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from analytics_config import Env
from analytics_config.names import DATABASE_URL, NATS_URL, QUERY_WS_ADDR

STATEMENT_TIMEOUT_MS = "ANALYTICS_QUERY_STATEMENT_TIMEOUT_MS"
LIVE_QUEUE_SIZE = "ANALYTICS_LIVE_QUEUE_SIZE"
LIVE_HEARTBEAT_S = "ANALYTICS_LIVE_HEARTBEAT_S"
LIVE_SUMMARY_INTERVAL_S = "ANALYTICS_LIVE_SUMMARY_INTERVAL_S"


@dataclass(frozen=True)
class Settings:
    grpc_listen: str
    # Several query processes may share one port (SO_REUSEPORT): replicas read the same database.
    grpc_reuse_port: bool
    # host:port of the live dashboards' WebSocket server (shares SO_REUSEPORT with gRPC's setting).
    ws_listen: str
    database_url: str
    nats_url: str
    auth_addr: str
    auth_cache_ttl_s: float
    statement_timeout_ms: int
    log_level: str
    # Live streams: messages a subscriber may have waiting before its oldest is dropped; seconds
    # of silence before a heartbeat; seconds between a site's summaries.
    live_queue_size: int = 256
    live_heartbeat_s: float = 15.0
    live_summary_interval_s: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env(environ)
        return cls(
            grpc_listen=env.grpc_listen(),
            grpc_reuse_port=env.grpc_reuse_port(),
            ws_listen=env.address(QUERY_WS_ADDR, "0.0.0.0:50052"),
            database_url=env.str(DATABASE_URL),
            nats_url=env.str(NATS_URL),
            auth_addr=env.auth_addr(),
            auth_cache_ttl_s=env.auth_cache_ttl_s(),
            statement_timeout_ms=env.int(STATEMENT_TIMEOUT_MS, 30_000, minimum=100),
            log_level=env.log_level(),
            live_queue_size=env.int(LIVE_QUEUE_SIZE, 256, minimum=1, maximum=100_000),
            live_heartbeat_s=env.float(LIVE_HEARTBEAT_S, 15.0, minimum=0.1, maximum=300.0),
            live_summary_interval_s=env.float(LIVE_SUMMARY_INTERVAL_S, 10.0, minimum=0.1, maximum=3600.0),
        )
