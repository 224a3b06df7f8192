"""Auth's settings from the environment: tokens checked, the site deletion stream's replicas."""

from __future__ import annotations

import pytest

from analytics_config import SettingsError
from auth_service.settings import Settings

BASE = {
    "ANALYTICS_DATABASE_URL": "postgresql://x/y",
    "ANALYTICS_NATS_URL": "nats://x:1",
    "ANALYTICS_ADMIN_TOKEN": "a" * 24,
    "ANALYTICS_INTERNAL_TOKEN": "b" * 24,
}


def test_the_site_deletion_stream_is_kept_on_as_many_servers_as_the_events() -> None:
    assert Settings.from_env(BASE).sites_bus.replicas == 1
    assert Settings.from_env({**BASE, "ANALYTICS_STREAM_REPLICAS": "3"}).sites_bus.replicas == 3
    with pytest.raises(SettingsError, match="ANALYTICS_STREAM_REPLICAS=0"):
        Settings.from_env({**BASE, "ANALYTICS_STREAM_REPLICAS": "0"})


def test_tokens_must_be_long_and_different_and_stay_out_of_repr() -> None:
    with pytest.raises(SettingsError, match="at least 24 characters"):
        Settings.from_env({**BASE, "ANALYTICS_ADMIN_TOKEN": "short"})
    with pytest.raises(SettingsError, match="must differ"):
        Settings.from_env({**BASE, "ANALYTICS_INTERNAL_TOKEN": "a" * 24})
    assert "a" * 24 not in repr(Settings.from_env(BASE))
