"""Consistent, bounded reads: one read-only snapshot per request, limited by the caller's deadline.

A statement that runs past the deadline is cancelled by PostgreSQL (statement_timeout) and answered
DEADLINE_EXCEEDED; waiting for a pooled connection is bounded by the same deadline. A lost
database is UNAVAILABLE, and turns the service's health NOT_SERVING until a probe reaches it again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import psycopg
import structlog
from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from analytics_grpc.errors import ServiceError

log = structlog.get_logger("analytics.query")

# Kept back from the caller's deadline so the answer (or the error) still reaches it in time.
_MARGIN_S = 0.05
_MIN_TIMEOUT_MS = 1
# Per transaction: the deadline; no JIT compilation (it cost 100-400 ms of a report's first run over
# a few hundred thousand rows, more than it saved); room for the hashes of a month's visitors in
# memory (at the default 4 MB they spilled to disk in thousands of batches); and a plan for the
# actual range every time: psycopg prepares a statement run five times, and PostgreSQL's generic
# plan for it, blind to the dates, doubled the time of a 30-day total.
_SETTINGS = (
    "SELECT set_config('statement_timeout', %s, true), set_config('jit', 'off', true),"
    " set_config('work_mem', '64MB', true), set_config('plan_cache_mode', 'force_custom_plan', true)"
)


class DatabaseHealth:
    """Tracks whether the database answers; the callbacks switch the service's health."""

    def __init__(
        self,
        conninfo: str,
        on_lost: Callable[[], Awaitable[None]],
        on_back: Callable[[], Awaitable[None]],
        *,
        probe_interval_s: float = 1.0,
    ) -> None:
        self._conninfo = conninfo
        self._on_lost = on_lost
        self._on_back = on_back
        self._probe_interval_s = probe_interval_s
        self._lost = False
        self._changed = asyncio.Event()

    @property
    def lost(self) -> bool:
        return self._lost

    async def mark_lost(self) -> None:
        if not self._lost:
            self._lost = True
            log.warning("database lost: not serving until it answers again")
            await self._on_lost()
        self._changed.set()

    async def probe(self) -> bool:
        """One check that the database answers; marks it lost or back accordingly. It opens a
        connection of its own: a pool busy with long queries must not look like a lost database."""
        timeout_s = max(1, round(self._probe_interval_s * 2))
        try:
            conn = await psycopg.AsyncConnection.connect(self._conninfo, connect_timeout=timeout_s)
            async with conn:
                await conn.execute("SELECT 1")
        except psycopg.Error:
            await self.mark_lost()
            return False
        if self._lost:
            self._lost = False
            log.info("database is back: serving")
            await self._on_back()
        return True

    async def watch(self) -> None:
        """Runs for the service's life: once the database is lost, probes it at the interval until
        it answers again (requests find a lost database; nothing is probed while all is well)."""
        while True:
            await self._changed.wait()
            if await self.probe():
                self._changed.clear()
            else:
                await asyncio.sleep(self._probe_interval_s)


class Snapshots:
    """Hands out read-only REPEATABLE READ transactions (and read-write ones for the service's own
    definitions) bounded by the caller's deadline."""

    def __init__(self, pool: AsyncConnectionPool, health: DatabaseHealth, statement_timeout_ms: int) -> None:
        self._pool = pool
        self._health = health
        self._statement_timeout_ms = statement_timeout_ms

    def timeout_s(self, time_remaining: float | None) -> float:
        """The time this request may take, from the configured limit and the caller's deadline."""
        limit = self._statement_timeout_ms / 1000
        if time_remaining is None:
            return limit
        return max(_MIN_TIMEOUT_MS / 1000, min(limit, time_remaining - _MARGIN_S))

    def snapshot(
        self, time_remaining: float | None
    ) -> contextlib.AbstractAsyncContextManager[AsyncConnection[Any]]:
        return self._transaction(time_remaining, "REPEATABLE READ, READ ONLY")

    def write(
        self, time_remaining: float | None
    ) -> contextlib.AbstractAsyncContextManager[AsyncConnection[Any]]:
        """A read-write transaction with the same bounds, for the service's own definitions."""
        return self._transaction(time_remaining, "READ COMMITTED, READ WRITE")

    @contextlib.asynccontextmanager
    async def _transaction(
        self, time_remaining: float | None, mode: str
    ) -> AsyncIterator[AsyncConnection[Any]]:
        timeout_s = self.timeout_s(time_remaining)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            async with self._pool.connection(timeout=timeout_s) as conn, conn.transaction():
                left_ms = max(_MIN_TIMEOUT_MS, int((deadline - loop.time()) * 1000))
                await conn.execute(sql.SQL("SET TRANSACTION ISOLATION LEVEL {}").format(sql.SQL(mode)))
                await conn.execute(_SETTINGS, (str(left_ms),))
                yield conn
        except PoolTimeout:
            if self._health.lost or not await self._health.probe():
                raise ServiceError(grpc.StatusCode.UNAVAILABLE, "database unavailable, retry later") from None
            raise ServiceError(
                grpc.StatusCode.DEADLINE_EXCEEDED, "no database connection was free before the deadline"
            ) from None
        except psycopg.errors.QueryCanceled:
            raise ServiceError(
                grpc.StatusCode.DEADLINE_EXCEEDED, "the query did not finish before the deadline"
            ) from None
        except psycopg.OperationalError:
            await self._health.mark_lost()
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "database unavailable, retry later") from None
