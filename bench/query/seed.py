"""Seeding: the sites through the auth service, the events through the processor's own EventWriter.

Generator processes build each UTC day's events with ingest's validation and enrichment and pack
them into the EventBatch messages ingest would publish; this process decodes them and stores them
exactly as the processor's consumer does (``rows_of`` → ``EventWriter.write``: events and sessions
in one transaction per batch). A marker in the data directory records what was seeded, so later
runs reuse the data set while the generator's parameters stay the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import Any

import grpc
import psycopg

from analytics.v1 import auth_pb2, auth_pb2_grpc, bus_pb2
from analytics_db import create_pool, open_pool
from bench.query.generator import SITES, Params, Summary, Unit, generate_unit, units
from processor_service.writer import EventWriter, rows_of

MARKER = "marker.json"
UNIT_TIMEOUT_S = 1800.0
POSTGRES = "postgres"


def read_marker(data_dir: Path) -> dict[str, Any] | None:
    try:
        marker: dict[str, Any] = json.loads((data_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker


def reusable(data_dir: Path, params: Params) -> dict[str, Any] | None:
    """The marker of a complete data set made with these parameters, or None."""
    marker = read_marker(data_dir)
    if marker is None or marker.get("params") != params.as_json():
        return None
    if not (data_dir / POSTGRES / "PG_VERSION").exists():
        return None
    return marker


def wipe(data_dir: Path) -> None:
    """Removes a data set (the marker first, so a half-removed one is never taken as complete)."""
    (data_dir / MARKER).unlink(missing_ok=True)
    shutil.rmtree(data_dir / POSTGRES, ignore_errors=True)


def write_marker(data_dir: Path, marker: dict[str, Any]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / (MARKER + ".tmp")
    tmp.write_text(json.dumps(marker, indent=2) + "\n")
    tmp.replace(data_dir / MARKER)


def create_sites(auth_address: str, admin_token: str) -> dict[str, str]:
    """Creates the data set's sites (name, domain, time zone) through the auth service."""
    metadata = (("authorization", f"Bearer {admin_token}"),)
    site_ids: dict[str, str] = {}
    with grpc.insecure_channel(auth_address) as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)  # type: ignore[no-untyped-call]
        for site in SITES:
            made = auth.CreateSite(
                auth_pb2.CreateSiteRequest(name=site.name, domain=site.domain, timezone=site.timezone),
                metadata=metadata,
                timeout=10,
            )
            site_ids[site.key] = made.site_id
    return site_ids


def read_key(auth_address: str, admin_token: str, site_id: str) -> str:
    """A new key of the site that may read its statistics, as a dashboard would hold."""
    metadata = (("authorization", f"Bearer {admin_token}"),)
    with grpc.insecure_channel(auth_address) as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)  # type: ignore[no-untyped-call]
        made = auth.CreateApiKey(
            auth_pb2.CreateApiKeyRequest(site_id=site_id, scopes=[auth_pb2.SCOPE_READ]),
            metadata=metadata,
            timeout=10,
        )
    return str(made.api_key)


def site_timezones(auth_address: str, admin_token: str) -> dict[str, str]:
    """site_id → time zone of every site, as the auth service answers."""
    metadata = (("authorization", f"Bearer {admin_token}"),)
    with grpc.insecure_channel(auth_address) as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)  # type: ignore[no-untyped-call]
        listed = auth.ListSites(auth_pb2.ListSitesRequest(), metadata=metadata, timeout=10)
    return {site.site_id: site.timezone for site in listed.sites}


@dataclass
class Progress:
    total: int
    started: float = field(default_factory=time.monotonic)
    events: int = 0
    sessions: int = 0
    day: str = ""

    def line(self, last: tuple[float, int]) -> str:
        now = time.monotonic()
        rate_now = (self.events - last[1]) / max(now - last[0], 1e-9)
        elapsed = now - self.started
        rate = self.events / elapsed if elapsed > 0 else 0.0
        if rate > 0:
            left = (self.total - self.events) / rate
            eta = f"{int(left // 60)}m{int(left % 60):02d}s"
        else:
            eta = "?"
        return (
            f"[seed] {elapsed:6.1f}s events={self.events:,}/{self.total:,} "
            f"({self.events / self.total * 100:5.1f}%) {rate_now:,.0f}/s now, {rate:,.0f}/s avg, "
            f"ETA {eta}; sessions={self.sessions:,}; day {self.day}"
        )


