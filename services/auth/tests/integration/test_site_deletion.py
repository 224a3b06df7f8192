"""DeleteSite through a real server and TimescaleDB: the site and its keys go at once (revocations
announced), the deletion is announced to the data owners, asking again announces it again, and the
deletion is real over JetStream (the message the owners' consumers read)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

import grpc
import nats
import pytest

from analytics.v1 import auth_pb2, auth_pb2_grpc, privacy_pb2
from analytics_bus.sites import SitesBus, ensure_sites_stream, publish_site_deleted
from analytics_db import create_pool, migrate, open_pool
from analytics_grpc import GrpcServer
from auth_service.servicer import AuthServicer
from auth_service.store import AuthStore

pytestmark = pytest.mark.integration

ADMIN = "test-admin-token-0123456789abcdef"
ADMIN_MD = (("authorization", f"Bearer {ADMIN}"),)


@dataclass
class Told:
    revoked: list[str] = field(default_factory=list)
    deleted: list[tuple[str, datetime]] = field(default_factory=list)
    fail: bool = False

    async def revoke(self, key_id: str) -> None:
        self.revoked.append(key_id)

    async def site_deleted(self, site_id: str, at: datetime) -> None:
        if self.fail:
            raise ConnectionError("no JetStream")
        self.deleted.append((site_id, at))


@pytest.fixture
async def auth(database_url: str) -> AsyncIterator[tuple[auth_pb2_grpc.AuthServiceStub, Told]]:
    await migrate(database_url, "auth", "auth_service.migrations")
    pool = create_pool(database_url, name="auth-deletion-test", max_size=4)
    await open_pool(pool)
    told = Told()
    server = GrpcServer("auth", "127.0.0.1:0", grace_s=1)
    server.add(
        auth_pb2_grpc.add_AuthServiceServicer_to_server,
        AuthServicer(
            AuthStore(pool),
            ADMIN,
            "internal-token-0123456789abcdef",
            announce_revocation=told.revoke,
            announce_site_deleted=told.site_deleted,
        ),
        "analytics.v1.AuthService",
    )
    port = await server.start()
    await server.set_serving()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield auth_pb2_grpc.AuthServiceStub(channel), told
    await server.stop()
    await pool.close()


async def test_a_deleted_site_and_its_keys_are_gone_and_the_owners_told(
    auth: tuple[auth_pb2_grpc.AuthServiceStub, Told],
) -> None:
    stub, told = auth
    made = await stub.CreateSite(auth_pb2.CreateSiteRequest(name="Shop"), metadata=ADMIN_MD)
    second = await stub.CreateApiKey(auth_pb2.CreateApiKeyRequest(site_id=made.site_id), metadata=ADMIN_MD)
    kept = await stub.CreateSite(auth_pb2.CreateSiteRequest(name="Other"), metadata=ADMIN_MD)

    # A key of the site, even with the admin scope, may not delete it.
    admin_key = await stub.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(site_id=made.site_id, scopes=[auth_pb2.SCOPE_ADMIN]), metadata=ADMIN_MD
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.DeleteSite(
            auth_pb2.DeleteSiteRequest(site_id=made.site_id), metadata=(("x-api-key", admin_key.api_key),)
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

    answer = await stub.DeleteSite(auth_pb2.DeleteSiteRequest(site_id=made.site_id), metadata=ADMIN_MD)
    assert (answer.site_id, answer.keys_deleted, answer.already_deleted) == (made.site_id, 3, False)
    assert sorted(told.revoked) == sorted([made.key.key_id, second.key.key_id, admin_key.key.key_id])
    assert [site for site, _ in told.deleted] == [made.site_id]

    for key in (made.api_key, second.api_key):
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await stub.Authenticate(auth_pb2.AuthenticateRequest(api_key=key))
        assert gone.value.code() == grpc.StatusCode.UNAUTHENTICATED
    still = await stub.Authenticate(auth_pb2.AuthenticateRequest(api_key=kept.api_key))
    assert still.key.site_id == kept.site_id
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetSite(auth_pb2.GetSiteRequest(site_id=made.site_id), metadata=ADMIN_MD)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await stub.ListSites(auth_pb2.ListSitesRequest(), metadata=ADMIN_MD)
    assert made.site_id not in {s.site_id for s in listed.sites} and kept.site_id in {
        s.site_id for s in listed.sites
    }

    # Asked again: the same deletion, announced again (a lost announcement is mended this way).
    again = await stub.DeleteSite(auth_pb2.DeleteSiteRequest(site_id=made.site_id), metadata=ADMIN_MD)
    assert (again.keys_deleted, again.already_deleted, again.deleted_at) == (0, True, answer.deleted_at)
    assert [site for site, _ in told.deleted] == [made.site_id, made.site_id]


async def test_refusals_and_a_failed_announcement(auth: tuple[auth_pb2_grpc.AuthServiceStub, Told]) -> None:
    stub, told = auth
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.DeleteSite(auth_pb2.DeleteSiteRequest(site_id=str(uuid.uuid4())), metadata=ADMIN_MD)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.DeleteSite(auth_pb2.DeleteSiteRequest(site_id="nope"), metadata=ADMIN_MD)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and bad.value.details().startswith("site_id")
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await stub.DeleteSite(auth_pb2.DeleteSiteRequest(site_id=str(uuid.uuid4())))
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED

    made = await stub.CreateSite(auth_pb2.CreateSiteRequest(name="Shop"), metadata=ADMIN_MD)
    told.fail = True
    with pytest.raises(grpc.aio.AioRpcError) as unannounced:
        await stub.DeleteSite(auth_pb2.DeleteSiteRequest(site_id=made.site_id), metadata=ADMIN_MD)
    assert unannounced.value.code() == grpc.StatusCode.UNAVAILABLE
    told.fail = False
    again = await stub.DeleteSite(auth_pb2.DeleteSiteRequest(site_id=made.site_id), metadata=ADMIN_MD)
    assert again.already_deleted and told.deleted[-1][0] == made.site_id


async def test_the_announcement_is_a_deduplicated_jetstream_message(nats_url: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    bus = SitesBus(stream=f"TEST_SITES_{suffix}", subject=f"test.{suffix}.sites.deleted")
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_sites_stream(js, bus)
        site = str(uuid.uuid4())
        at = datetime.fromisoformat("2026-12-01T08:00:00+00:00")
        await publish_site_deleted(js, bus, site, at)
        await publish_site_deleted(js, bus, site, at)  # asked twice: JetStream keeps one
        info = await js.stream_info(bus.stream)
        assert info.state.messages == 1
        stored = await js.get_msg(bus.stream, 1)
        message = privacy_pb2.SiteDeleted.FromString(stored.data or b"")
        assert (message.site_id, message.deleted_at) == (site, "2026-12-01T08:00:00Z")
        await js.delete_stream(bus.stream)
    finally:
        await nc.close()
