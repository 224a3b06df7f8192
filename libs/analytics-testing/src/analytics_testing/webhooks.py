"""A webhook endpoint for tests: an HTTP server on 127.0.0.1 that records each JSON body POSTed to
it by path, and answers with the status a test chooses (to exercise retries)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


def _accept(path: str, count: int) -> int:
    return 204


@dataclass
class WebhookReceiver:
    # http://127.0.0.1:<port>; POST to any one-segment path under it.
    url: str
    received: dict[str, list[Any]] = field(default_factory=dict)
    # (path, how many bodies it has had, this one included) → the status answered.
    status: Callable[[str, int], int] = _accept
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_for(self, path: str, count: int = 1, timeout_s: float = 20.0) -> list[Any]:
        """The bodies POSTed to ``path`` once there are at least ``count`` of them."""
        async with asyncio.timeout(timeout_s), self.arrived:
            await self.arrived.wait_for(lambda: len(self.received.get(path, [])) >= count)
        return self.received[path]


@contextlib.asynccontextmanager
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver(url="")

    async def hook(request: web.Request) -> web.Response:
        bodies = receiver.received.setdefault(request.path, [])
        bodies.append(await request.json())
        async with receiver.arrived:
            receiver.arrived.notify_all()
        return web.Response(status=receiver.status(request.path, len(bodies)))

    app = web.Application()
    app.router.add_post("/{name}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.base_events.Server)
    receiver.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield receiver
    finally:
        await runner.cleanup()
