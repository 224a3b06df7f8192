"""ProcessorService through a real gRPC server and stub: admin-only listing and replay of dead letters."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from analytics.v1 import auth_pb2, auth_pb2_grpc, bus_pb2, processor_pb2, processor_pb2_grpc
from analytics_bus import BusConfig, deadletter
from analytics_bus.deadletter import Reason
from analytics_grpc import GrpcServer
from analytics_grpc.auth_client import AuthClient
from processor_service import deadletters as cli
from processor_service.admin import ProcessorServicer

pytestmark = pytest.mark.integration

ADMIN = "admin-secret"
SITE_KEY = "site-key"


class FakeAuth(auth_pb2_grpc.AuthServiceServicer):
    """The auth service's Authenticate: the admin token, one site key, everything else unknown."""

    async def Authenticate(
        self, request: auth_pb2.AuthenticateRequest, context: Any
    ) -> auth_pb2.AuthenticateResponse:
        if request.api_key == ADMIN:
            return auth_pb2.AuthenticateResponse(
                key=auth_pb2.ApiKey(key_id="admin", scopes=[auth_pb2.SCOPE_ADMIN])
            )
        if request.api_key == SITE_KEY:
            key = auth_pb2.ApiKey(key_id="k1", site_id=str(uuid.uuid4()), scopes=[auth_pb2.SCOPE_ADMIN])
            return auth_pb2.AuthenticateResponse(key=key)
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "api key is invalid or revoked")
        raise AssertionError


@pytest.fixture
async def processor_addr(jetstream: tuple[Client, JetStreamContext], bus: BusConfig) -> AsyncIterator[str]:
    _, js = jetstream
    auth_server = GrpcServer("auth", "127.0.0.1:0")
    auth_server.add(auth_pb2_grpc.add_AuthServiceServicer_to_server, FakeAuth(), "analytics.v1.AuthService")
    auth_port = await auth_server.start()
    auth = AuthClient(f"127.0.0.1:{auth_port}", ttl_s=0)
    servicer = ProcessorServicer(auth, bus)
    servicer.attach(js)
    server = GrpcServer("processor", "127.0.0.1:0")
    server.add(
        processor_pb2_grpc.add_ProcessorServiceServicer_to_server, servicer, "analytics.v1.ProcessorService"
    )
    port = await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop()
    await auth.close()
    await auth_server.stop()


@pytest.fixture
async def stub(processor_addr: str) -> AsyncIterator[processor_pb2_grpc.ProcessorServiceStub]:
    async with grpc.aio.insecure_channel(processor_addr) as channel:
        yield processor_pb2_grpc.ProcessorServiceStub(channel)  # type: ignore[no-untyped-call]


def admin(token: str = ADMIN) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def add_dead_letters(js: JetStreamContext, bus: BusConfig, count: int, make_event: Any) -> list[int]:
    sequences = []
    for i in range(count):
        batch = bus_pb2.EventBatch(events=[make_event(uuid.uuid4()) for _ in range(i + 1)])
        sequences.append(
            await deadletter.publish(
                js,
                bus.deadletter,
                batch.SerializeToString() if i else b"garbage",
                reason=Reason.REJECTED if i else Reason.UNDECODABLE,
                error=f"error {i}",
                original_stream=bus.stream,
                original_sequence=100 + i,
                original_subject=bus.subject,
                deliveries=1,
            )
        )
    return sequences


