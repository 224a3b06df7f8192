"""Whether NATS answers right now: a round trip probed on a schedule, and what publishing saw.

A client that is "connected" may still be talking to a server that does not answer: a paused or
overloaded nats-server keeps its TCP connections open, so nats-py notices nothing until its own
pings time out (minutes by default). Callers that must answer within a bound (ingest's publish
timeout) need to know sooner, and to stop queueing work behind a server that does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext

log = structlog.get_logger("analytics.bus")


async def round_trip(js: JetStreamContext) -> None:
    """Returns once the server has read everything this connection sent before the call (NATS
    reads one connection's messages in order, and JetStream answers this request after them);
    raises after the context's timeout.

    Not nats-py's flush(): a flush that times out leaves its future in the client's queue of
    pongs, and the late PONG then fails the client's read loop (a result set on a cancelled future,
    nats-py 2.x), after which the connection delivers nothing until it is dropped and re-established.
    """
    await js.account_info()


class BusHealth:
    """Up while the last probe (a round trip to JetStream, which is what publishing needs) or
    publish succeeded; down after a failure.

    ``on_change`` is awaited with the new state whenever it flips. Call ``start`` once the
    connection is open and ``close`` before draining it.
    """

    def __init__(
        self,
        nc: Client,
        *,
        interval_s: float,
        timeout_s: float,
        on_change: Callable[[bool], Awaitable[None]] | None = None,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=timeout_s)
        self._interval_s = interval_s
        self._on_change = on_change
        self._up = True
        self._task: asyncio.Task[None] | None = None
        self._notify: asyncio.Task[None] | None = None
        self.probes_failed = 0

    @property
    def up(self) -> bool:
        return self._up and self._nc.is_connected

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bus-health")

    async def close(self) -> None:
        for task in (self._task, self._notify):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def failed(self, reason: str) -> None:
        """A publish got no acknowledgement: the bus is down until a probe answers."""
        self._set(False, reason)

    def succeeded(self) -> None:
        """A publish was acknowledged: the bus answers."""
        self._set(True, "acknowledged")

    async def probe(self) -> bool:
        try:
            await round_trip(self._js)
        except Exception as error:  # timeout, no connection, closed: all mean "does not answer"
            self.probes_failed += 1
            self._set(False, str(error) or type(error).__name__)
            return False
        self._set(True, "answered")
        return True

    async def _run(self) -> None:
        while True:
            await self.probe()
            await asyncio.sleep(self._interval_s)

    def _set(self, up: bool, reason: str) -> None:
        if up == self._up:
            return
        self._up = up
        if up:
            log.info("nats answers again", reason=reason)
        else:
            log.warning("nats does not answer", reason=reason)
        if self._on_change is not None:
            # Run outside the caller (a publish callback): health updates are awaited in order.
            previous = self._notify
            on_change = self._on_change

            async def notify() -> None:
                if previous is not None:
                    with contextlib.suppress(Exception):
                        await previous
                await on_change(up)

            self._notify = asyncio.create_task(notify(), name="bus-health-notify")
