"""A progress line every few seconds per phase: elapsed, sent, acknowledged, stored, current rates."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass


def say(message: str) -> None:
    print(f"==> bench: {message}", flush=True)


@dataclass
class Counters:
    sent: int = 0
    acked: int = 0
    failed: int = 0


@contextlib.asynccontextmanager
async def reporting(
    phase: str,
    counters: Counters | None,
    interval_s: float,
    stored: Callable[[], Awaitable[int]] | None = None,
    extra: Callable[[], str] | None = None,
) -> AsyncIterator[None]:
    """Prints a line every interval_s while the body runs; a failing count never stops the phase."""
    started = time.monotonic()

    async def loop() -> None:
        last_t, last_acked, last_stored = started, 0, 0
        while True:
            await asyncio.sleep(interval_s)
            now = time.monotonic()
            line = f"[{phase}] {now - started:6.1f}s"
            if counters is not None:
                line += (
                    f" sent={counters.sent:,} acked={counters.acked:,}"
                    f" ({(counters.acked - last_acked) / (now - last_t):,.0f}/s)"
                )
                if counters.failed:
                    line += f" failed={counters.failed:,}"
            if stored is not None:
                try:
                    rows = await stored()
                except Exception as error:
                    line += f" stored=? ({type(error).__name__})"
                else:
                    line += f" stored={rows:,} ({(rows - last_stored) / (now - last_t):,.0f}/s)"
                    last_stored = rows
            if extra is not None:
                line += " " + extra()
            print(line, file=sys.stdout, flush=True)
            last_t, last_acked = now, (counters.acked if counters is not None else 0)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
