"""Every process's Prometheus endpoint, scraped before and after real traffic: the counters moved."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from analytics_testing.stack import ServiceStack

pytestmark = pytest.mark.e2e

Samples = list[tuple[str, dict[str, str], float]]


async def scrape(http: aiohttp.ClientSession, url: str) -> Samples:
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        assert response.headers["content-type"].startswith("text/plain")
        text = await response.text()
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


async def scrape_all(http: aiohttp.ClientSession, stack: ServiceStack) -> dict[str, Samples]:
    return {name: await scrape(http, url) for name, url in stack.metrics_urls().items()}


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        value
        for sample, have, value in samples
        if sample == name and all(have.get(key) == wanted for key, wanted in labels.items())
    )


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


async def post(
    http: aiohttp.ClientSession, path: str, body: Any, headers: Mapping[str, str]
) -> tuple[int, Any]:
    async with http.post(path, json=body, headers=dict(headers)) as response:
        return response.status, await response.json()


async def test_every_endpoint_counts_the_traffic_it_served(
    http: aiohttp.ClientSession, stack: ServiceStack
) -> None:
    assert set(stack.metrics_urls()) == {"auth", "ingest", "processor", "query", "edge"}
    before = await scrape_all(http, stack)

    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    status, site = await post(http, "/api/site/create", {"name": "Metrics"}, admin)
    assert status == 200, site
    key = {"x-api-key": site["api_key"]}
    event = {"site_id": site["site_id"], "event_type": "pageview", "path": "/", "event_id": str(uuid.uuid4())}
    for path in ("/", "/a", "/b"):
        status, body = await post(
            http, "/api/event", {**event, "path": path, "event_id": str(uuid.uuid4())}, key
        )
        assert status == 200, body
    status, body = await post(http, "/api/event", event, key)
    assert status == 200, body
    # The same event again: acknowledged, and skipped by the processor as a duplicate.
    status, body = await post(http, "/api/event", event, key)
    assert status == 200, body
    status, body = await post(http, "/api/event", {**event, "path": ""}, key)
    assert status == 400, body
    status, body = await post(http, "/api/event", event, {"x-api-key": "ak_unknown"})
    assert status == 401, body

    # A key allowed one event per second: requests in a row are refused until a second has passed.
    status, limited = await post(
        http,
        f"/v1/sites/{site['site_id']}/keys",
        {"scopes": ["SCOPE_INGEST"], "rate_limit_per_second": 1, "rate_limit_burst": 1},
        admin,
    )
    assert status == 200, limited
    statuses = []
    for _ in range(10):
        status, _body = await post(http, "/api/event", event, {"x-api-key": limited["api_key"]})
        statuses.append(status)
        if status == 429:
            break
    assert 429 in statuses, statuses

    async with http.get("/api/stats", params={"site_id": site["site_id"]}, headers=key) as response:
        assert response.status == 200, await response.text()
    status, body = await post(
        http,
        f"/v1/sites/{site['site_id']}/query",
        {"date_range": {"period": "day"}, "metrics": ["visitors"]},
        key,
    )
    assert status == 200, body
    status, body = await post(
        http,
        f"/v1/sites/{site['site_id']}/funnels:query",
        {"steps": [{"event_name": "pageview"}, {"event_name": "signup"}], "date_range": {"period": "day"}},
        key,
    )
    assert status == 200, body

    # The processor works asynchronously: wait (bounded) until it has stored the four new events and
    # skipped at least one copy.
    after = before
    for _ in range(200):
        after = await scrape_all(http, stack)
        if (
            moved(before["processor"], after["processor"], "analytics_processor_rows_inserted_total") >= 4
            and moved(before["processor"], after["processor"], "analytics_processor_duplicates_skipped_total")
            >= 1
        ):
            break
        await asyncio.sleep(0.1)

    ingest_before, ingest = before["ingest"], after["ingest"]
    track = {"grpc_service": "analytics.v1.IngestService", "grpc_method": "Track", "grpc_type": "unary"}
    assert moved(ingest_before, ingest, "grpc_server_started_total", **track) >= 8
    assert moved(ingest_before, ingest, "grpc_server_handled_total", **track, grpc_code="OK") >= 5
    assert (
        moved(ingest_before, ingest, "grpc_server_handled_total", **track, grpc_code="INVALID_ARGUMENT") == 1
    )
    assert (
        moved(ingest_before, ingest, "grpc_server_handled_total", **track, grpc_code="UNAUTHENTICATED") == 1
    )
    assert (
        moved(ingest_before, ingest, "grpc_server_handled_total", **track, grpc_code="RESOURCE_EXHAUSTED")
        == 1
    )
    assert moved(ingest_before, ingest, "grpc_server_handling_seconds_count", **track) >= 8
    assert moved(ingest_before, ingest, "analytics_ingest_events_accepted_total") >= 5
    assert moved(ingest_before, ingest, "analytics_ingest_events_rejected_total", reason="invalid") == 1
    assert (
        moved(ingest_before, ingest, "analytics_ingest_events_rejected_total", reason="unauthenticated") == 1
    )
    assert moved(ingest_before, ingest, "analytics_ingest_events_rejected_total", reason="rate_limited") == 1
    assert moved(ingest_before, ingest, "analytics_ingest_rate_limited_requests_total") == 1
    assert moved(ingest_before, ingest, "analytics_ingest_group_commit_events_count") >= 1
    assert moved(ingest_before, ingest, "analytics_ingest_group_commit_events_sum") >= 5
    assert moved(ingest_before, ingest, "analytics_ingest_group_commit_bytes_sum") > 0
    assert moved(ingest_before, ingest, "analytics_ingest_publish_seconds_count") >= 1

    processor_before, processor = before["processor"], after["processor"]
    assert moved(processor_before, processor, "analytics_processor_rows_inserted_total") >= 4
    assert moved(processor_before, processor, "analytics_processor_duplicates_skipped_total") >= 1
    assert moved(processor_before, processor, "analytics_processor_batches_total") >= 1
    assert moved(processor_before, processor, "analytics_processor_messages_total") >= 1
    assert moved(processor_before, processor, "analytics_processor_commit_seconds_count") >= 1
    assert [v for n, _, v in processor if n == "analytics_processor_consumer_lag_messages"] != []

    query_before, query = before["query"], after["query"]
    assert moved(query_before, query, "analytics_query_report_seconds_count", report="daily_stats") == 1
    assert moved(query_before, query, "analytics_query_report_seconds_count", report="aggregate") == 1
    assert moved(query_before, query, "analytics_query_report_seconds_count", report="funnel") == 1
    assert (
        moved(
            query_before,
            query,
            "grpc_server_handled_total",
            grpc_service="analytics.v1.QueryService",
            grpc_method="Query",
            grpc_code="OK",
        )
        == 1
    )

    auth_before, auth = before["auth"], after["auth"]
    assert (
        moved(auth_before, auth, "grpc_server_handled_total", grpc_method="CreateSite", grpc_code="OK") == 1
    )
    assert (
        moved(auth_before, auth, "grpc_server_handled_total", grpc_method="CreateApiKey", grpc_code="OK") == 1
    )
    assert moved(auth_before, auth, "grpc_server_started_total", grpc_method="Authenticate") >= 1
    # Every process also reports its own CPU and memory.
    assert total(auth, "process_resident_memory_bytes") > 0

    # Envoy's own statistics, from its admin port: requests it sent to each upstream cluster.
    edge_before, edge = before["edge"], after["edge"]
    for cluster, requests in (("ingest", 8), ("query", 2), ("auth", 2)):
        assert (
            moved(edge_before, edge, "envoy_cluster_upstream_rq_total", envoy_cluster_name=cluster)
            >= requests
        )
