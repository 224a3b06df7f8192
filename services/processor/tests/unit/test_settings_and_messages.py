"""Settings validation and the small pure functions around the consumer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from analytics.v1 import processor_pb2
from analytics_bus.deadletter import DeadLetter
from analytics_config import SettingsError
from processor_service.admin import dead_letter_message
from processor_service.live import live_update
from processor_service.settings import CliSettings, Settings
from processor_service.writer import SiteActivity

BASE = {"ANALYTICS_DATABASE_URL": "postgresql://x/y", "ANALYTICS_NATS_URL": "nats://x:4222"}


def test_defaults() -> None:
    settings = Settings.from_env(BASE)
    assert settings.bus.max_deliver == 10
    assert settings.bus.backoff_s == (10.0, 30.0, 120.0, 300.0, 600.0)
    assert (settings.max_inflight, settings.retry_delay_s, settings.retry_max_delay_s) == (2, 0.25, 5.0)
    assert settings.auth_addr == "auth:50051"
    assert settings.sessions
    assert settings.raw_retention is None


def test_raw_retention_is_whole_days_of_at_least_two() -> None:
    assert Settings.from_env({**BASE, "ANALYTICS_RAW_RETENTION_DAYS": "400"}).raw_retention == timedelta(
        days=400
    )
    assert Settings.from_env({**BASE, "ANALYTICS_RAW_RETENTION_DAYS": "0"}).raw_retention is None
    with pytest.raises(SettingsError, match="at least 2 days"):
        Settings.from_env({**BASE, "ANALYTICS_RAW_RETENTION_DAYS": "1"})
    with pytest.raises(SettingsError, match="not an integer"):
        Settings.from_env({**BASE, "ANALYTICS_RAW_RETENTION_DAYS": "a year"})


def test_backoff_and_max_deliver_are_configurable_and_checked() -> None:
    env = {
        **BASE,
        "ANALYTICS_PROCESSOR_REDELIVERY_BACKOFF_S": "5, 10",
        "ANALYTICS_PROCESSOR_MAX_DELIVER": "3",
    }
    assert Settings.from_env(env).bus.backoff_s == (5.0, 10.0)
    with pytest.raises(SettingsError, match="must exceed the 2 backoff steps"):
        Settings.from_env({**env, "ANALYTICS_PROCESSOR_MAX_DELIVER": "2"})
    with pytest.raises(SettingsError, match="not a number of seconds"):
        Settings.from_env({**BASE, "ANALYTICS_PROCESSOR_REDELIVERY_BACKOFF_S": "soon"})
    with pytest.raises(SettingsError, match="below the minimum"):
        Settings.from_env({**BASE, "ANALYTICS_PROCESSOR_RETRY_MAX_DELAY_S": "0.1"})


def test_stream_replicas_apply_to_every_stream_and_metrics_may_be_served() -> None:
    settings = Settings.from_env(BASE)
    assert (settings.bus.replicas, settings.bus.deadletter.replicas, settings.metrics_listen) == (1, 1, None)
    assert settings.sites_bus.replicas == 1
    settings = Settings.from_env(
        {**BASE, "ANALYTICS_STREAM_REPLICAS": "3", "ANALYTICS_METRICS_LISTEN": "0.0.0.0:9464"}
    )
    assert (settings.bus.replicas, settings.bus.deadletter.replicas, settings.sites_bus.replicas) == (3, 3, 3)
    assert settings.bus.backoff_s == (10.0, 30.0, 120.0, 300.0, 600.0)
    assert settings.metrics_listen == "0.0.0.0:9464"
    with pytest.raises(SettingsError, match="ANALYTICS_STREAM_REPLICAS=7 is above the maximum 5"):
        Settings.from_env({**BASE, "ANALYTICS_STREAM_REPLICAS": "7"})
    with pytest.raises(SettingsError, match="ANALYTICS_METRICS_LISTEN='9464' is not host:port"):
        Settings.from_env({**BASE, "ANALYTICS_METRICS_LISTEN": "9464"})


def test_command_line_settings() -> None:
    settings = CliSettings.from_env({"ANALYTICS_PROCESSOR_ADDR": "proc:1", "ANALYTICS_ADMIN_TOKEN": "t"})
    assert settings == CliSettings("proc:1", "t")
    assert CliSettings.from_env({}).admin_token is None


def test_live_update_keeps_the_ten_most_viewed_paths() -> None:
    site = uuid.uuid4()
    activity = SiteActivity()
    at = datetime(2024, 1, 1, tzinfo=UTC)
    for i in range(15):
        activity.add(1, f"/p{i:02d}", 15 - i, first_at=at, last_at=at)
    activity.add(2, "", 4, first_at=at, last_at=datetime(2024, 1, 2, tzinfo=UTC))
    update = live_update(site, activity, at)
    assert update.site_id == str(site)
    assert (update.events, update.pageviews) == (124, 120)
    assert [p.path for p in update.paths] == [f"/p{i:02d}" for i in range(10)]
    assert update.other_pageviews == 5 + 4 + 3 + 2 + 1
    assert update.last_event_at.ToDatetime(tzinfo=UTC) == datetime(2024, 1, 2, tzinfo=UTC)


def test_unknown_reasons_are_unspecified() -> None:
    entry = DeadLetter(3, "mystery", "", "S", 1, "s", None, 0, b"\xff")
    message = dead_letter_message(entry)
    assert message.reason == processor_pb2.DEAD_LETTER_REASON_UNSPECIFIED
    assert not message.HasField("event_count")


def test_the_grpc_port_is_shared_only_when_asked() -> None:
    assert not Settings.from_env(BASE).grpc_reuse_port
    assert Settings.from_env({**BASE, "ANALYTICS_GRPC_REUSE_PORT": "true"}).grpc_reuse_port
