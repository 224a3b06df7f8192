"""The live settings: alert rule and webhooks from the environment, bad values refused at start."""

from __future__ import annotations

from datetime import timedelta

import pytest

from analytics.v1 import live_pb2
from analytics_config import SettingsError
from query_service.live.alerts import AlertRule, SiteMinute, crossed
from query_service.settings import Settings

BASE = {"ANALYTICS_DATABASE_URL": "postgresql://x/y", "ANALYTICS_NATS_URL": "nats://x:1"}


def test_alert_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            **BASE,
            "ANALYTICS_ALERT_VISITORS_PER_MINUTE": "25",
            "ANALYTICS_ALERT_SPIKE_FACTOR": "0",
            "ANALYTICS_ALERT_EVENTS_PER_MINUTE": "300",
            "ANALYTICS_ALERT_COOLDOWN_S": "30",
            "ANALYTICS_ALERT_WEBHOOKS": "a=https://hooks.example/a, b=http://127.0.0.1:9/b",
            "ANALYTICS_LIVE_QUEUE_EVENTS": "50",
        }
    )
    assert settings.alert_rule == AlertRule(
        visitors_per_minute=25, events_per_minute=300, spike_factor=0.0, cooldown=timedelta(seconds=30)
    )
    assert settings.alert_webhooks == {"a": "https://hooks.example/a", "b": "http://127.0.0.1:9/b"}
    assert settings.live_queue_events == 50
    assert Settings.from_env(BASE).alert_rule == AlertRule()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ANALYTICS_ALERT_WEBHOOKS", "site-without-url"),
        ("ANALYTICS_ALERT_WEBHOOKS", "a=ftp://x"),
        ("ANALYTICS_ALERT_VISITORS_PER_MINUTE", "0"),
        ("ANALYTICS_ALERT_SPIKE_FACTOR", "-1"),
        ("ANALYTICS_ALERT_EVENTS_PER_MINUTE", "-5"),
        ("ANALYTICS_LIVE_QUEUE_SIZE", "0"),
    ],
)
def test_bad_values_fail_at_start(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({**BASE, name: value})


def test_the_spike_rule_needs_a_busy_minute_and_a_trailing_rate() -> None:
    rule = AlertRule(visitors_per_minute=100, spike_factor=3.0, min_events=20)
    # 60 events in the hour before: 1 a minute; 21 in the last minute is over 3x.
    spike = crossed(rule, SiteMinute("s", events=21, visitors=2, trailing_events=60))
    assert isinstance(spike, live_pb2.LiveAlert) and spike.metric == "events_per_minute"
    assert spike.threshold == 3.0
    assert crossed(rule, SiteMinute("s", events=19, visitors=2, trailing_events=60)) is None  # too few
    assert crossed(rule, SiteMinute("s", events=50, visitors=2, trailing_events=0)) is None  # no history
    assert crossed(rule, SiteMinute("s", events=21, visitors=2, trailing_events=600)) is None  # no spike
    assert (
        crossed(AlertRule(spike_factor=0), SiteMinute("s", events=500, visitors=2, trailing_events=6)) is None
    )


def test_the_site_deletion_stream_is_kept_on_as_many_servers_as_the_events() -> None:
    assert Settings.from_env(BASE).sites_bus.replicas == 1
    assert Settings.from_env({**BASE, "ANALYTICS_STREAM_REPLICAS": "3"}).sites_bus.replicas == 3
