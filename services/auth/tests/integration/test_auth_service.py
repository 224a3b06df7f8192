"""AuthService through a real gRPC server and a real TimescaleDB: sites, keys, scopes, revocation."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
import pytest
import structlog.testing

from analytics.v1 import auth_pb2, auth_pb2_grpc
from analytics_db import create_pool, migrate, open_pool
from analytics_grpc import GrpcServer
from analytics_testing.grpc_errors import expect_error, violations
from auth_service.servicer import AuthServicer
from auth_service.store import AuthStore

pytestmark = pytest.mark.integration

ADMIN = "test-admin-token-0123456789abcdef"
INTERNAL = "test-internal-token-0123456789abcdef"
ADMIN_MD = (("authorization", f"Bearer {ADMIN}"),)


@pytest.fixture
async def auth(database_url: str) -> AsyncIterator[auth_pb2_grpc.AuthServiceStub]:
    await migrate(database_url, "auth", "auth_service.migrations")
    pool = create_pool(database_url, name="auth-test", max_size=4)
    await open_pool(pool)
    server = GrpcServer("auth", "127.0.0.1:0", grace_s=1)
    server.add(
        auth_pb2_grpc.add_AuthServiceServicer_to_server,
        AuthServicer(AuthStore(pool), ADMIN, INTERNAL),
        "analytics.v1.AuthService",
    )
    port = await server.start()
    await server.set_serving()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield auth_pb2_grpc.AuthServiceStub(channel)
    await server.stop()
    await pool.close()


async def test_create_site_returns_a_working_key_stored_only_as_a_hash(
    auth: auth_pb2_grpc.AuthServiceStub, database_url: str
) -> None:
    created = await auth.CreateSite(auth_pb2.CreateSiteRequest(name="  Shop  "), metadata=ADMIN_MD)
    assert uuid.UUID(created.site_id)
    assert created.site.name == "Shop"
    assert created.api_key.startswith(f"ak_{created.key.key_id}_")
    assert set(created.key.scopes) == {auth_pb2.SCOPE_INGEST, auth_pb2.SCOPE_READ}

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT key_id, secret_hash, row_to_json(k)::text FROM auth.api_keys k"
        ).fetchall()
    assert len(rows) == 1
    key_id, secret_hash, as_text = rows[0]
    assert key_id == created.key.key_id
    assert bytes(secret_hash) == hashlib.sha256(created.api_key.encode()).digest()
    assert created.api_key.split("_", 2)[2] not in as_text

    reply = await auth.Authenticate(
        auth_pb2.AuthenticateRequest(api_key=created.api_key, site_id=created.site_id)
    )
    assert reply.key.site_id == created.site_id
    assert reply.key.key_id == created.key.key_id


async def test_admin_operations_need_the_admin_token(auth: auth_pb2_grpc.AuthServiceStub) -> None:
    request = auth_pb2.CreateSiteRequest(name="x")
    await expect_error(auth.CreateSite(request), grpc.StatusCode.UNAUTHENTICATED)
    await expect_error(
        auth.CreateSite(request, metadata=(("authorization", "Bearer wrong"),)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    site = await auth.CreateSite(request, metadata=ADMIN_MD)
    await expect_error(
        auth.CreateSite(request, metadata=(("x-api-key", site.api_key),)), grpc.StatusCode.PERMISSION_DENIED
    )
    await expect_error(
        auth.RevokeApiKey(
            auth_pb2.RevokeApiKeyRequest(key_id=site.key.key_id), metadata=(("x-api-key", site.api_key),)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )


async def test_site_name_is_validated(auth: auth_pb2_grpc.AuthServiceStub) -> None:
    error = await expect_error(
        auth.CreateSite(auth_pb2.CreateSiteRequest(name="   "), metadata=ADMIN_MD),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations(error) == {"name": "is required"}
    error = await expect_error(
        auth.CreateSite(auth_pb2.CreateSiteRequest(name="n" * 201), metadata=ADMIN_MD),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "name" in violations(error)


async def test_key_of_one_site_is_refused_for_another(auth: auth_pb2_grpc.AuthServiceStub) -> None:
    first = await auth.CreateSite(auth_pb2.CreateSiteRequest(name="a"), metadata=ADMIN_MD)
    second = await auth.CreateSite(auth_pb2.CreateSiteRequest(name="b"), metadata=ADMIN_MD)
    await expect_error(
        auth.Authenticate(auth_pb2.AuthenticateRequest(api_key=first.api_key, site_id=second.site_id)),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await expect_error(
        auth.Authenticate(auth_pb2.AuthenticateRequest(api_key=first.api_key, site_id=str(uuid.uuid4()))),
        grpc.StatusCode.NOT_FOUND,
    )
    error = await expect_error(
        auth.Authenticate(auth_pb2.AuthenticateRequest(api_key=first.api_key, site_id="nope")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert violations(error) == {"site_id": "must be a UUID"}


async def test_unknown_and_revoked_keys_are_unauthenticated(auth: auth_pb2_grpc.AuthServiceStub) -> None:
    site = await auth.CreateSite(auth_pb2.CreateSiteRequest(name="a"), metadata=ADMIN_MD)
    extra = await auth.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(site_id=site.site_id, scopes=[auth_pb2.SCOPE_READ]), metadata=ADMIN_MD
    )
    assert list(extra.key.scopes) == [auth_pb2.SCOPE_READ]
    await expect_error(
        auth.Authenticate(auth_pb2.AuthenticateRequest(api_key="ak_unknown_" + "x" * 40)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    await expect_error(
        auth.Authenticate(auth_pb2.AuthenticateRequest(api_key="")), grpc.StatusCode.UNAUTHENTICATED
    )

    revoked = await auth.RevokeApiKey(
        auth_pb2.RevokeApiKeyRequest(key_id=extra.key.key_id), metadata=ADMIN_MD
    )
    assert revoked.key.HasField("revoke_time")
    await expect_error(
        auth.Authenticate(auth_pb2.AuthenticateRequest(api_key=extra.api_key, site_id=site.site_id)),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    # The site's first key is untouched by revoking the other one.
    await auth.Authenticate(auth_pb2.AuthenticateRequest(api_key=site.api_key, site_id=site.site_id))
    await expect_error(
        auth.RevokeApiKey(auth_pb2.RevokeApiKeyRequest(key_id="missing"), metadata=ADMIN_MD),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_admin_token_authenticates_for_any_existing_site(auth: auth_pb2_grpc.AuthServiceStub) -> None:
    site = await auth.CreateSite(auth_pb2.CreateSiteRequest(name="a"), metadata=ADMIN_MD)
    reply = await auth.Authenticate(auth_pb2.AuthenticateRequest(api_key=ADMIN, site_id=site.site_id))
    assert list(reply.key.scopes) == [auth_pb2.SCOPE_ADMIN]
    assert reply.key.site_id == ""
    await expect_error(
        auth.Authenticate(auth_pb2.AuthenticateRequest(api_key=ADMIN, site_id=str(uuid.uuid4()))),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_create_key_for_unknown_site_is_not_found(auth: auth_pb2_grpc.AuthServiceStub) -> None:
    await expect_error(
        auth.CreateApiKey(auth_pb2.CreateApiKeyRequest(site_id=str(uuid.uuid4())), metadata=ADMIN_MD),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_key_limits_and_origins_are_stored_and_returned(auth: auth_pb2_grpc.AuthServiceStub) -> None:
    site = await auth.CreateSite(auth_pb2.CreateSiteRequest(name="a"), metadata=ADMIN_MD)
    created = await auth.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(
            site_id=site.site_id,
            scopes=[auth_pb2.SCOPE_INGEST],
            rate_limit_per_second=50,
            rate_limit_burst=100,
            allowed_origins=["https://Shop.example/", "http://localhost:3000", "https://shop.example"],
        ),
        metadata=ADMIN_MD,
    )
    assert created.key.allowed_origins == ["http://localhost:3000", "https://shop.example"]
    reply = await auth.Authenticate(
        auth_pb2.AuthenticateRequest(api_key=created.api_key, site_id=site.site_id)
    )
    assert (reply.key.rate_limit_per_second, reply.key.rate_limit_burst) == (50, 100)
    assert list(reply.key.allowed_origins) == ["http://localhost:3000", "https://shop.example"]

    for bad in ("shop.example", "https://shop.example/path", "ftp://shop.example", "https://"):
        error = await expect_error(
            auth.CreateApiKey(
                auth_pb2.CreateApiKeyRequest(
                    site_id=site.site_id, allowed_origins=["https://ok.example", bad]
                ),
                metadata=ADMIN_MD,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert "allowed_origins[1]" in violations(error)
    error = await expect_error(
        auth.CreateApiKey(
            auth_pb2.CreateApiKeyRequest(site_id=site.site_id, rate_limit_per_second=2_000_000),
            metadata=ADMIN_MD,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "rate_limit_per_second" in violations(error)


async def test_visitor_salts_need_the_internal_token_and_rotate(
    auth: auth_pb2_grpc.AuthServiceStub, database_url: str
) -> None:
    request = auth_pb2.GetVisitorSaltsRequest()
    await expect_error(auth.GetVisitorSalts(request), grpc.StatusCode.UNAUTHENTICATED)
    await expect_error(auth.GetVisitorSalts(request, metadata=ADMIN_MD), grpc.StatusCode.PERMISSION_DENIED)
    internal = (("authorization", f"Bearer {INTERNAL}"),)
    first = await auth.GetVisitorSalts(request, metadata=internal)
    today = datetime.now(UTC).date()
    assert [s.day for s in first.salts] == [today.isoformat()]
    assert len(first.salts[0].salt) == 32
    again = await auth.GetVisitorSalts(request, metadata=internal)
    assert again.salts[0].salt == first.salts[0].salt

    with psycopg.connect(database_url) as conn:
        for days in (1, 2, 30):
            conn.execute(
                "INSERT INTO auth.visitor_salts (day, salt) VALUES (%s, %s)",
                (today - timedelta(days=days), bytes(32)),
            )
    reply = await auth.GetVisitorSalts(request, metadata=internal)
    assert [s.day for s in reply.salts] == [today.isoformat(), (today - timedelta(days=1)).isoformat()]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT min(day) FROM auth.visitor_salts").fetchone() == (
            today - timedelta(days=1),
        )


async def test_identity_secret_is_made_with_the_site_and_never_changes(
    auth: auth_pb2_grpc.AuthServiceStub, database_url: str
) -> None:
    internal = (("authorization", f"Bearer {INTERNAL}"),)
    with structlog.testing.capture_logs() as logs:
        site = await auth.CreateSite(auth_pb2.CreateSiteRequest(name="Shop"), metadata=ADMIN_MD)
        request = auth_pb2.GetIdentitySecretRequest(site_id=site.site_id)
        await expect_error(auth.GetIdentitySecret(request), grpc.StatusCode.UNAUTHENTICATED)
        for wrong in (ADMIN_MD, (("authorization", f"Bearer {site.api_key}"),)):
            await expect_error(
                auth.GetIdentitySecret(request, metadata=wrong), grpc.StatusCode.PERMISSION_DENIED
            )
        with psycopg.connect(database_url) as conn:
            made = conn.execute(
                "SELECT secret FROM auth.identity_secrets WHERE site_id = %s", (site.site_id,)
            ).fetchone()
        assert made is not None  # made in the same transaction as the site
        secret = (await auth.GetIdentitySecret(request, metadata=internal)).secret
        assert secret == made[0] and len(secret) == 32
        assert (await auth.GetIdentitySecret(request, metadata=internal)).secret == secret
        other = await auth.CreateSite(auth_pb2.CreateSiteRequest(name="Other"), metadata=ADMIN_MD)
        other_secret = await auth.GetIdentitySecret(
            auth_pb2.GetIdentitySecretRequest(site_id=other.site_id), metadata=internal
        )
        assert other_secret.secret != secret

        # Nothing a site's own key or the admin can read over the public RPCs carries it.
        key_md = (("authorization", f"Bearer {site.api_key}"),)
        public = [
            site,
            await auth.GetSite(auth_pb2.GetSiteRequest(site_id=site.site_id), metadata=key_md),
            await auth.ListSites(auth_pb2.ListSitesRequest(), metadata=ADMIN_MD),
            await auth.ListApiKeys(auth_pb2.ListApiKeysRequest(site_id=site.site_id), metadata=ADMIN_MD),
            await auth.Authenticate(auth_pb2.AuthenticateRequest(api_key=site.api_key, site_id=site.site_id)),
        ]
        assert all(secret not in reply.SerializeToString() for reply in public)

        await expect_error(
            auth.GetIdentitySecret(auth_pb2.GetIdentitySecretRequest(site_id="nope"), metadata=internal),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        await expect_error(
            auth.GetIdentitySecret(
                auth_pb2.GetIdentitySecretRequest(site_id=str(uuid.uuid4())), metadata=internal
            ),
            grpc.StatusCode.NOT_FOUND,
        )
    assert logs, "the calls above log their lines"
    assert not [line for line in logs if secret.hex() in repr(line) or repr(secret) in repr(line)]


async def test_identity_secret_of_an_older_site_is_made_once_on_first_use(
    auth: auth_pb2_grpc.AuthServiceStub, database_url: str
) -> None:
    internal = (("authorization", f"Bearer {INTERNAL}"),)
    site = await auth.CreateSite(auth_pb2.CreateSiteRequest(name="Old"), metadata=ADMIN_MD)
    with psycopg.connect(database_url) as conn:  # as for a site made before the secrets existed
        conn.execute("DELETE FROM auth.identity_secrets WHERE site_id = %s", (site.site_id,))
    request = auth_pb2.GetIdentitySecretRequest(site_id=site.site_id)
    replies = await asyncio.gather(*(auth.GetIdentitySecret(request, metadata=internal) for _ in range(8)))
    secrets_seen = {reply.secret for reply in replies}
    assert len(secrets_seen) == 1
    (secret,) = secrets_seen
    assert len(secret) == 32 and secret != bytes(32)
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "SELECT secret FROM auth.identity_secrets WHERE site_id = %s", (site.site_id,)
        ).fetchall()
    assert stored == [(secret,)]
