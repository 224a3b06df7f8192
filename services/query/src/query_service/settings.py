"""Query settings, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from analytics_bus.sites import SitesBus
from analytics_config import Env, SettingsError
from analytics_config.names import DATABASE_URL, MIGRATE_ON_START, NATS_URL, QUERY_WS_ADDR
from query_service.live.alerts import AlertRule, parse_webhooks

STATEMENT_TIMEOUT_MS = "ANALYTICS_QUERY_STATEMENT_TIMEOUT_MS"
LIVE_QUEUE_SIZE = "ANALYTICS_LIVE_QUEUE_SIZE"
LIVE_QUEUE_EVENTS = "ANALYTICS_LIVE_QUEUE_EVENTS"
LIVE_HEARTBEAT_S = "ANALYTICS_LIVE_HEARTBEAT_S"
LIVE_SUMMARY_INTERVAL_S = "ANALYTICS_LIVE_SUMMARY_INTERVAL_S"
ALERT_VISITORS_PER_MINUTE = "ANALYTICS_ALERT_VISITORS_PER_MINUTE"
ALERT_EVENTS_PER_MINUTE = "ANALYTICS_ALERT_EVENTS_PER_MINUTE"
ALERT_SPIKE_FACTOR = "ANALYTICS_ALERT_SPIKE_FACTOR"
ALERT_MIN_EVENTS = "ANALYTICS_ALERT_MIN_EVENTS"
ALERT_COOLDOWN_S = "ANALYTICS_ALERT_COOLDOWN_S"
ALERT_INTERVAL_S = "ANALYTICS_ALERT_INTERVAL_S"
ALERT_WEBHOOKS = "ANALYTICS_ALERT_WEBHOOKS"


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
    metrics_listen: str | None
    # Apply the migrations of schema query (goals, funnels) at start, under an advisory lock.
    migrate_on_start: bool = True
    # Live streams: messages a subscriber may have waiting before its oldest is dropped; seconds
    # of silence before a heartbeat; seconds between a site's summaries.
    live_queue_size: int = 256
    live_queue_events: int = 10_000
    live_heartbeat_s: float = 15.0
    live_summary_interval_s: float = 10.0
    # The alert rule of every site without one of its own, and each field a site's rule leaves out.
    alert_rule: AlertRule = field(default_factory=AlertRule)
    alert_interval_s: float = 60.0
    # site_id → URL that each of the site's alerts is POSTed to, unless its rule names its own.
    alert_webhooks: Mapping[str, str] = field(default_factory=dict)
    # Where site deletions travel; its stream kept on ANALYTICS_STREAM_REPLICAS servers.
    sites_bus: SitesBus = field(default_factory=SitesBus)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = Env(environ)
        try:
            webhooks = parse_webhooks(env.list(ALERT_WEBHOOKS))
        except ValueError as error:
            raise SettingsError(f"{ALERT_WEBHOOKS}: {error}") from None
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
            metrics_listen=env.metrics_listen(),
            migrate_on_start=env.bool(MIGRATE_ON_START, True),
            sites_bus=SitesBus(replicas=env.stream_replicas()),
            live_queue_size=env.int(LIVE_QUEUE_SIZE, 256, minimum=1, maximum=100_000),
            live_queue_events=env.int(LIVE_QUEUE_EVENTS, 10_000, minimum=1, maximum=10_000_000),
            live_heartbeat_s=env.float(LIVE_HEARTBEAT_S, 15.0, minimum=0.1, maximum=300.0),
            live_summary_interval_s=env.float(LIVE_SUMMARY_INTERVAL_S, 10.0, minimum=0.1, maximum=3600.0),
            alert_rule=AlertRule(
                visitors_per_minute=env.int(ALERT_VISITORS_PER_MINUTE, 10, minimum=1),
                events_per_minute=env.int(ALERT_EVENTS_PER_MINUTE, 0, minimum=0),
                spike_factor=env.float(ALERT_SPIKE_FACTOR, 3.0, minimum=0.0),
                min_events=env.int(ALERT_MIN_EVENTS, 20, minimum=1),
                cooldown=timedelta(seconds=env.float(ALERT_COOLDOWN_S, 600.0, minimum=0.0)),
            ),
            alert_interval_s=env.float(ALERT_INTERVAL_S, 60.0, minimum=0.1, maximum=3600.0),
            alert_webhooks=webhooks,
        )
