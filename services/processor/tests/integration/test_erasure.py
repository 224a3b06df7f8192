"""Erasure: one person's events, visits and visitor days go, and every rollup stays equal to a
recomputation from what remains (in whichever edition the suite runs; materialized first, so the
continuous aggregates' corrections happen below their watermark). PrivacyService through a real
server, a real auth service and a stub: who may erase, refusals, the answer and the audit line."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import AsyncConnectionPool
from structlog.testing import capture_logs

from analytics.v1 import auth_pb2, auth_pb2_grpc, bus_pb2, privacy_pb2, privacy_pb2_grpc
from analytics_db import migrate
from analytics_grpc import GrpcServer
from analytics_grpc.auth_client import AuthClient
from auth_service.servicer import AuthServicer
from auth_service.store import AuthStore
from processor_service.erasure import erase
from processor_service.privacy import PrivacyServicer
from processor_service.writer import EventWriter

from .test_rollups import assert_exact, materialize
from .test_sessions import CUSTOM, PV, event, recomputed, stored, write

pytestmark = pytest.mark.integration

ADMIN = "privacy-test-admin-token-0123456789"


def person(site: uuid.UUID, visitor: int, minute: int, kind: int, bot: bool) -> bus_pb2.EnrichedEvent:
    made = event(site, visitor, minute, f"/p{minute % 3}", kind=kind, is_bot=bot)
    if visitor % 2:  # odd visitors are signed in: one user_id each
        made.user_id = f"user-{visitor}"
    return made


async def counts(pool: AsyncConnectionPool, site: uuid.UUID, visitors: list[int]) -> tuple[int, int, int]:
    async with pool.connection() as conn:
        found = []
        for table in ("events", "sessions", "visitor_days"):
            cur = await conn.execute(
                f"SELECT count(*) FROM analytics.{table} WHERE site_id = %s AND visitor_id = ANY (%s)",
                (site, visitors),
            )
            row = await cur.fetchone()
            found.append(int(row[0]) if row else 0)
        return found[0], found[1], found[2]


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
async def test_erasure_leaves_every_rollup_equal_to_a_recomputation(
    analytics_pool: AsyncConnectionPool, data: st.DataObject
) -> None:
    site, other = uuid.uuid4(), uuid.uuid4()
    events = [
        person(
            s,
            data.draw(st.integers(1, 4)),
            data.draw(st.integers(0, 2 * 24 * 60)),
            data.draw(st.sampled_from([PV, PV, CUSTOM])),
            data.draw(st.integers(0, 9)) == 0,
        )
        for s in (site, other)
        for _ in range(data.draw(st.integers(1, 25)))
    ]
    random.Random(len(events)).shuffle(events)
    writer = EventWriter(analytics_pool)
    half = len(events) // 2
    await write(writer, *events[:half])
    await materialize(analytics_pool)  # continuous aggregates: the rest lands below the watermark
    if events[half:]:
        await write(writer, *events[half:])
    await materialize(analytics_pool)
    by_user = data.draw(st.booleans())
    target = data.draw(st.sampled_from([1, 3])) if by_user else data.draw(st.integers(1, 4))
    before = await counts(analytics_pool, site, [target])
    other_before = await counts(analytics_pool, other, [target])
    async with analytics_pool.connection() as conn:
        if by_user:
            erased = await erase(conn, str(site), user_id=f"user-{target}")
        else:
            erased = await erase(conn, str(site), visitor_id=target)
    assert (erased.events, erased.sessions, erased.visitor_days) == before
    assert erased.visitors == (1 if before[0] else 0)
    assert await counts(analytics_pool, site, [target]) == (0, 0, 0)
    assert await counts(analytics_pool, other, [target]) == other_before
    await assert_exact(analytics_pool, site, other)
    assert await stored(analytics_pool, site, other) == await recomputed(analytics_pool, site, other)


@pytest.fixture
async def privacy(database_url: str, analytics_pool: AsyncConnectionPool) -> AsyncIterator[Any]:
    await migrate(database_url, "auth", "auth_service.migrations")
    auth_server = GrpcServer("auth", "127.0.0.1:0", grace_s=1)
    auth_server.add(
        auth_pb2_grpc.add_AuthServiceServicer_to_server,
        AuthServicer(AuthStore(analytics_pool), ADMIN, "internal-0123456789abcdef"),
        "analytics.v1.AuthService",
    )
    auth_port = await auth_server.start()
    await auth_server.set_serving()
    auth = AuthClient(f"127.0.0.1:{auth_port}", ttl_s=0)
    servicer = PrivacyServicer(auth)
    servicer.attach(analytics_pool)
    server = GrpcServer("processor", "127.0.0.1:0", grace_s=1)
    server.add(privacy_pb2_grpc.add_PrivacyServiceServicer_to_server, servicer, "analytics.v1.PrivacyService")
    port = await server.start()
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{auth_port}") as auth_channel,
    ):
        yield privacy_pb2_grpc.PrivacyServiceStub(channel), auth_pb2_grpc.AuthServiceStub(auth_channel)
    await server.stop()
    await auth.close()
    await auth_server.stop()


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def test_erasure_over_grpc_answers_what_went_and_logs_no_ids(
    privacy: Any, analytics_pool: AsyncConnectionPool
) -> None:
    stub, auth = privacy
    made = await auth.CreateSite(auth_pb2.CreateSiteRequest(name="site"), metadata=bearer(ADMIN))
    site = uuid.UUID(made.site_id)
    writer = EventWriter(analytics_pool)
    await write(
        writer,
        person(site, 3, 0, PV, False),
        person(site, 3, 5, CUSTOM, False),
        person(site, 2, 1, PV, False),
    )

    # The site's first key ingests and reads: erasing needs the admin scope.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.EraseVisitor(
            privacy_pb2.EraseVisitorRequest(site_id=made.site_id, user_id="user-3"),
            metadata=bearer(made.api_key),
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

    with capture_logs() as logs:
        answer = await stub.EraseVisitor(
            privacy_pb2.EraseVisitorRequest(site_id=made.site_id, user_id="user-3"), metadata=bearer(ADMIN)
        )
    assert (answer.visitors, answer.events, answer.sessions, answer.visitor_days) == (1, 2, 1, 1)
    assert (answer.event_buckets, answer.visit_buckets) == (1, 1)
    (audit,) = [line for line in logs if line["event"] == "erasure"]
    assert audit["site_id"] == made.site_id and audit["by"] == "user_id" and audit["events"] == 2
    assert "user-3" not in repr(logs) and "3" not in {str(v) for v in audit.values()} - {"2"}
    assert await counts(analytics_pool, site, [2]) == (1, 1, 1)

    again = await stub.EraseVisitor(
        privacy_pb2.EraseVisitorRequest(site_id=made.site_id, visitor_id="3"), metadata=bearer(ADMIN)
    )
    assert (again.visitors, again.events, again.sessions) == (0, 0, 0)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({}, "user_id"),
        ({"user_id": "a", "visitor_id": "1"}, "user_id"),
        ({"visitor_id": "abc"}, "visitor_id"),
        ({"visitor_id": "0"}, "visitor_id"),
        ({"visitor_id": str(2**63)}, "visitor_id"),
        ({"user_id": "u" * 257}, "user_id"),
        ({"site_id": "nope", "user_id": "a"}, "site_id"),
    ],
)
async def test_bad_erasure_requests_name_the_field(privacy: Any, fields: dict[str, str], field: str) -> None:
    stub, _ = privacy
    request = privacy_pb2.EraseVisitorRequest(**{"site_id": str(uuid.uuid4()), **fields})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.EraseVisitor(request, metadata=bearer(ADMIN))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(field), caught.value.details()


async def test_unknown_site_and_missing_credentials(privacy: Any) -> None:
    stub, _ = privacy
    request = privacy_pb2.EraseVisitorRequest(site_id=str(uuid.uuid4()), user_id="a")
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.EraseVisitor(request, metadata=bearer(ADMIN))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await stub.EraseVisitor(request)
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
