"""Sites' domain and time zone, listing, reading and updating sites, listing keys, and the
site-aware Authenticate with the AuthClient cache, through a real server and a real TimescaleDB."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import json_format

from analytics.v1 import auth_pb2, auth_pb2_grpc
from analytics_db import create_pool, migrate, open_pool
from analytics_grpc import GrpcServer
from analytics_grpc.auth_client import AuthClient
from analytics_grpc.errors import ServiceError
from analytics_testing.grpc_errors import expect_error, violations
from auth_service.servicer import AuthServicer
from auth_service.store import AuthStore

pytestmark = pytest.mark.integration

ADMIN = "test-admin-token-0123456789abcdef"
ADMIN_MD = (("authorization", f"Bearer {ADMIN}"),)


@dataclass
class Auth:
    stub: auth_pb2_grpc.AuthServiceStub
    address: str


@pytest.fixture
async def auth(database_url: str) -> AsyncIterator[Auth]:
    await migrate(database_url, "auth", "auth_service.migrations")
    pool = create_pool(database_url, name="auth-sites-test", max_size=4)
    await open_pool(pool)
    server = GrpcServer("auth", "127.0.0.1:0", grace_s=1)
    server.add(
        auth_pb2_grpc.add_AuthServiceServicer_to_server,
        AuthServicer(AuthStore(pool), ADMIN, "internal-token-0123456789abcdef"),
        "analytics.v1.AuthService",
    )
    port = await server.start()
    await server.set_serving()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Auth(auth_pb2_grpc.AuthServiceStub(channel), f"127.0.0.1:{port}")
    await server.stop()
    await pool.close()


def key_md(api_key: str) -> tuple[tuple[str, str], ...]:
    return (("x-api-key", api_key),)


async def create(auth: Auth, name: str = "Shop", **fields: str) -> auth_pb2.CreateSiteResponse:
    reply: auth_pb2.CreateSiteResponse = await auth.stub.CreateSite(
        auth_pb2.CreateSiteRequest(name=name, **fields), metadata=ADMIN_MD
    )
    return reply


async def test_create_site_normalises_the_domain_and_defaults_the_time_zone(auth: Auth) -> None:
    plain = await create(auth)
    assert (plain.site.domain, plain.site.timezone) == ("", "UTC")
    made = await create(auth, domain="  Shop.Example.COM. ", timezone="Asia/Kathmandu")
    assert (made.site.domain, made.site.timezone) == ("shop.example.com", "Asia/Kathmandu")
    got = await auth.stub.GetSite(auth_pb2.GetSiteRequest(site_id=made.site_id), metadata=ADMIN_MD)
    assert got.site == made.site


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "europe/berlin"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"domain": "https://example.com/"}, "domain"),
        ({"domain": "exa mple.com"}, "domain"),
        ({"domain": "-bad.example"}, "domain"),
        ({"domain": "a" * 64 + ".example"}, "domain"),
    ],
)
async def test_create_site_refuses_bad_domains_and_time_zones(
    auth: Auth, fields: dict[str, str], field: str
) -> None:
    error = await expect_error(
        auth.stub.CreateSite(auth_pb2.CreateSiteRequest(name="x", **fields), metadata=ADMIN_MD),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert list(violations(error)) == [field]
    assert repr(next(iter(fields.values()))[:100]) in error.details()
    listed = await auth.stub.ListSites(auth_pb2.ListSitesRequest(), metadata=ADMIN_MD)
    assert list(listed.sites) == []


async def test_a_domain_belongs_to_one_site(auth: Auth) -> None:
    first = await create(auth, domain="one.example")
    error = await expect_error(
        auth.stub.CreateSite(auth_pb2.CreateSiteRequest(name="b", domain="ONE.example"), metadata=ADMIN_MD),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert "one.example" in error.details()
    second = await create(auth, "b", domain="two.example")
    await expect_error(
        auth.stub.UpdateSite(
            auth_pb2.UpdateSiteRequest(site_id=second.site_id, domain="one.example"), metadata=ADMIN_MD
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    # Once the first site lets the domain go, the second may take it.
    await auth.stub.UpdateSite(
        auth_pb2.UpdateSiteRequest(site_id=first.site_id, domain=""), metadata=ADMIN_MD
    )
    moved = await auth.stub.UpdateSite(
        auth_pb2.UpdateSiteRequest(site_id=second.site_id, domain="one.example"), metadata=ADMIN_MD
    )
    assert moved.site.domain == "one.example"


async def test_list_sites_shows_the_admin_every_site_and_a_key_its_own(auth: Auth) -> None:
    made = [await create(auth, f"site {i}") for i in range(3)]
    listed = await auth.stub.ListSites(auth_pb2.ListSitesRequest(), metadata=ADMIN_MD)
    assert [s.site_id for s in listed.sites] == [m.site_id for m in made]
    own = await auth.stub.ListSites(auth_pb2.ListSitesRequest(), metadata=key_md(made[1].api_key))
    assert [s.site_id for s in own.sites] == [made[1].site_id]
    await expect_error(auth.stub.ListSites(auth_pb2.ListSitesRequest()), grpc.StatusCode.UNAUTHENTICATED)
    await expect_error(
        auth.stub.ListSites(auth_pb2.ListSitesRequest(), metadata=key_md("ak_nope_" + "x" * 40)),
        grpc.StatusCode.UNAUTHENTICATED,
    )


async def test_get_site_is_for_the_admin_and_keys_of_that_site(auth: Auth) -> None:
    one, two = await create(auth, "one"), await create(auth, "two")
    got = await auth.stub.GetSite(auth_pb2.GetSiteRequest(site_id=one.site_id), metadata=key_md(one.api_key))
    assert got.site.name == "one"
    await expect_error(
        auth.stub.GetSite(auth_pb2.GetSiteRequest(site_id=two.site_id), metadata=key_md(one.api_key)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await expect_error(
        auth.stub.GetSite(auth_pb2.GetSiteRequest(site_id=str(uuid.uuid4())), metadata=ADMIN_MD),
        grpc.StatusCode.NOT_FOUND,
    )
    error = await expect_error(
        auth.stub.GetSite(auth_pb2.GetSiteRequest(site_id="nope"), metadata=ADMIN_MD),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations(error) == {"site_id": "must be a UUID"}
    revoked = await auth.stub.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(site_id=one.site_id), metadata=ADMIN_MD
    )
    await auth.stub.RevokeApiKey(auth_pb2.RevokeApiKeyRequest(key_id=revoked.key.key_id), metadata=ADMIN_MD)
    await expect_error(
        auth.stub.GetSite(auth_pb2.GetSiteRequest(site_id=one.site_id), metadata=key_md(revoked.api_key)),
        grpc.StatusCode.UNAUTHENTICATED,
    )


async def test_update_site_changes_only_the_fields_sent(auth: Auth) -> None:
    made = await create(auth, "Shop", domain="shop.example", timezone="Europe/Berlin")
    renamed = await auth.stub.UpdateSite(
        auth_pb2.UpdateSiteRequest(site_id=made.site_id, name=" Store "), metadata=ADMIN_MD
    )
    assert (renamed.site.name, renamed.site.domain, renamed.site.timezone) == (
        "Store",
        "shop.example",
        "Europe/Berlin",
    )
    moved = await auth.stub.UpdateSite(
        auth_pb2.UpdateSiteRequest(site_id=made.site_id, timezone="America/New_York", domain="New.Example"),
        metadata=ADMIN_MD,
    )
    assert (moved.site.name, moved.site.domain, moved.site.timezone) == (
        "Store",
        "new.example",
        "America/New_York",
    )
    untouched = await auth.stub.UpdateSite(
        auth_pb2.UpdateSiteRequest(site_id=made.site_id), metadata=ADMIN_MD
    )
    assert untouched.site == moved.site
    for request, field in [
        (auth_pb2.UpdateSiteRequest(site_id=made.site_id, timezone="Nowhere/Land"), "timezone"),
        (auth_pb2.UpdateSiteRequest(site_id=made.site_id, name="  "), "name"),
        (auth_pb2.UpdateSiteRequest(site_id=made.site_id, domain="a/b"), "domain"),
    ]:
        error = await expect_error(
            auth.stub.UpdateSite(request, metadata=ADMIN_MD), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert list(violations(error)) == [field]
    got = await auth.stub.GetSite(auth_pb2.GetSiteRequest(site_id=made.site_id), metadata=ADMIN_MD)
    assert got.site == moved.site
    await expect_error(
        auth.stub.UpdateSite(
            auth_pb2.UpdateSiteRequest(site_id=str(uuid.uuid4()), name="x"), metadata=ADMIN_MD
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_site_keys_need_the_admin_scope_to_manage_the_site(auth: Auth) -> None:
    made = await create(auth)
    other = await create(auth, "other")
    request = auth_pb2.UpdateSiteRequest(site_id=made.site_id, timezone="Asia/Kolkata")
    # The first key may ingest and read, not manage.
    await expect_error(
        auth.stub.UpdateSite(request, metadata=key_md(made.api_key)), grpc.StatusCode.PERMISSION_DENIED
    )
    await expect_error(
        auth.stub.ListApiKeys(
            auth_pb2.ListApiKeysRequest(site_id=made.site_id), metadata=key_md(made.api_key)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    manager = await auth.stub.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(site_id=made.site_id, scopes=[auth_pb2.SCOPE_ADMIN]), metadata=ADMIN_MD
    )
    updated = await auth.stub.UpdateSite(request, metadata=key_md(manager.api_key))
    assert updated.site.timezone == "Asia/Kolkata"
    # A site's admin key manages that site only.
    await expect_error(
        auth.stub.UpdateSite(
            auth_pb2.UpdateSiteRequest(site_id=other.site_id, name="mine"), metadata=key_md(manager.api_key)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    # ... and it cannot create sites: that stays with the admin token.
    await expect_error(
        auth.stub.CreateSite(auth_pb2.CreateSiteRequest(name="x"), metadata=key_md(manager.api_key)),
        grpc.StatusCode.PERMISSION_DENIED,
    )


async def test_list_api_keys_describes_keys_and_never_their_secrets(auth: Auth) -> None:
    made = await create(auth)
    extra = await auth.stub.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(
            site_id=made.site_id, scopes=[auth_pb2.SCOPE_READ], allowed_origins=["https://shop.example"]
        ),
        metadata=ADMIN_MD,
    )
    await auth.stub.RevokeApiKey(auth_pb2.RevokeApiKeyRequest(key_id=extra.key.key_id), metadata=ADMIN_MD)
    other = await create(auth, "other")
    listed = await auth.stub.ListApiKeys(auth_pb2.ListApiKeysRequest(site_id=made.site_id), metadata=ADMIN_MD)
    assert [k.key_id for k in listed.keys] == [made.key.key_id, extra.key.key_id]
    assert listed.keys[0] == made.key
    assert listed.keys[1].HasField("revoke_time")
    assert list(listed.keys[1].allowed_origins) == ["https://shop.example"]
    text = json_format.MessageToJson(listed) + listed.SerializeToString().hex()
    for secret in (made.api_key, extra.api_key):
        tail = secret.split("_", 2)[2]
        assert tail not in text and tail.encode().hex() not in text
    assert other.key.key_id not in text


async def test_authenticate_names_the_site_by_id_or_domain(auth: Auth) -> None:
    made = await create(auth, domain="shop.example", timezone="Asia/Kolkata")
    other = await create(auth, "other", domain="other.example")
    by_domain = await auth.stub.Authenticate(
        auth_pb2.AuthenticateRequest(api_key=made.api_key, site_domain="Shop.Example")
    )
    assert by_domain.site == made.site
    assert by_domain.key.key_id == made.key.key_id
    by_id = await auth.stub.Authenticate(auth_pb2.AuthenticateRequest(api_key=ADMIN, site_id=made.site_id))
    assert by_id.site == made.site
    bare = await auth.stub.Authenticate(auth_pb2.AuthenticateRequest(api_key=made.api_key))
    assert not bare.HasField("site")
    await expect_error(
        auth.stub.Authenticate(
            auth_pb2.AuthenticateRequest(api_key=made.api_key, site_domain="other.example")
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await expect_error(
        auth.stub.Authenticate(
            auth_pb2.AuthenticateRequest(api_key=made.api_key, site_domain="none.example")
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    error = await expect_error(
        auth.stub.Authenticate(
            auth_pb2.AuthenticateRequest(api_key=ADMIN, site_id=other.site_id, site_domain="other.example")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert list(violations(error)) == ["site_domain"]


async def test_auth_client_caches_the_site_like_the_key(auth: Auth) -> None:
    made = await create(auth, domain="shop.example", timezone="Asia/Kolkata")
    cached = AuthClient(auth.address, ttl_s=60)
    fresh = AuthClient(auth.address, ttl_s=0)
    try:
        first = await cached.site_access(made.api_key, domain="shop.example")
        assert (first.site.site_id, first.site.timezone) == (made.site_id, "Asia/Kolkata")
        assert first.principal.site_id == made.site_id
        by_id = await cached.site_access(made.api_key, site_id=made.site_id)
        assert by_id.site == first.site
        await auth.stub.UpdateSite(
            auth_pb2.UpdateSiteRequest(site_id=made.site_id, timezone="America/New_York"), metadata=ADMIN_MD
        )
        # Within the TTL the cached answer stands; an uncached client sees the change at once.
        assert (await cached.site_access(made.api_key, domain="shop.example")).site.timezone == "Asia/Kolkata"
        assert (
            await fresh.site_access(made.api_key, domain="shop.example")
        ).site.timezone == "America/New_York"
        with pytest.raises(ServiceError) as caught:
            await fresh.site_access(made.api_key, domain="gone.example")
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        # Concurrent look-ups of one key and site share one call.
        answers = await asyncio.gather(*(fresh.site_access(ADMIN, site_id=made.site_id) for _ in range(5)))
        assert {a.site.timezone for a in answers} == {"America/New_York"}
    finally:
        await cached.close()
        await fresh.close()


async def test_a_revoked_key_is_refused_at_once_cached_or_in_flight(auth: Auth) -> None:
    made = await create(auth)
    client = AuthClient(auth.address, ttl_s=60)
    try:
        principal = await client.authenticate(made.api_key, made.site_id)
        assert principal.key_id == made.key.key_id
        # What the revocation announcement does: the cached answer is dropped and the key refused,
        # for this look-up and for one that was already on its way when it came.
        in_flight = asyncio.ensure_future(client.site_access(made.api_key, site_id=made.site_id))
        client.revoke(made.key.key_id)
        for call in (client.authenticate(made.api_key, made.site_id), in_flight):
            with pytest.raises(ServiceError) as refused:
                await call
            assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
        # Another key of the same site is untouched.
        other = await auth.stub.CreateApiKey(
            auth_pb2.CreateApiKeyRequest(site_id=made.site_id), metadata=ADMIN_MD
        )
        assert (await client.authenticate(other.api_key, made.site_id)).key_id == other.key.key_id
    finally:
        await client.close()
