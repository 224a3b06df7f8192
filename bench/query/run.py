"""Seeds (or reuses) the data set, measures the questions on a private stack, prints and writes results."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import psycopg
import structlog

from bench import report
from bench.environment import environment
from bench.progress import say
from bench.query import seed
from bench.query.config import Settings
from bench.query.generator import LARGE_SITE, SITES, Params
from bench.query.measure import Measurement, measure
from bench.query.queries import NAMES, QUERIES, Context

# Slow answers are measured rather than cut off at the service's production default (30 s).
SERVICE_ENV = {"ANALYTICS_QUERY_STATEMENT_TIMEOUT_MS": "600000"}


def document(
    measurements: Sequence[Measurement],
    marker: dict[str, Any],
    *,
    seeded_now: bool,
    machine: dict[str, Any],
    settings: dict[str, Any],
) -> dict[str, Any]:
    """bench/results/query.json: {"events": N, "queries": {name: {p50_ms, p95_ms, raw_p95_ms, speedup,
    …}}} and what else helps read them: the data set, the machine, the settings."""
    return {
        "events": marker["events"],
        "queries": {m.name: m.as_json() for m in measurements},
        "data_set": {**marker, "seeded_this_run": seeded_now},
        "machine": {**machine, "load_average_at_end": [round(v, 2) for v in os.getloadavg()]},
        "settings": settings,
    }


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def table(measurements: Sequence[Measurement]) -> str:
    header = ("query", "p50 ms", "p95 ms", "raw p95 ms", "speedup", "target p95", "")
    lines = []
    for m in measurements:
        if m.error:
            verdict = f"FAILED: {m.error}"
        elif m.target_ms is None:
            verdict = "—"
        else:
            verdict = "met" if m.met else "MISSED"
        lines.append(
            (
                m.name,
                _ms(m.p50_ms),
                _ms(m.p95_ms),
                _ms(m.raw_p95_ms),
                f"{m.speedup:,.1f}x" if m.speedup is not None else "—",
                f"< {m.target_ms:,.0f} ms" if m.target_ms is not None else "—",
                verdict,
            )
        )
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

    def render(row: Sequence[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, len(row) - 1)]
        return ("  " + "  ".join(cells) + "  " + row[-1]).rstrip()

    out = [render(header), "  " + "-" * (sum(widths) + 2 * (len(widths) - 1))]
    out += [render(row) for row in lines]
    for m in measurements:
        if m.difference is not None:
            out.append(f"  WARNING {m.name}: the Query RPC and raw SQL disagree: {m.difference}")
    return "\n".join(out)


def _seed_data_set(settings: Settings, database_url: str, auth: str, admin_token: str) -> dict[str, Any]:
    params = settings.params
    say(
        f"seeding {params.events:,} events over {params.days} days (seed {params.seed}, ending "
        f"{params.end}) through the processor's EventWriter, {settings.workers} generator process(es), "
        f"batches of {settings.batch_size:,}"
    )
    site_ids = seed.create_sites(auth, admin_token)
    result = asyncio.run(
        seed.seed(
            database_url,
            params,
            site_ids,
            batch_size=settings.batch_size,
            workers=settings.workers,
            progress_seconds=settings.progress_seconds,
        )
    )
    say(
        f"stored {result.events:,} events in {result.seconds:,.1f} s "
        f"({result.events / result.seconds:,.0f}/s); VACUUM ANALYZE of the events, sessions and rollups"
    )
    started = time.monotonic()
    events, sessions = seed.settle(database_url)
    say(f"vacuumed in {time.monotonic() - started:,.1f} s: {events:,} events, {sessions:,} sessions stored")
    if events != params.events:
        raise RuntimeError(f"the database holds {events:,} events, the data set has {params.events:,}")
    if sessions != result.visits:
        say(f"WARNING: {sessions:,} sessions stored, but the generator made {result.visits:,} visits")
    marker = seed.marker_document(params, site_ids, result, events, sessions)
    seed.write_marker(settings.data_dir, marker)
    return marker


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(settings: Settings) -> int:
    params: Params = settings.params
    queries = [q for q in QUERIES if not settings.only or q.name in settings.only]
    unknown = settings.only - set(NAMES)
    if unknown:
        raise SystemExit(f"BENCH_QUERY_ONLY: unknown queries {sorted(unknown)}; known: {', '.join(NAMES)}")
    info = report.machine()
    say(
        f"data set: {params.events:,} events, {params.days} days to {params.end}, seed {params.seed}; "
        f"{settings.repetitions} runs per query (+{settings.warmup} warm-up), "
        f"raw SQL {settings.raw_repetitions} (+{settings.raw_warmup}); "
        f"load average {info['load_average_at_start']}"
    )
    marker = None if settings.reseed else seed.reusable(settings.data_dir, params)
    if marker is None:
        if (settings.data_dir / seed.POSTGRES).exists():
            reason = "BENCH_QUERY_RESEED" if settings.reseed else "its parameters differ or it is incomplete"
            say(f"removing the data set in {settings.data_dir} ({reason})")
        seed.wipe(settings.data_dir)
    else:
        say(f"reusing the data set in {settings.data_dir} (seeded {marker['seeded_at']})")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    seeded_now = marker is None
    with environment(
        SERVICE_ENV,
        {},
        keep=False,
        log=say,
        postgres_dir=settings.data_dir / seed.POSTGRES,
        with_edge=False,
    ) as env:
        stack = env.stack
        if marker is None:
            marker = _seed_data_set(settings, env.database_url, stack.addresses["auth"], stack.admin_token)
        site_id = marker["sites"][LARGE_SITE.key]
        zones = seed.site_timezones(stack.addresses["auth"], stack.admin_token)
        missing = [key for key, sid in marker["sites"].items() if sid not in zones]
        if missing:
            raise RuntimeError(f"sites {missing} of the marker are missing: run with BENCH_QUERY_RESEED=1")
        key = seed.read_key(stack.addresses["auth"], stack.admin_token, site_id)
        say(
            f"measuring {len(queries)} questions on site {LARGE_SITE.domain} ({zones[site_id]}), "
            f"today = {params.end}"
        )
        with (
            grpc.insecure_channel(stack.addresses["query"]) as channel,
            psycopg.connect(env.database_url, autocommit=True, connect_timeout=10) as conn,
        ):
            ctx = Context(conn, site_id, ZoneInfo(zones[site_id]), params.end)
            measurements = measure(
                channel,
                [("x-api-key", key)],
                ctx,
                queries,
                repetitions=settings.repetitions,
                warmup=settings.warmup,
                raw_repetitions=settings.raw_repetitions,
                raw_warmup=settings.raw_warmup,
                today=params.end,
                log=say,
                budget_s=settings.budget_seconds,
            )
    result = document(
        measurements,
        marker,
        seeded_now=seeded_now,
        machine=info,
        settings={**settings.as_json(), "params": params.as_json(), "service_env": SERVICE_ENV},
    )
    report.write(settings.results, result)
    print()
    title = (
        f"Query latency on {marker['events']:,} events, {marker['sessions']:,} sessions "
        f"({len(SITES)} sites; {LARGE_SITE.domain}, {params.days} days to {params.end})"
    )
    print(title)
    print(table(measurements))
    print()
    say(f"wrote {settings.results}")
    if any(m.error for m in measurements):
        say("FAILED: some questions got no answer")
        return 2
    if any(m.difference is not None for m in measurements):
        say("FAILED: the Query RPC and raw SQL disagree")
        return 1
    return 0


def main() -> int:
    settings = Settings.from_env()
    # The writer logs every chunk it analyzes; progress lines say enough.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    signal.signal(signal.SIGTERM, _on_sigterm)
    settings.results.parent.mkdir(parents=True, exist_ok=True)
    try:
        return run(settings)
    except KeyboardInterrupt:
        say("interrupted; the stack was torn down (an unfinished data set is seeded again next time)")
        return 130
    except Exception as error:
        say(f"FAILED: {type(error).__name__}: {error}")
        return 2