@contextlib.asynccontextmanager
async def _reporting(progress: Progress, interval_s: float) -> AsyncIterator[None]:
    async def loop() -> None:
        last = (progress.started, 0)
        while True:
            await asyncio.sleep(interval_s)
            print(progress.line(last), flush=True)
            last = (time.monotonic(), progress.events)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass
class SeedResult:
    events: int
    sessions: int  # session rows the writer added, net of merges
    seconds: float
    summaries: dict[str, Summary]

    @property
    def visits(self) -> int:
        return sum(s.visits for s in self.summaries.values())


async def seed(
    database_url: str,
    params: Params,
    site_ids: dict[str, str],
    *,
    batch_size: int,
    workers: int,
    progress_seconds: float,
    summarize: bool = False,
) -> SeedResult:
    """Generates and stores the data set; workers=0 generates in this process (tests)."""
    pool = create_pool(database_url, name="bench-query-seed", max_size=1)
    await open_pool(pool)
    writer = EventWriter(pool)
    progress = Progress(params.events)
    summaries = {site.key: Summary() for site in SITES}
    count = len(units(params))
    processes = multiprocessing.get_context("spawn").Pool(workers) if workers > 0 else None
    try:
        async with _reporting(progress, progress_seconds):
            pending: list[AsyncResult[Unit]] = []
            submitted = 0
            for index in range(count):
                if processes is not None:
                    # A few days in flight at most: a day of 10M events is tens of MB of messages.
                    while submitted < count and len(pending) < workers + 1:
                        pending.append(
                            processes.apply_async(
                                generate_unit, (params, site_ids, submitted, batch_size, summarize)
                            )
                        )
                        submitted += 1
                    # A worker that died never delivers: give up rather than wait for ever.
                    unit = await asyncio.to_thread(pending.pop(0).get, UNIT_TIMEOUT_S)
                else:
                    unit = generate_unit(params, site_ids, index, batch_size, summarize)
                progress.day = unit.start.date().isoformat()
                for data in unit.batches:
                    rows = rows_of([bus_pb2.EventBatch.FromString(data)])
                    result = await writer.write(rows)
                    progress.events += result.inserted
                    s = result.sessions
                    progress.sessions += s.created + s.inserted - s.deleted
                for key, summary in unit.summaries.items():
                    summaries[key].add(summary)
    finally:
        if processes is not None:
            processes.terminate()
            processes.join()
        await pool.close()
    return SeedResult(progress.events, progress.sessions, time.monotonic() - progress.started, summaries)


def settle(database_url: str) -> tuple[int, int]:
    """VACUUM ANALYZE of what seeding wrote; returns (events, sessions) stored."""
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("VACUUM (ANALYZE) analytics.events")
        conn.execute("VACUUM (ANALYZE) analytics.sessions")
        for rollup in ("event_counts_15m", "visit_counts_15m", "visitor_days"):
            conn.execute(f"VACUUM (ANALYZE) analytics.{rollup}")
        events = conn.execute("SELECT count(*) FROM analytics.events").fetchone()
        sessions = conn.execute("SELECT count(*) FROM analytics.sessions").fetchone()
    return int(events[0]) if events else 0, int(sessions[0]) if sessions else 0


def marker_document(
    params: Params, site_ids: dict[str, str], result: SeedResult, events: int, sessions: int
) -> dict[str, Any]:
    return {
        "params": params.as_json(),
        "sites": site_ids,
        "events": events,
        "sessions": sessions,
        "generated_visits": result.visits,
        "seeded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed_seconds": round(result.seconds, 1),
        "seed_events_per_s": round(result.events / result.seconds, 1) if result.seconds else None,
    }
