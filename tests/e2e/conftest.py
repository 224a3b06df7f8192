"""The whole stack as real processes: auth, processor, ingest, query and the HTTP edge."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from analytics_testing.stack import ServiceStack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def stack(
    postgres_server: object, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceStack]:
    database_url = postgres_server.create_database("e2e_stack")  # type: ignore[attr-defined]
    services = ServiceStack(
        database_url=database_url,
        nats_url=nats_url,
        log_dir=tmp_path_factory.mktemp("stack-logs"),
        admin_token=secrets.token_urlsafe(32),
        # Revocation must show at once in these tests; production callers cache answers briefly.
        extra_env={"ANALYTICS_AUTH_CACHE_TTL_S": "0"},
    )
    services.start(timeout_s=90)
    yield services
    services.stop()


@pytest.fixture
async def http(stack: ServiceStack) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=stack.http_url) as session:
        yield session
