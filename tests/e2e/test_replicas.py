"""Two ingest and processor processes share their ports (SO_REUSEPORT) and, for the
processors, one durable consumer; together they count exactly."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from analytics.v1 import auth_pb2, auth_pb2_grpc, events_pb2, ingest_pb2, ingest_pb2_grpc
from analytics_testing.stack import ServiceStack

pytestmark = pytest.mark.e2e


@pytest.fixture
def replicated_stack(postgres_server: Any, nats_factory: Any, tmp_path: Path) -> Iterator[ServiceStack]:
    # A private NATS server: another stack's processor must not consume these events.
    nats = nats_factory()
    stack = ServiceStack(
        database_url=postgres_server.create_database(f"e2e_replicas_{secrets.token_hex(4)}"),
        nats_url=nats.url,
        log_dir=tmp_path / "logs",
        admin_token=secrets.token_urlsafe(32),
        replicas={"ingest": 2, "processor": 2},
    )
    stack.start(timeout_s=90)
    yield stack
    stack.stop()


async def test_two_ingest_processes_share_the_port(replicated_stack: ServiceStack) -> None:
    stack = replicated_stack
    async with grpc.aio.insecure_channel(stack.addresses["auth"]) as channel:
        site = await auth_pb2_grpc.AuthServiceStub(channel).CreateSite(
            auth_pb2.CreateSiteRequest(name="replicas"),
            metadata=(("authorization", f"Bearer {stack.admin_token}"),),
        )

    async def client(index: int) -> int:
        # One connection per client: the kernel spreads connections over the processes.
        options = [("grpc.use_local_subchannel_pool", 1)]
        async with grpc.aio.insecure_channel(stack.addresses["ingest"], options=options) as channel:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            events = [
                events_pb2.Event(site_id=site.site_id, event_type="pageview", path=f"/c{index}/{i}")
                for i in range(50)
            ]
            reply = await stub.TrackBatch(
                ingest_pb2.TrackBatchRequest(events=events), metadata=(("x-api-key", site.api_key),)
            )
            return int(reply.accepted)

    accepted = sum(await asyncio.gather(*(client(i) for i in range(24))))
    assert accepted == 24 * 50
    served = [
        process.log_path.read_text().count("IngestService/TrackBatch")
        for name, process in stack.processes.items()
        if name.split(".")[0] == "ingest"
    ]
    assert len(served) == 2 and all(count > 0 for count in served), served
    assert sum(served) == 24
    stored = 0
    for _ in range(100):
        with psycopg.connect(stack.database_url) as conn:
            row = conn.execute(
                "SELECT count(*), count(DISTINCT path) FROM analytics.events WHERE site_id = %s",
                (site.site_id,),
            ).fetchone()
        stored = int(row[0]) if row else 0
        if stored >= accepted:
            break
        await asyncio.sleep(0.1)
    assert row == (accepted, accepted)


def test_two_processor_processes_serve_one_port_and_consume_together(replicated_stack: ServiceStack) -> None:
    logs = {
        name: process.log_path.read_text()
        for name, process in replicated_stack.processes.items()
        if name.split(".")[0] == "processor"
    }
    assert sorted(logs) == ["processor", "processor.2"]
    for name, text in logs.items():
        assert '"event":"serving"' in text and '"event":"consuming"' in text, (name, text[-2000:])