async def test_listing_pages_through_the_dead_letters(
    stub: Any, jetstream: tuple[Client, JetStreamContext], bus: BusConfig, make_event: Any
) -> None:
    _, js = jetstream
    sequences = await add_dead_letters(js, bus, 5, make_event)
    await js.delete_msg(bus.deadletter.stream, sequences[2])  # replayed earlier: a gap in the sequence
    first = await stub.ListDeadLetters(processor_pb2.ListDeadLettersRequest(page_size=2), metadata=admin())
    assert [e.sequence for e in first.dead_letters] == sequences[:2]
    assert first.next_page_token
    garbage, batch = first.dead_letters
    assert garbage.reason == processor_pb2.DEAD_LETTER_REASON_UNDECODABLE
    assert not garbage.HasField("event_count")
    assert (garbage.size, garbage.first_error, garbage.original_sequence) == (7, "error 0", 100)
    assert batch.reason == processor_pb2.DEAD_LETTER_REASON_REJECTED
    assert (batch.event_count, batch.subject, batch.original_stream) == (2, bus.subject, bus.stream)
    assert batch.time.seconds > 0
    second = await stub.ListDeadLetters(
        processor_pb2.ListDeadLettersRequest(page_size=2, page_token=first.next_page_token), metadata=admin()
    )
    assert [e.sequence for e in second.dead_letters] == sequences[3:]
    assert second.next_page_token == ""


async def test_replay_publishes_again_and_removes(
    stub: Any, jetstream: tuple[Client, JetStreamContext], bus: BusConfig, make_event: Any
) -> None:
    _, js = jetstream
    sequences = await add_dead_letters(js, bus, 4, make_event)
    before = (await js.stream_info(bus.stream)).state.messages
    reply = await stub.ReplayDeadLetters(
        processor_pb2.ReplayDeadLettersRequest(sequences=[sequences[1], 9999]), metadata=admin()
    )
    assert (reply.replayed, list(reply.not_found)) == (1, [9999])
    assert (await js.stream_info(bus.stream)).state.messages == before + 1
    replayed = await js.get_msg(bus.stream, (await js.stream_info(bus.stream)).state.last_seq)
    assert bus_pb2.EventBatch.FromString(replayed.data).events[0].site_id
    reply = await stub.ReplayDeadLetters(processor_pb2.ReplayDeadLettersRequest(all=True), metadata=admin())
    assert reply.replayed == 3
    listing = await stub.ListDeadLetters(processor_pb2.ListDeadLettersRequest(), metadata=admin())
    assert list(listing.dead_letters) == []


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        (admin("wrong"), grpc.StatusCode.UNAUTHENTICATED),
        (admin(SITE_KEY), grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_only_the_admin_may_list_or_replay(stub: Any, metadata: Any, code: grpc.StatusCode) -> None:
    for call in (
        stub.ListDeadLetters(processor_pb2.ListDeadLettersRequest(), metadata=metadata),
        stub.ReplayDeadLetters(processor_pb2.ReplayDeadLettersRequest(all=True), metadata=metadata),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == code


async def test_bad_requests_name_the_field(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListDeadLetters(processor_pb2.ListDeadLettersRequest(page_token="x"), metadata=admin())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in (raised.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ReplayDeadLetters(processor_pb2.ReplayDeadLettersRequest(), metadata=admin())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sequences" in (raised.value.details() or "")


def printed(capsys: pytest.CaptureFixture[str]) -> list[Any]:
    # Standard output also carries this process's server logs; the command prints JSON objects.
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


async def test_command_line_lists_and_replays(
    processor_addr: str,
    jetstream: tuple[Client, JetStreamContext],
    bus: BusConfig,
    make_event: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, js = jetstream
    sequences = await add_dead_letters(js, bus, 3, make_event)
    common = ["--addr", processor_addr, "--token", ADMIN]
    # The command line is synchronous; the servers run on this test's event loop.
    assert await asyncio.to_thread(cli.main, [*common, "list", "--page-size", "2"]) == 0
    lines = printed(capsys)
    assert [int(line["sequence"]) for line in lines] == sequences
    assert lines[0]["reason"] == "DEAD_LETTER_REASON_UNDECODABLE"
    assert await asyncio.to_thread(cli.main, [*common, "replay", str(sequences[0])]) == 0
    assert printed(capsys) == [{"replayed": 1, "not_found": []}]
    assert await asyncio.to_thread(cli.main, [*common, "replay", "--all"]) == 0
    assert printed(capsys) == [{"replayed": 2, "not_found": []}]
    assert await asyncio.to_thread(cli.main, ["--addr", processor_addr, "--token", "wrong", "list"]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
