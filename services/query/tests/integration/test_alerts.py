"""Traffic alerts on a real database and NATS: the rule's triggers and its cooldown, each site
judged by its own rule (else the defaults), the alert published once on the site's live subject
and handed to the hub's subscribers, one evaluator at a time across replicas (the advisory lock),
and webhooks (the site's own, else the configured one) retried until accepted."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from analytics.v1 import live_pb2
from analytics_bus import connect, live_subject
from analytics_testing.webhooks import WebhookReceiver, webhook_receiver
from query_service.live import alert_rules, alerts, reference
from query_service.live.hub import LiveHub
from query_service.reference import EventRow

from .conftest import QueryStack
from .test_differential import THROUGH_DATABASE

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await connect(nats_url, "alerts-test")
    yield client
    await client.drain()


def rows(visitors: int, *, seconds_ago: int, per_visitor: int = 1, start: int = 0) -> list[EventRow]:
    return [
        EventRow(
            time=NOW - timedelta(seconds=seconds_ago, milliseconds=i),
            event_id=uuid.uuid4(),
            visitor_id=start + v + 1,
        )
        for v in range(visitors)
        for i in range(per_visitor)
    ]


async def no_summary(site_id: str) -> live_pb2.LiveSummary:
    return live_pb2.LiveSummary()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver() as endpoint:
        yield endpoint


async def test_a_busy_minute_alerts_once_and_reaches_subscribers(
    query_stack: QueryStack, nc: Client, database_url: str
) -> None:
    busy, spiking, quiet = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    # 12 visitors in the last minute: over the visitor threshold of 10.
    await query_stack.write(busy, rows(12, seconds_ago=30))
    # 25 events of 2 visitors in the last minute after 60 in the hour before (1 a minute): a spike.
    await query_stack.write(
        spiking, rows(2, seconds_ago=20, per_visitor=12) + rows(1, seconds_ago=20, start=5)
    )
    await query_stack.write(spiking, rows(3, seconds_ago=1800, per_visitor=20, start=10))
    # 25 events of 2 visitors after 3000 in the hour before: busy, but no spike.
    await query_stack.write(quiet, rows(2, seconds_ago=20, per_visitor=12) + rows(1, seconds_ago=20, start=5))
    await query_stack.write(quiet, rows(30, seconds_ago=1800, per_visitor=100, start=10))

    hub = LiveHub(nc, no_summary, queue_size=10, summary_interval_s=3600)
    published: list[Msg] = []

    async def collect(msg: Msg) -> None:
        published.append(msg)

    taps = [await nc.subscribe(live_subject(site), cb=collect) for site in (busy, spiking, quiet)]
    webhooks = alerts.Webhooks({})
    evaluator = alerts.AlertEvaluator(database_url, nc, alerts.AlertRule(), webhooks)
    alerts_before = REGISTRY.get_sample_value("analytics_live_alerts_total") or 0.0
    async with hub.subscribe(busy) as watcher, await psycopg.AsyncConnection.connect(database_url) as conn:
        await watcher.next(5)  # the summary
        raised = await evaluator.evaluate(conn, NOW)
        assert {site: alert.metric for site, alert in raised} == {
            busy: "visitors_per_minute",
            spiking: "events_per_minute",
        }
        by_site = dict(raised)
        assert (by_site[busy].value, by_site[busy].threshold) == (12, 10)
        assert (by_site[spiking].value, by_site[spiking].threshold) == (25, 3.0)
        message = await watcher.next(5)
        assert message is not None and message.alert.metric == "visitors_per_minute"
        # Within the cooldown the same traffic raises nothing.
        assert await evaluator.evaluate(conn, NOW + timedelta(seconds=1)) == []
    await nc.flush()
    for tap in taps:
        await tap.unsubscribe()
    assert sorted(m.subject for m in published) == sorted([live_subject(busy), live_subject(spiking)])
    assert all(m.headers == {alerts.KIND_HEADER: alerts.ALERT_KIND} for m in published)
    assert evaluator.raised == 2
    assert REGISTRY.get_sample_value("analytics_live_alerts_total") == alerts_before + 2


async def test_one_replica_evaluates_until_its_connection_ends(database_url: str) -> None:
    first = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    second = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    async with second:
        async with first:
            assert await alerts.AlertEvaluator._locked(first)
            assert not await alerts.AlertEvaluator._locked(second)
        # The holder's connection closed (its replica died): the lock passes on.
        assert await alerts.AlertEvaluator._locked(second)


async def test_webhooks_are_retried_with_backoff_until_accepted(receiver: WebhookReceiver) -> None:
    receiver.status = lambda path, count: 503 if count < 3 else 204
    site_id = str(uuid.uuid4())
    webhooks = alerts.Webhooks({site_id: f"{receiver.url}/hook"}, attempts=4, backoff_s=0.01)
    delivered_before = REGISTRY.get_sample_value(
        "analytics_live_webhook_deliveries_total", {"outcome": "delivered"}
    )
    try:
        alert = live_pb2.LiveAlert(
            level="warning",
            message="High visitor activity detected!",
            metric="visitors_per_minute",
            value=12,
            threshold=10,
        )
        with capture_logs() as logs:
            webhooks.send(site_id, alert)
            webhooks.send(str(uuid.uuid4()), alert)  # a site without a webhook: nothing is sent
            await webhooks.flush()
    finally:
        await webhooks.close()
    received = receiver.received["/hook"]
    assert len(received) == 3
    assert received[-1] == {
        "site_id": site_id,
        "level": "warning",
        "message": "High visitor activity detected!",
        "metric": "visitors_per_minute",
        "value": 12.0,
        "threshold": 10.0,
    }
    assert (webhooks.delivered, webhooks.failed) == (1, 0)
    # Each failed attempt is logged with the site and the host, never the URL.
    failures = [entry for entry in logs if entry["event"] == "alert webhook failed"]
    assert [(f["site_id"], f["host"], f["reason"]) for f in failures] == [
        (site_id, "127.0.0.1", "HTTP 503")
    ] * 2
    assert "/hook" not in str(logs)
    delivered = REGISTRY.get_sample_value("analytics_live_webhook_deliveries_total", {"outcome": "delivered"})
    assert delivered == (delivered_before or 0.0) + 1


async def test_each_site_is_judged_by_its_own_rule(
    query_stack: QueryStack, nc: Client, database_url: str, receiver: WebhookReceiver
) -> None:
    strict, lenient, eventful, off, plain = (str(uuid.uuid4()) for _ in range(5))
    own_hook = f"{receiver.url}/strict?token=s3cret"
    async with query_stack.pool.connection() as conn:
        for site_id, rule in [
            (strict, alerts.SiteRule(visitors_per_minute=5, cooldown_seconds=0, webhook_url=own_hook)),
            (lenient, alerts.SiteRule(visitors_per_minute=8)),
            (eventful, alerts.SiteRule(events_per_minute=30, spike_factor=0)),
            (off, alerts.SiteRule(enabled=False, visitors_per_minute=1)),
        ]:
            await alert_rules.set_rule(conn, site_id, rule)
    # 6 visitors a minute: over the strict site's 5, under the lenient site's 8 and the default 10.
    for site_id in (strict, lenient, plain):
        await query_stack.write(site_id, rows(6, seconds_ago=30))
    # 40 events of 2 visitors and no history: only an events threshold sees them.
    await query_stack.write(eventful, rows(2, seconds_ago=30, per_visitor=20))
    await query_stack.write(off, rows(20, seconds_ago=30))

    configured = {eventful: f"{receiver.url}/configured", strict: f"{receiver.url}/unused"}
    webhooks = alerts.Webhooks(configured, attempts=1)
    evaluator = alerts.AlertEvaluator(database_url, nc, alerts.AlertRule(), webhooks)
    try:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            raised = dict(await evaluator.evaluate(conn, NOW))
            assert {site: (a.metric, a.value, a.threshold) for site, a in raised.items()} == {
                strict: ("visitors_per_minute", 6, 5),
                eventful: ("events_per_minute", 40, 30),
            }
            await webhooks.flush()
            # The strict site's cooldown is 0: it alerts again; the eventful one has the default 10 min.
            again = dict(await evaluator.evaluate(conn, NOW + timedelta(seconds=1)))
            assert list(again) == [strict]
            await webhooks.flush()
    finally:
        await webhooks.close()
    # The site's own webhook wins over the configured one, which serves a site without its own.
    assert sorted(receiver.received) == ["/configured", "/strict"]
    assert [body["site_id"] for body in receiver.received["/strict"]] == [strict, strict]
    assert receiver.received["/configured"][0]["metric"] == "events_per_minute"
    assert (webhooks.delivered, webhooks.failed) == (3, 0)


# Offsets from a fixed "now" in seconds: both edges of the last minute and of the trailing hour,
# exactly and one second either side, and a little in the future.
EDGES = [-3661, -3660, -3659, -1800, -61, -60, -59, -30, -1, 0, 1]
REFERENCE_NOW = datetime(2024, 5, 6, 12, tzinfo=UTC)
REFERENCE_DEFAULTS = alerts.AlertRule(visitors_per_minute=4, spike_factor=2.0, min_events=3)


@st.composite
def site_traffic(draw: st.DrawFn) -> tuple[list[EventRow], alerts.SiteRule | None]:
    rows = [
        EventRow(
            time=REFERENCE_NOW + timedelta(seconds=draw(st.sampled_from(EDGES))),
            event_id=uuid.uuid4(),
            visitor_id=draw(st.integers(0, 6)),
            is_bot=draw(st.integers(0, 7)) == 0,
        )
        for _ in range(draw(st.integers(0, 30)))
    ]
    rule = draw(
        st.none()
        | st.builds(
            alerts.SiteRule,
            visitors_per_minute=st.none() | st.integers(1, 6),
            events_per_minute=st.none() | st.integers(1, 12),
            spike_factor=st.none() | st.sampled_from([0.0, 0.5, 1.0, 2.5, 40.0]),
            min_events=st.none() | st.integers(1, 8),
            enabled=st.booleans(),
        )
    )
    return rows, rule


@THROUGH_DATABASE
@given(data=st.data())
async def test_alerts_equal_the_reference(
    query_stack: QueryStack, nc: Client, database_url: str, data: st.DataObject
) -> None:
    drawn = data.draw(st.lists(site_traffic(), min_size=1, max_size=4))
    sites = {str(uuid.uuid4()): traffic for traffic in drawn}
    async with query_stack.pool.connection() as conn:
        for site_id, (_, rule) in sites.items():
            if rule is not None:
                await alert_rules.set_rule(conn, site_id, rule)
    for site_id, (rows, _) in sites.items():
        await query_stack.write(site_id, rows, batch=data.draw(st.integers(1, 10)))
    webhooks = alerts.Webhooks({})
    evaluator = alerts.AlertEvaluator(database_url, nc, REFERENCE_DEFAULTS, webhooks)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        raised = await evaluator.evaluate(conn, REFERENCE_NOW)
    await webhooks.close()
    # Earlier examples' sites share the database: only this example's are compared.
    found = {site: alert for site, alert in raised if site in sites}
    expected = reference.alerts(sites, REFERENCE_DEFAULTS, REFERENCE_NOW)
    assert found == expected
