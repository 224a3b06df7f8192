"""Sites' own alert rules on a real database: the store (fields left out stay NULL and follow the
defaults, a site's deletion removes its rule), and LiveService's Get/Set/DeleteAlertRule through a
real server and stub: who may read and write, the fields a bad rule names, the URL never shown."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import psycopg
import pytest
from nats.aio.client import Client
from structlog.testing import capture_logs

from analytics.v1 import auth_pb2, live_pb2, live_pb2_grpc
from analytics_bus import connect
from analytics_grpc import GrpcServer
from analytics_testing.grpc_errors import expect_error, violations
from query_service.live import alert_rules
from query_service.live.alerts import AlertRule, SiteRule
from query_service.live.hub import LiveHub
from query_service.live.servicer import LiveServicer
from query_service.product.definitions import delete_site_definitions
from query_service.snapshot import Snapshots

from .conftest import ADMIN_MD, QueryStack
from .test_alerts import no_summary

pytestmark = pytest.mark.integration

DEFAULTS = AlertRule(visitors_per_minute=7, events_per_minute=0, cooldown=timedelta(seconds=90))
SECRET_URL = "https://hooks.example/alerts?token=never-shown-0123"


async def test_the_store_keeps_left_out_fields_null_and_forgets_a_deleted_site(
    query_stack: QueryStack,
) -> None:
    site_id, other = str(uuid.uuid4()), str(uuid.uuid4())
    async with query_stack.pool.connection() as conn:
        assert await alert_rules.get_rule(conn, site_id) is None
        stored = await alert_rules.set_rule(
            conn, site_id, SiteRule(visitors_per_minute=3, spike_factor=0.5, webhook_url=SECRET_URL)
        )
        assert stored.updated_at is not None
        assert stored == SiteRule(
            visitors_per_minute=3, spike_factor=0.5, webhook_url=SECRET_URL, updated_at=stored.updated_at
        )
        assert await alert_rules.get_rule(conn, site_id) == stored
        # A second set replaces the rule: what it leaves out follows the defaults again.
        replaced = await alert_rules.set_rule(conn, site_id, SiteRule(events_per_minute=40, enabled=False))
        assert (replaced.visitors_per_minute, replaced.webhook_url, replaced.events_per_minute) == (
            None,
            None,
            40,
        )
        assert replaced.over(DEFAULTS) == AlertRule(
            visitors_per_minute=7, events_per_minute=40, cooldown=timedelta(seconds=90), enabled=False
        )
        await alert_rules.set_rule(conn, other, SiteRule(min_events=2))
        # The database refuses what validation refuses, whoever writes.
        with pytest.raises(psycopg.errors.CheckViolation):
            async with conn.transaction():
                await alert_rules.set_rule(conn, str(uuid.uuid4()), SiteRule(cooldown_seconds=90_000))
        assert await alert_rules.delete_rule(conn, site_id)
        assert not await alert_rules.delete_rule(conn, site_id)
        await alert_rules.set_rule(conn, site_id, SiteRule())
        # A site's deletion removes its rule with its definitions, and nobody else's.
        assert await delete_site_definitions(conn, site_id) == 1
        assert await alert_rules.get_rule(conn, site_id) is None
        kept = await alert_rules.get_rule(conn, other)
        assert kept is not None and kept.min_events == 2


@pytest.fixture
async def live(query_stack: QueryStack, nats_url: str) -> AsyncIterator[live_pb2_grpc.LiveServiceStub]:
    nc: Client = await connect(nats_url, "alert-rules-test")
    hub = LiveHub(nc, no_summary, queue_size=4, summary_interval_s=3600)
    server = GrpcServer("query", "127.0.0.1:0", grace_s=1)
    servicer = LiveServicer(
        Snapshots(query_stack.pool, query_stack.health, 10_000),
        query_stack.auth_client,
        hub,
        heartbeat_s=60,
        alert_defaults=DEFAULTS,
        alert_webhooks={},
    )
    server.add(live_pb2_grpc.add_LiveServiceServicer_to_server, servicer, "analytics.v1.LiveService")
    port = await server.start()
    await server.set_serving()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield live_pb2_grpc.LiveServiceStub(channel)
    await server.stop()
    await hub.close()
    await nc.drain()


async def _admin_key(query_stack: QueryStack, site_id: str) -> tuple[tuple[str, str], ...]:
    made = await query_stack.auth.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(site_id=site_id, scopes=[auth_pb2.SCOPE_ADMIN]), metadata=ADMIN_MD
    )
    return (("x-api-key", made.api_key),)


async def test_rules_are_read_with_the_read_scope_and_written_with_the_admin_scope(
    query_stack: QueryStack, live: live_pb2_grpc.LiveServiceStub
) -> None:
    site_id, read_key = await query_stack.site()
    other_site, _ = await query_stack.site()
    reader = (("x-api-key", read_key),)
    admin = await _admin_key(query_stack, site_id)

    got = await live.GetAlertRule(live_pb2.GetAlertRuleRequest(site_id=site_id), metadata=reader)
    assert got.rule == live_pb2.AlertRule(
        site_id=site_id,
        visitors_per_minute=7,
        spike_factor=3.0,
        min_events=20,
        cooldown_seconds=90,
        enabled=True,
        is_default=True,
    )
    wanted = live_pb2.SetAlertRuleRequest(
        site_id=site_id, visitors_per_minute=4, events_per_minute=100, webhook_url=SECRET_URL
    )
    await expect_error(live.SetAlertRule(wanted, metadata=reader), grpc.StatusCode.PERMISSION_DENIED)
    await expect_error(
        live.DeleteAlertRule(live_pb2.DeleteAlertRuleRequest(site_id=site_id), metadata=reader),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    # An admin key of another site may not change this one's rule.
    other_admin = await _admin_key(query_stack, other_site)
    await expect_error(live.SetAlertRule(wanted, metadata=other_admin), grpc.StatusCode.PERMISSION_DENIED)
    await expect_error(
        live.GetAlertRule(live_pb2.GetAlertRuleRequest(site_id=site_id)), grpc.StatusCode.UNAUTHENTICATED
    )

    with capture_logs() as logs:
        made = await live.SetAlertRule(wanted, metadata=admin)
    assert (made.rule.visitors_per_minute, made.rule.events_per_minute, made.rule.min_events) == (4, 100, 20)
    assert (made.rule.webhook_host, made.rule.own_webhook, made.rule.is_default) == (
        "hooks.example",
        True,
        False,
    )
    assert made.rule.updated_at.endswith("Z")
    assert "never-shown" not in str(logs) and "never-shown" not in str(made)
    assert [(e["site_id"], e["webhook_host"]) for e in logs if e["event"] == "alert rule set"] == [
        (site_id, "hooks.example")
    ]
    read = await live.GetAlertRule(live_pb2.GetAlertRuleRequest(site_id=site_id), metadata=reader)
    assert read.rule == made.rule
    # The admin token may write any site's rule.
    await live.SetAlertRule(
        live_pb2.SetAlertRuleRequest(site_id=other_site, enabled=False), metadata=ADMIN_MD
    )
    other = await live.GetAlertRule(live_pb2.GetAlertRuleRequest(site_id=other_site), metadata=ADMIN_MD)
    assert (other.rule.enabled, other.rule.visitors_per_minute, other.rule.is_default) == (False, 7, False)

    deleted = await live.DeleteAlertRule(live_pb2.DeleteAlertRuleRequest(site_id=site_id), metadata=admin)
    assert deleted.rule == got.rule
    again = await live.GetAlertRule(live_pb2.GetAlertRuleRequest(site_id=site_id), metadata=reader)
    assert again.rule.is_default


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"visitors_per_minute": 0}, "visitors_per_minute"),
        ({"events_per_minute": 0}, "events_per_minute"),
        ({"spike_factor": 1001}, "spike_factor"),
        ({"cooldown_seconds": 86_401}, "cooldown_seconds"),
        ({"webhook_url": "gopher://hooks.example/"}, "webhook_url"),
    ],
)
async def test_a_bad_rule_is_refused_naming_the_field(
    query_stack: QueryStack, live: live_pb2_grpc.LiveServiceStub, fields: dict[str, Any], field: str
) -> None:
    site_id, _ = await query_stack.site()
    request = live_pb2.SetAlertRuleRequest(site_id=site_id, **fields)
    error = await expect_error(
        live.SetAlertRule(request, metadata=ADMIN_MD), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert list(violations(error)) == [field]
    got = await live.GetAlertRule(live_pb2.GetAlertRuleRequest(site_id=site_id), metadata=ADMIN_MD)
    assert got.rule.is_default


async def test_a_site_must_be_a_uuid(live: live_pb2_grpc.LiveServiceStub) -> None:
    error = await expect_error(
        live.GetAlertRule(live_pb2.GetAlertRuleRequest(site_id="nope"), metadata=ADMIN_MD),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert list(violations(error)) == ["site_id"]
