"""What the pipeline has stored and what is still in flight: row counts and the consumer's backlog."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import nats
import psycopg

from analytics_bus import BusConfig


@dataclass(frozen=True)
class Backlog:
    pending: int
    ack_pending: int
    redelivered: int

    @property
    def empty(self) -> bool:
        return self.pending == 0 and self.ack_pending == 0


class Pipeline:
    """A database connection for counting and a NATS connection for the consumer's backlog."""

    def __init__(self, database_url: str, nats_url: str) -> None:
        self._database_url = database_url
        self._nats_url = nats_url
        self._db: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._nc: nats.NATS | None = None

    async def __aenter__(self) -> Pipeline:
        self._db = await psycopg.AsyncConnection.connect(
            self._database_url, autocommit=True, connect_timeout=10
        )
        self._nc = await nats.connect(self._nats_url, connect_timeout=5, max_reconnect_attempts=3)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._db is not None:
            await self._db.close()
        if self._nc is not None:
            await self._nc.close()

    async def stored(self, site_id: str) -> int:
        assert self._db is not None
        cursor = await asyncio.wait_for(
            self._db.execute("SELECT count(*) FROM analytics.events WHERE site_id = %s", (site_id,)), 60
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def vacuum(self) -> None:
        """VACUUM ANALYZE of the tables the processor writes, in the foreground: after a phase that
        wrote millions of rows and updated as many sessions, autovacuum would otherwise run during
        the next phase and be measured as that phase's load."""
        assert self._db is not None
        await asyncio.wait_for(self._db.execute("VACUUM (ANALYZE) analytics.events, analytics.sessions"), 600)

    async def backlog(self) -> Backlog:
        assert self._nc is not None
        bus = BusConfig()
        info = await self._nc.jetstream(timeout=5).consumer_info(bus.stream, bus.consumer)
        return Backlog(
            int(info.num_pending or 0), int(info.num_ack_pending or 0), int(info.num_redelivered or 0)
        )

    async def wait_stored(
        self,
        site_id: str,
        expected: int,
        timeout_s: float,
        *,
        check: Callable[[], None],
        stall_s: float = 60.0,
    ) -> tuple[int, float | None]:
        """Polls until the site has at least ``expected`` rows; (rows, monotonic time reached or None).

        Gives up at ``timeout_s``, or after ``stall_s`` without a single new row; ``check`` raises
        when a component of the stack has died, so a crash ends the wait at once.
        """
        started = time.monotonic()
        stored = await self.stored(site_id)
        last_change, last_stored = started, stored
        while stored < expected:
            now = time.monotonic()
            if now - started > timeout_s or now - last_change > stall_s:
                return stored, None
            check()
            await asyncio.sleep(0.2)
            stored = await self.stored(site_id)
            if stored != last_stored:
                last_change, last_stored = time.monotonic(), stored
        return stored, time.monotonic()

    async def wait_drained(self, timeout_s: float, *, check: Callable[[], None]) -> Backlog:
        """Until the consumer has nothing pending or unacknowledged (then every write has committed)."""
        deadline = time.monotonic() + timeout_s
        backlog = await self.backlog()
        while not backlog.empty and time.monotonic() < deadline:
            check()
            await asyncio.sleep(0.25)
            backlog = await self.backlog()
        return backlog
