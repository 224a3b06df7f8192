"""LocalNats and the NATS fixtures against a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from analytics_testing.plugin import NatsFactory

pytestmark = pytest.mark.integration


@asynccontextmanager
async def jetstream(url: str) -> AsyncIterator[tuple[Client, JetStreamContext]]:
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        yield nc, nc.jetstream()
    finally:
        await nc.close()


async def test_session_server_has_jetstream(nats_url: str) -> None:
    async with jetstream(nats_url) as (nc, js):
        await js.add_stream(name="SESSION_CHECK", subjects=["session.check"])
        ack = await js.publish("session.check", b"x", headers={"Nats-Msg-Id": "one"})
        dup = await js.publish("session.check", b"x", headers={"Nats-Msg-Id": "one"})
        assert ack.seq == 1
        assert dup.duplicate
        assert nc.max_payload == 8 * 1024 * 1024
        await js.delete_stream("SESSION_CHECK")


async def test_restart_keeps_jetstream_streams(nats_factory: NatsFactory) -> None:
    server = nats_factory()
    async with jetstream(server.url) as (_, js):
        await js.add_stream(name="EVENTS", subjects=["events.>"])
        for i in range(3):
            await js.publish("events.batch", f"m{i}".encode())
    server.stop()
    server.stop()  # idempotent
    assert not server.running
    server.start()
    async with jetstream(server.url) as (_, js):
        info = await js.stream_info("EVENTS")
        assert info.state.messages == 3
        msg = await js.get_msg("EVENTS", 3)
        assert msg.data == b"m2"


async def test_factory_servers_are_private(nats_factory: NatsFactory, nats_url: str) -> None:
    first, second = nats_factory(), nats_factory(start=False)
    assert first.url != second.url != nats_url
    assert first.running
    assert not second.running
