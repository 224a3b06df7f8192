"""The identity secret cache against an auth server on port 0 whose answers each test scripts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from analytics.v1 import auth_pb2, auth_pb2_grpc
from analytics_grpc.errors import ServiceError
from ingest_service.identity import IdentitySecretCache

TOKEN = "unit-internal-token"


class ScriptedAuth(auth_pb2_grpc.AuthServiceServicer):
    """Answers GetIdentitySecret from ``answers`` (site id -> list of secrets or status codes, used in
    order, the last one repeated); records every call; ``gate`` holds the answers while it is clear."""

    def __init__(self) -> None:
        self.answers: dict[str, list[bytes | grpc.StatusCode]] = {}
        self.calls: list[str] = []
        self.tokens: list[str] = []
        self.called = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()

    async def GetIdentitySecret(
        self, request: auth_pb2.GetIdentitySecretRequest, context: Any
    ) -> auth_pb2.GetIdentitySecretResponse:
        self.calls.append(request.site_id)
        self.tokens.append(dict(context.invocation_metadata()).get("authorization", ""))
        self.called.set()
        await self.gate.wait()
        script = self.answers[request.site_id]
        answer = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(answer, grpc.StatusCode):
            await context.abort(answer, "scripted")
        return auth_pb2.GetIdentitySecretResponse(secret=answer)


@pytest.fixture
async def auth() -> AsyncIterator[tuple[ScriptedAuth, grpc.aio.Channel]]:
    servicer = ScriptedAuth()
    server = grpc.aio.server()
    auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield servicer, channel
    await server.stop(None)


def site(servicer: ScriptedAuth, *answers: bytes | grpc.StatusCode) -> bytes:
    site_id = uuid.uuid4()
    servicer.answers[str(site_id)] = list(answers)
    return site_id.bytes


async def test_a_secret_is_fetched_once_with_the_internal_token(auth: Any) -> None:
    servicer, channel = auth
    cache = IdentitySecretCache(channel, TOKEN)
    one, two = site(servicer, b"1" * 32), site(servicer, b"2" * 32)
    assert await cache.secrets_for({one, two}) == {one: b"1" * 32, two: b"2" * 32}
    for _ in range(3):
        assert await cache.secrets_for({one}) == {one: b"1" * 32}
    assert sorted(servicer.calls) == sorted(str(uuid.UUID(bytes=s)) for s in (one, two))
    assert set(servicer.tokens) == {f"Bearer {TOKEN}"}


async def test_the_sites_least_recently_seen_are_dropped_beyond_the_bound(auth: Any) -> None:
    servicer, channel = auth
    cache = IdentitySecretCache(channel, TOKEN, max_sites=2)
    a, b, c = (site(servicer, bytes([n]) * 32) for n in range(3))
    await cache.secrets_for({a})
    await cache.secrets_for({b})
    await cache.secrets_for({a})  # a is now more recent than b
    await cache.secrets_for({c})  # drops b
    servicer.calls.clear()
    await cache.secrets_for({a})
    await cache.secrets_for({c})
    assert servicer.calls == []
    assert await cache.secrets_for({b}) == {b: bytes([1]) * 32}
    assert servicer.calls == [str(uuid.UUID(bytes=b))]


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE),
        (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.NOT_FOUND),
        (b"", grpc.StatusCode.UNAVAILABLE),  # never an unkeyed hash of the user ids
        (b"short", grpc.StatusCode.UNAVAILABLE),
    ],
)
async def test_a_failed_fetch_is_an_error_and_is_tried_again(
    auth: Any, failure: bytes | grpc.StatusCode, code: grpc.StatusCode
) -> None:
    servicer, channel = auth
    cache = IdentitySecretCache(channel, TOKEN)
    flaky = site(servicer, failure, b"k" * 32)
    with pytest.raises(ServiceError) as caught:
        await cache.secrets_for({flaky})
    assert caught.value.code == code
    assert await cache.secrets_for({flaky}) == {flaky: b"k" * 32}
    assert len(servicer.calls) == 2


async def test_waiters_share_one_fetch_and_one_giving_up_does_not_cancel_it(auth: Any) -> None:
    servicer, channel = auth
    cache = IdentitySecretCache(channel, TOKEN)
    new = site(servicer, b"n" * 32)
    servicer.gate.clear()
    waiters = [asyncio.create_task(cache.secrets_for({new})) for _ in range(3)]
    await asyncio.wait_for(servicer.called.wait(), timeout=10)
    waiters[0].cancel()  # e.g. its caller's deadline passed
    servicer.gate.set()
    assert await asyncio.gather(*waiters[1:]) == [{new: b"n" * 32}] * 2
    assert waiters[0].cancelled()
    assert len(servicer.calls) == 1
