"""An async psycopg pool that waits for the database instead of failing at start-up."""

from __future__ import annotations

import structlog
from psycopg_pool import AsyncConnectionPool

log = structlog.get_logger("analytics.db")


def create_pool(url: str, *, name: str, min_size: int = 1, max_size: int = 10) -> AsyncConnectionPool:
    """A pool that is not open yet: servicers can hold it before the database is reachable."""
    return AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        name=name,
        open=False,
        kwargs={"application_name": name},
        reconnect_timeout=float("inf"),
    )


async def open_pool(pool: AsyncConnectionPool, *, timeout_s: float = 60.0) -> None:
    """Opens the pool and waits until its first connections work (retrying for ``timeout_s``)."""
    await pool.open(wait=True, timeout=timeout_s)
    log.info("database pool open", pool=pool.name, max_size=pool.max_size)
