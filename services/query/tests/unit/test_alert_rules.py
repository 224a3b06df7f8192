"""Per-site alert rules: SetAlertRule's validation, a site's rule over the configured defaults, the
rule in effect as answered (never the webhook's URL), and ``crossed`` under per-site rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from analytics.v1 import live_pb2
from analytics_grpc.errors import ServiceError
from query_service.live.alert_rules import parse_rule
from query_service.live.alerts import AlertRule, SiteMinute, SiteRule, crossed, webhook_host
from query_service.live.servicer import _alert_rule

DEFAULTS = AlertRule(visitors_per_minute=10, spike_factor=3.0, min_events=20, cooldown=timedelta(minutes=10))
SITE = "0b7e8a52-7a3c-4f51-9d0e-3c8f1f3f2b10"


def violations(**fields: Any) -> dict[str, str]:
    with pytest.raises(ServiceError) as caught:
        parse_rule(live_pb2.SetAlertRuleRequest(site_id=SITE, **fields))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return {v.field: v.description for v in caught.value.violations}


def test_a_request_without_fields_follows_every_default() -> None:
    rule = parse_rule(live_pb2.SetAlertRuleRequest(site_id=SITE))
    assert rule == SiteRule()
    assert rule.over(DEFAULTS) == DEFAULTS


def test_the_given_fields_are_kept_and_zero_is_a_value_not_a_default() -> None:
    rule = parse_rule(
        live_pb2.SetAlertRuleRequest(
            site_id=SITE,
            visitors_per_minute=1,
            events_per_minute=1_000_000_000,
            spike_factor=0,
            min_events=5,
            cooldown_seconds=0,
            enabled=False,
            webhook_url="https://hooks.example:8443/alerts?token=abc",
        )
    )
    assert rule == SiteRule(
        visitors_per_minute=1,
        events_per_minute=1_000_000_000,
        spike_factor=0.0,
        min_events=5,
        cooldown_seconds=0,
        enabled=False,
        webhook_url="https://hooks.example:8443/alerts?token=abc",
    )
    assert rule.over(DEFAULTS) == AlertRule(
        visitors_per_minute=1,
        events_per_minute=1_000_000_000,
        spike_factor=0.0,
        min_events=5,
        cooldown=timedelta(0),
        enabled=False,
    )
    # An empty URL is no URL: the configured webhook applies.
    assert parse_rule(live_pb2.SetAlertRuleRequest(site_id=SITE, webhook_url="")).webhook_url is None


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"visitors_per_minute": 0}, "visitors_per_minute", "between 1 and 1000000000, got 0"),
        ({"events_per_minute": 0}, "events_per_minute", "between 1 and 1000000000, got 0"),
        ({"events_per_minute": 1_000_000_001}, "events_per_minute", "got 1000000001"),
        ({"min_events": 0}, "min_events", "between 1 and"),
        ({"spike_factor": -0.5}, "spike_factor", "between 0 and 1000, got -0.5"),
        ({"spike_factor": 1000.5}, "spike_factor", "got 1000.5"),
        ({"spike_factor": float("nan")}, "spike_factor", "got nan"),
        ({"spike_factor": float("inf")}, "spike_factor", "got inf"),
        ({"cooldown_seconds": 86_401}, "cooldown_seconds", "between 0 and 86400, got 86401"),
        ({"webhook_url": "ftp://hooks.example/a"}, "webhook_url", "http or https URL, got the scheme 'ftp'"),
        ({"webhook_url": "hooks.example/a"}, "webhook_url", "http or https URL"),
        ({"webhook_url": "https:///path-only"}, "webhook_url", "must name a host"),
        ({"webhook_url": "http://[::1/x"}, "webhook_url", "is not a valid URL"),
        ({"webhook_url": "http://hooks.example:99999/"}, "webhook_url", "is not a valid URL"),
        ({"webhook_url": "https://hooks.example/a b"}, "webhook_url", "spaces or control characters"),
        ({"webhook_url": "https://hooks.example/\n"}, "webhook_url", "spaces or control characters"),
        (
            {"webhook_url": "https://hooks.example/" + "a" * 2030},
            "webhook_url",
            "at most 2048 characters, got 2052",
        ),
    ],
)
def test_bad_fields_are_named(fields: dict[str, Any], field: str, words: str) -> None:
    found = violations(**fields)
    assert list(found) == [field]
    assert words in found[field]


def test_every_bad_field_is_named_at_once() -> None:
    found = violations(visitors_per_minute=0, spike_factor=2000, cooldown_seconds=90_000, webhook_url="x")
    assert set(found) == {"visitors_per_minute", "spike_factor", "cooldown_seconds", "webhook_url"}


def test_a_url_of_2048_characters_is_taken() -> None:
    url = "https://hooks.example/" + "a" * (2048 - len("https://hooks.example/"))
    assert parse_rule(live_pb2.SetAlertRuleRequest(site_id=SITE, webhook_url=url)).webhook_url == url


def test_the_answer_shows_the_webhooks_host_never_its_url() -> None:
    configured = {SITE: "https://configured.example/hook?secret=s1"}
    default = _alert_rule(SITE, None, DEFAULTS, configured)
    assert default == live_pb2.AlertRule(
        site_id=SITE,
        visitors_per_minute=10,
        spike_factor=3.0,
        min_events=20,
        cooldown_seconds=600,
        enabled=True,
        webhook_host="configured.example",
        is_default=True,
    )
    at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    own = SiteRule(events_per_minute=50, webhook_url="https://own.example/h?secret=s2", updated_at=at)
    answered = _alert_rule(SITE, own, DEFAULTS, configured)
    assert (answered.events_per_minute, answered.visitors_per_minute) == (50, 10)
    assert (answered.webhook_host, answered.own_webhook, answered.is_default) == ("own.example", True, False)
    assert answered.updated_at == "2026-03-01T12:00:00Z"
    assert "secret" not in str(answered) and "secret" not in str(default)
    # A site's rule without a URL of its own keeps the configured webhook.
    kept = _alert_rule(SITE, SiteRule(), DEFAULTS, configured)
    assert (kept.webhook_host, kept.own_webhook, kept.is_default) == ("configured.example", False, False)
    assert _alert_rule(SITE, None, DEFAULTS, {}).webhook_host == ""
    assert webhook_host("http://[::1/x") == ""


def minute(site: str, events: int, visitors: int, trailing: int, own: SiteRule | None = None) -> SiteMinute:
    return SiteMinute(site, events=events, visitors=visitors, trailing_events=trailing, own_rule=own)


def test_crossed_judges_each_site_by_its_own_rule() -> None:
    strict = SiteRule(visitors_per_minute=3)
    lenient = SiteRule(visitors_per_minute=50)
    # The same minute: over a strict site's threshold, under a lenient one's and under the default.
    busy = crossed(minute("a", 30, 5, 0, strict).rule(DEFAULTS), minute("a", 30, 5, 0, strict))
    assert busy is not None and (busy.metric, busy.value, busy.threshold) == ("visitors_per_minute", 5, 3)
    assert crossed(minute("b", 30, 12, 0, lenient).rule(DEFAULTS), minute("b", 30, 12, 0)) is None
    assert minute("c", 30, 12, 0).rule(DEFAULTS) is DEFAULTS
    default = crossed(DEFAULTS, minute("c", 30, 12, 0))
    assert default is not None and default.threshold == 10


def test_the_events_per_minute_threshold() -> None:
    rule = SiteRule(events_per_minute=100, spike_factor=0).over(DEFAULTS)
    # 100 events of 2 visitors, no history: no visitor alert and no spike, but the events threshold.
    alert = crossed(rule, minute("s", 100, 2, 0))
    assert alert is not None
    assert (alert.metric, alert.value, alert.threshold) == ("events_per_minute", 100, 100)
    assert alert.message == "High event volume: 100 events in the last minute"
    assert crossed(rule, minute("s", 99, 2, 0)) is None
    # The visitor threshold is looked at first; the default has no events threshold at all.
    both = crossed(rule, minute("s", 500, 10, 0))
    assert both is not None and both.metric == "visitors_per_minute"
    assert crossed(DEFAULTS, minute("s", 10_000, 2, 10_000 * 60)) is None


def test_the_spike_rule_uses_the_sites_factor_and_minimum() -> None:
    rule = SiteRule(spike_factor=10, min_events=5).over(DEFAULTS)
    # 60 events in the hour before: 1 a minute; 11 is over 10x, 10 is not.
    spike = crossed(rule, minute("s", 11, 2, 60))
    assert spike is not None and (spike.metric, spike.threshold) == ("events_per_minute", 10.0)
    assert crossed(rule, minute("s", 10, 2, 60)) is None
    # Under the default factor (3x) and minimum (20), 11 events are no spike.
    assert crossed(DEFAULTS, minute("s", 11, 2, 60)) is None


def test_a_disabled_rule_never_alerts() -> None:
    rule = SiteRule(enabled=False, visitors_per_minute=1, events_per_minute=1).over(DEFAULTS)
    assert crossed(rule, minute("s", 10_000, 10_000, 60)) is None
