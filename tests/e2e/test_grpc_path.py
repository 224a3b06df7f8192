"""The same journey for internal callers: gRPC straight to the services of the running stack."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import grpc
import pytest

from analytics.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    events_pb2,
    ingest_pb2,
    ingest_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
)
from analytics_testing.stack import ServiceStack

pytestmark = pytest.mark.e2e


async def test_grpc_ingest_and_query(stack: ServiceStack) -> None:
    async with (
        grpc.aio.insecure_channel(stack.addresses["auth"]) as auth_channel,
        grpc.aio.insecure_channel(stack.addresses["ingest"]) as ingest_channel,
        grpc.aio.insecure_channel(stack.addresses["query"]) as query_channel,
    ):
        auth = auth_pb2_grpc.AuthServiceStub(auth_channel)
        ingest = ingest_pb2_grpc.IngestServiceStub(ingest_channel)
        query = query_pb2_grpc.QueryServiceStub(query_channel)
        site = await auth.CreateSite(
            auth_pb2.CreateSiteRequest(name="internal"),
            metadata=(("authorization", f"Bearer {stack.admin_token}"),),
        )
        key = (("x-api-key", site.api_key),)
        events = [
            events_pb2.Event(
                site_id=site.site_id, event_type="pageview", path=f"/p{i % 4}", user_id=f"u{i % 7}"
            )
            for i in range(1000)
        ]
        reply = await ingest.TrackBatch(ingest_pb2.TrackBatchRequest(events=events), metadata=key)
        assert reply.accepted == 1000
        # A re-sent batch with the same event ids is not counted again.
        for event, event_id in zip(events, reply.event_ids, strict=True):
            event.event_id = event_id
        await ingest.TrackBatch(ingest_pb2.TrackBatchRequest(events=events[:10]), metadata=key)

        request = query_pb2.GetDailyStatsRequest(
            site_id=site.site_id, date=datetime.now(UTC).date().isoformat()
        )
        stats = await query.GetDailyStats(request, metadata=key)
        for _ in range(150):
            if stats.total_views >= 1000:
                break
            await asyncio.sleep(0.1)
            stats = await query.GetDailyStats(request, metadata=key)
        await asyncio.sleep(0.3)
        stats = await query.GetDailyStats(request, metadata=key)
        assert stats.total_views == 1000
        assert stats.unique_users == 7
        assert [(p.path, p.views) for p in stats.top_paths] == [
            ("/p0", 250),
            ("/p1", 250),
            ("/p2", 250),
            ("/p3", 250),
        ]

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await query.GetDailyStats(query_pb2.GetDailyStatsRequest(site_id=str(uuid.uuid4())), metadata=key)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
