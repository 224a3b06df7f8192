"""Runs every benchmark phase on a fresh private stack, prints the table, writes results/latest.json."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from bench import events, http_load, live, procstat, profile, raw_copy, report, verify
from bench.config import RESULTS_DIR, Settings
from bench.environment import Environment, Site, environment
from bench.grpc_load import LoadResult, prebuild, track_batches, track_singles
from bench.pipeline import Pipeline
from bench.progress import reporting, say

TARGET_RATIO = 0.5
TARGET_P99_MS = 10.0


@dataclass
class Run:
    settings: Settings
    figures: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    cpu: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: list[verify.Check] = field(default_factory=list)
    acknowledged: dict[str, tuple[Site, list[str]]] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    profiles: dict[str, Any] = field(default_factory=dict)


def _ids(phase: int, runs: list[tuple[int, int]]) -> list[str]:
    return [events.event_id(phase, c) for first, n in runs for c in range(first, first + n)]


class Phase:
    """Wall time and per-process CPU of one phase."""

    def __init__(self, run: Run, monitor: procstat.Monitor, name: str) -> None:
        self.run, self.monitor, self.name = run, monitor, name

    def __enter__(self) -> Phase:
        say(f"phase {self.name}")
        self.started = time.monotonic()
        self.cpu_before = self.monitor.cpu()
        return self

    def stop(self) -> None:
        if self.name not in self.run.cpu:
            wall = time.monotonic() - self.started
            delta = procstat.cpu_delta(self.cpu_before, self.monitor.cpu())
            self.run.cpu[self.name] = {"wall_s": round(wall, 3), "cpu_s": delta}

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _sample_memory(monitor: procstat.Monitor) -> None:
    while True:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(monitor.sample_memory)
        await asyncio.sleep(1.0)


@dataclass
class Bench:
    """The phases, sharing the stack, the pipeline probes and the process monitor."""

    env: Environment
    pipeline: Pipeline
    monitor: procstat.Monitor
    run: Run
    # Set when the run is cancelled, so work in threads (the raw COPY loop) stops at once.
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def settings(self) -> Settings:
        return self.run.settings

    def phase(self, name: str) -> Phase:
        return Phase(self.run, self.monitor, name)

    async def wait_stored(self, phase: str, site: Site, expected: int) -> tuple[int, float | None]:
        say(f"{phase}: waiting until {expected:,} acknowledged events are stored")
        limit = self.settings.drain_timeout_seconds
        stored, reached = await self.pipeline.wait_stored(
            site.site_id, expected, limit, check=self.env.check_alive
        )
        if reached is None:
            say(f"{phase}: only {stored:,} of {expected:,} stored; gave up (stalled or {limit:.0f} s passed)")
        return stored, reached

    async def start_profiles(self, phase: str, seconds: float) -> list[tuple[str, Any, Path]]:
        """py-spy on the phase's busiest services, when BENCH_PYSPY names the binary."""
        binary = profile.pyspy_binary(self.settings.pyspy)
        if binary is None:
            return []
        spies = []
        for service, pids in self.env.pids().items():
            if service in profile.PROFILED.get(phase, ()):
                out = RESULTS_DIR / f"profile-{phase}-{service}.txt"
                spies.append((service, await profile.record(binary, pids[0], seconds, out), out))
        return spies

    async def finish_profiles(self, phase: str, spies: list[tuple[str, Any, Path]]) -> None:
        for service, process, out in spies:
            await profile.finish(process, 30)
            self.run.profiles[f"{phase}/{service}"] = await asyncio.to_thread(profile.summarize, out)

    def stored(self, site: Site) -> Callable[[], Awaitable[int]]:
        return lambda: self.pipeline.stored(site.site_id)

    async def grpc_batch(self, site: Site, name: str, phase_id: int, seconds: float) -> None:
        s = self.settings
        encoder = events.Encoder(site.site_id, phase_id, s.visitors)
        prebuilt = prebuild(encoder, s.batch_size, int(seconds * 25_000)) if name != "warmup" else []
        result = LoadResult()
        with self.phase(name) as phase:
            spies = await self.start_profiles(name, seconds)
            async with reporting(name, result.counters, s.progress_seconds, self.stored(site)):
                await track_batches(
                    self.env.stack.addresses["ingest"],
                    site,
                    encoder,
                    seconds=seconds,
                    callers=s.batch_callers,
                    batch_size=s.batch_size,
                    prebuilt=prebuilt,
                    result=result,
                )
                send_end = time.monotonic()
                stored, reached = await self.wait_stored(name, site, result.counters.acked)
            phase.stop()
        await self.finish_profiles(name, spies)
        self.run.acknowledged[name] = (site, _ids(phase_id, result.acked))
        acked = result.counters.acked
        window = send_end - result.first_send
        detail: dict[str, Any] = {
            "seconds": round(window, 3),
            "callers": s.batch_callers,
            "batch_size": s.batch_size,
            "sent": result.counters.sent,
            "acknowledged": acked,
            "failed_calls": result.counters.failed,
            "errors": result.errors,
            "stored_at_end": stored,
            "ingest_ack_events_per_s": round(acked / window, 1) if window > 0 else None,
            "call_p50_ms": result.latency_ms(0.5),
            "call_p99_ms": result.latency_ms(0.99),
        }
        if reached is not None:
            detail["visible_after_s"] = round(reached - result.first_send, 3)
            detail["drain_lag_s"] = round(reached - send_end, 3)
            detail["e2e_events_per_s"] = round(acked / (reached - result.first_send), 1)
        self.run.phases[name] = detail

    async def grpc_unary(self, site: Site) -> None:
        s = self.settings
        encoder = events.Encoder(site.site_id, events.PHASE_UNARY, s.visitors)
        result = LoadResult()
        with self.phase("grpc_unary"):
            async with reporting("grpc_unary", result.counters, s.progress_seconds, self.stored(site)):
                await track_singles(
                    self.env.stack.addresses["ingest"],
                    site,
                    encoder,
                    seconds=s.unary_seconds,
                    callers=s.unary_callers,
                    result=result,
                )
                window = time.monotonic() - result.first_send
                await self.wait_stored("grpc_unary", site, result.counters.acked)
        self.run.acknowledged["grpc_unary"] = (site, _ids(events.PHASE_UNARY, result.acked))
        self.run.phases["grpc_unary"] = {
            "seconds": round(window, 3),
            "callers": s.unary_callers,
            "sent": result.counters.sent,
            "acknowledged": result.counters.acked,
            "failed_calls": result.counters.failed,
            "errors": result.errors,
            "rps": round(result.counters.acked / window, 1) if window > 0 else None,
            "p50_ms": result.latency_ms(0.5),
            "p99_ms": result.latency_ms(0.99),
        }

    def raw(self, site: Site, *, staging: bool) -> None:
        name = "raw_staging_upsert" if staging else "raw_copy"
        templates = raw_copy.sample_rows(self.env.database_url, site.site_id)

        def progress(result: raw_copy.CopyResult) -> None:
            print(
                f"[{name}] {result.busy_s:6.1f}s copied={result.rows:,} ({result.rows_per_s:,.0f} rows/s)",
                flush=True,
            )

        with self.phase(name):
            result = raw_copy.copy_rows(
                self.env.database_url,
                templates,
                staging=staging,
                seconds=self.settings.raw_seconds,
                batch_rows=self.settings.raw_batch_rows,
                progress=progress,
                stop=self.stop,
            )
        self.run.phases[name] = {
            "rows": result.rows,
            "transactions": result.transactions,
            "rows_per_transaction": self.settings.raw_batch_rows,
            "database_busy_s": round(result.busy_s, 3),
            "rows_per_s": round(result.rows_per_s, 1),
        }

    async def http_max(self, site: Site) -> None:
        s = self.settings
        work = self.env.work_dir / "http"
        work.mkdir(exist_ok=True)
        with self.phase("http_max"):
            spies = await self.start_profiles("http_max", s.http_seconds)
            async with reporting("http_max", None, s.progress_seconds, self.stored(site)):
                summary, ids = await http_load.wrk_max(
                    self.env.stack.http_url,
                    site,
                    events.PHASE_WRK,
                    seconds=s.http_seconds,
                    threads=s.wrk_threads,
                    connections=s.wrk_connections,
                    work_dir=work,
                )
                await self.wait_stored("http_max", site, len(ids))
        await self.finish_profiles("http_max", spies)
        self.run.acknowledged["http_max"] = (site, ids)
        self.run.phases["http_max"] = {"threads": s.wrk_threads, "connections": s.wrk_connections, **summary}

    async def settle(self) -> None:
        """Vacuums what the batch phases wrote before the per-request phases measure latency."""
        say("settling: VACUUM ANALYZE of analytics.events and analytics.sessions (autovacuum's work, now)")
        started = time.monotonic()
        await self.pipeline.vacuum()
        say(f"settling: done in {time.monotonic() - started:.1f} s")

    async def http_open_loop(self, name: str, site: Site | None, seconds: float) -> None:
        """Open-loop HTTP at the offered rate: POST /api/event for ``site`` (http_latency), or, with
        no site, GET /health (http_floor): the edge's own cost per request (HTTP, Envoy, one
        gRPC call to ingest and its interceptors) with no event to store."""
        s = self.settings
        work = self.env.work_dir / "http"
        work.mkdir(exist_ok=True)
        with self.phase(name):
            summary, ids = await http_load.open_loop(
                self.env.stack.http_url,
                site,
                events.PHASE_LATENCY,
                rate=s.http_rate,
                seconds=seconds,
                warmup=s.latency_warmup_seconds,
                connections=s.latency_connections,
                progress=s.progress_seconds,
                work_dir=work,
                label=name,
            )
            if site is not None:
                await self.wait_stored(name, site, len(ids))
        if site is not None:
            self.run.acknowledged[name] = (site, ids)
        self.run.phases[name] = summary

    async def live(self, site: Site) -> None:
        """SSE subscribers of one site while events are ingested (bench/live.py)."""
        s = self.settings
        with self.phase("live"):
            self.run.phases["live"] = await live.live_phase(
                self.env.stack.http_url,
                site,
                subscribers=s.live_subscribers,
                probes=min(s.live_probes, s.live_subscribers),
                rate=s.live_rate,
                seconds=s.live_seconds,
            )


async def phases(env: Environment, run: Run) -> None:
    s = run.settings
    monitor = procstat.Monitor(env.pids())
    sampler = asyncio.create_task(_sample_memory(monitor))
    stop = threading.Event()
    # SIGTERM cancels the run like Ctrl+C does (asyncio.run turns SIGINT into a cancellation).
    main_task = asyncio.current_task()
    if main_task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    try:
        names = ["warmup", "e2e_batch", "grpc_unary", "http_max", "http_latency", "live"]
        sites = {name: await asyncio.to_thread(env.create_site, f"bench {name}") for name in names}
        async with Pipeline(env.database_url, env.stack.nats_url) as pipeline:
            bench = Bench(env, pipeline, monitor, run, stop)
            if s.warmup_seconds > 0:
                await bench.grpc_batch(sites["warmup"], "warmup", events.PHASE_WARMUP, s.warmup_seconds)
            await bench.grpc_batch(sites["e2e_batch"], "e2e_batch", events.PHASE_BATCH, s.seconds)
            for staging, key in ((False, "raw"), (True, "staging")):
                if key not in s.skip:
                    await asyncio.to_thread(bench.raw, sites["e2e_batch"], staging=staging)
            if not {"unary", "http", "latency", "floor"} <= s.skip:
                await bench.settle()
            if "unary" not in s.skip:
                await bench.grpc_unary(sites["grpc_unary"])
            if "http" not in s.skip:
                await bench.http_max(sites["http_max"])
            if "latency" not in s.skip:
                await bench.http_open_loop("http_latency", sites["http_latency"], s.latency_seconds)
            if "floor" not in s.skip:
                await bench.http_open_loop("http_floor", None, s.floor_seconds)
            if "live" not in s.skip:
                await bench.live(sites["live"])
            say("waiting until the consumer has nothing pending or unacknowledged")
            backlog = await pipeline.wait_drained(s.drain_timeout_seconds, check=env.check_alive)
            run.phases["drain"] = {
                "pending": backlog.pending,
                "ack_pending": backlog.ack_pending,
                "redelivered": backlog.redelivered,
            }
        await asyncio.to_thread(monitor.sample_memory)
        run.memory = {
            "root_vmhwm_mb": {k: round(v / 1024, 1) for k, v in monitor.root_hwm_kb().items()},
            "tree_vmhwm_sum_mb": {k: round(v / 1024, 1) for k, v in monitor.peak_hwm_kb.items()},
            "tree_pss_peak_mb": {k: round(v / 1024, 1) for k, v in monitor.peak_pss_kb.items()},
        }
        say("checking every acknowledged event id against the database")
        for name, (site, ids) in run.acknowledged.items():
            run.checks.append(
                await asyncio.to_thread(verify.check, env.database_url, name, site.site_id, ids)
            )
    finally:
        stop.set()
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler


def _live_rows(live: dict[str, Any] | None) -> list[tuple[str, Any, str]]:
    if not live:
        return []
    p99 = live["delivery_p99_ms"]
    return [
        (
            "live_delivery_p50_ms / p99",
            f"{live['delivery_p50_ms']} / {p99}",
            f"ingest acknowledgement → SSE subscriber, {live['subscribers']} subscribers, "
            f"{live['offered_events_per_s']:g} events/s offered; target p99 < 1000: "
            + ("met" if p99 is not None and p99 < 1000 else "not met"),
        ),
        (
            "live_dropped_per_subscriber_max",
            live["dropped_per_subscriber_max"],
            f"{live['subscribers_with_drops']} subscribers dropped events; most missing: "
            f"{live['missing_per_subscriber_max']} of {live['events_acknowledged']}",
        ),
        (
            "live_ingest_call_p50_ms / p99",
            f"{live['ingest_call_p50_ms']} / {live['ingest_call_p99_ms']}",
            f"batch calls with the subscribers; alone: {live['ingest_alone_call_p50_ms']} / "
            f"{live['ingest_alone_call_p99_ms']}",
        ),
    ]


def _figures(run: Run) -> None:
    p, f = run.phases, run.figures
    batch = p.get("e2e_batch", {})
    f["e2e_events_per_s"] = batch.get("e2e_events_per_s")
    f["ingest_ack_events_per_s"] = batch.get("ingest_ack_events_per_s")
    f["e2e_drain_lag_s"] = batch.get("drain_lag_s")
    f["track_batch_p50_ms"] = batch.get("call_p50_ms")
    f["track_batch_p99_ms"] = batch.get("call_p99_ms")
    f["raw_copy_rows_per_s"] = p.get("raw_copy", {}).get("rows_per_s")
    f["raw_staging_upsert_rows_per_s"] = p.get("raw_staging_upsert", {}).get("rows_per_s")
    e2e = f["e2e_events_per_s"]
    for key, base in (
        ("e2e_to_raw_ratio", "raw_copy_rows_per_s"),
        ("e2e_to_staging_ratio", "raw_staging_upsert_rows_per_s"),
    ):
        f[key] = round(e2e / f[base], 3) if e2e and f[base] else None
    unary = p.get("grpc_unary", {})
    f["grpc_single_rps"] = unary.get("rps")
    f["grpc_single_p50_ms"] = unary.get("p50_ms")
    f["grpc_single_p99_ms"] = unary.get("p99_ms")
    wrk = p.get("http_max", {})
    f["http_rps_max"] = wrk.get("ok_rps")
    f["http_max_p50_ms"] = wrk.get("p50_ms")
    f["http_max_p99_ms"] = wrk.get("p99_ms")
    latency = p.get("http_latency", {})
    f["http_offered_rps"] = latency.get("offered_rps")
    f["http_answered_rps"] = latency.get("answered_rps")
    f["http_p50_ms"] = latency.get("p50_ms")
    f["http_p99_ms"] = latency.get("p99_ms")
    f["http_p999_ms"] = latency.get("p999_ms")
    f["http_latency_errors"] = int(latency.get("sent", 0)) - int(latency.get("ok", 0)) if latency else None
    floor = p.get("http_floor", {})
    f["http_floor_p50_ms"] = floor.get("p50_ms")
    f["http_floor_p99_ms"] = floor.get("p99_ms")
    f["http_floor_errors"] = int(floor.get("sent", 0)) - int(floor.get("ok", 0)) if floor else None
    f["lost_events"] = sum(c.missing_acknowledged for c in run.checks)
    f["duplicate_events"] = sum(c.duplicates for c in run.checks)
    f["acknowledged_events"] = sum(c.acknowledged for c in run.checks)
    f["unacknowledged_stored_events"] = sum(c.unacknowledged_stored for c in run.checks)
    hwm = run.memory.get("tree_vmhwm_sum_mb", {})
    pss = run.memory.get("tree_pss_peak_mb", {})
    f["peak_rss_mb"] = {name: (pss.get(name) if name == "postgres" else hwm.get(name)) for name in hwm}


def _per_event(run: Run) -> None:
    """CPU microseconds per stored event (per row for the raw phases), by component."""
    counts = {
        "e2e_batch": run.phases.get("e2e_batch", {}).get("acknowledged"),
        "grpc_unary": run.phases.get("grpc_unary", {}).get("acknowledged"),
        "http_max": run.phases.get("http_max", {}).get("ok"),
        "http_latency": run.phases.get("http_latency", {}).get("ok"),
        "http_floor": run.phases.get("http_floor", {}).get("ok"),
        "raw_copy": run.phases.get("raw_copy", {}).get("rows"),
        "raw_staging_upsert": run.phases.get("raw_staging_upsert", {}).get("rows"),
    }
    for phase, count in counts.items():
        if count and phase in run.cpu:
            run.cpu[phase]["us_per_event"] = {
                name: round(seconds / count * 1e6, 1)
                for name, seconds in run.cpu[phase]["cpu_s"].items()
                if name != procstat.OTHER and seconds > 0
            }


def _stack_us(run: Run, phase: str) -> float | None:
    """The stack's CPU per request in a phase: every service, nats-server and PostgreSQL."""
    per = run.cpu.get(phase, {}).get("us_per_event")
    return sum(v for k, v in per.items() if k != procstat.BENCH) if per else None


def _floor_ratio(run: Run) -> None:
    """How many times a stored HTTP event costs the stack what a bare GET /health does."""
    event, floor = _stack_us(run, "http_latency"), _stack_us(run, "http_floor")
    run.figures["http_stack_us_per_event"] = round(event, 1) if event else None
    run.figures["http_floor_stack_us_per_request"] = round(floor, 1) if floor else None
    run.figures["http_event_to_floor_cpu_ratio"] = round(event / floor, 2) if event and floor else None


def _targets(f: dict[str, Any]) -> dict[str, dict[str, Any]]:
    def met(value: Any, ok: bool) -> bool | None:
        return None if value is None else ok

    ratio, p99 = f.get("e2e_to_raw_ratio"), f.get("http_p99_ms")
    return {
        "e2e_to_raw_ratio": {
            "target": f">= {TARGET_RATIO}",
            "value": ratio,
            "met": met(ratio, (ratio or 0) >= TARGET_RATIO),
        },
        "http_p99_ms": {
            "target": f"< {TARGET_P99_MS} at {f.get('http_offered_rps')} req/s",
            "value": p99,
            "met": met(p99, p99 is not None and p99 < TARGET_P99_MS),
        },
        "lost_events": {"target": "0", "value": f["lost_events"], "met": f["lost_events"] == 0},
        "duplicate_events": {
            "target": "0",
            "value": f["duplicate_events"],
            "met": f["duplicate_events"] == 0,
        },
    }


def _print(run: Run, targets: dict[str, dict[str, Any]]) -> None:
    f = run.figures
    s = run.settings

    def t(name: str) -> str:
        target = targets[name]
        verdict = "—" if target["met"] is None else ("met" if target["met"] else "MISSED")
        return f"target {target['target']}: {verdict}"

    rows: list[tuple[str, Any, str]] = [
        (
            "e2e_events_per_s",
            f["e2e_events_per_s"],
            f"TrackBatch of {s.batch_size}, {s.batch_callers} callers, {s.seconds:.0f} s, acked and stored",
        ),
        (
            "ingest_ack_events_per_s",
            f["ingest_ack_events_per_s"],
            "acknowledged by ingest (PubAck) per second of sending",
        ),
        ("e2e_drain_lag_s", f["e2e_drain_lag_s"], "last answer → all acknowledged events visible"),
        (
            "track_batch_p50_ms / p99",
            f"{f['track_batch_p50_ms']} / {f['track_batch_p99_ms']}",
            "per TrackBatch call",
        ),
        (
            "raw_copy_rows_per_s",
            f["raw_copy_rows_per_s"],
            f"binary COPY straight into a hypertable, {s.raw_batch_rows:,} rows/txn",
        ),
        (
            "raw_staging_upsert_rows_per_s",
            f["raw_staging_upsert_rows_per_s"],
            "COPY to temp staging + INSERT … ON CONFLICT (the processor's path)",
        ),
        ("e2e_to_raw_ratio", f["e2e_to_raw_ratio"], t("e2e_to_raw_ratio")),
        ("e2e_to_staging_ratio", f["e2e_to_staging_ratio"], "e2e / staging+upsert ceiling"),
        (
            "grpc_single_rps",
            f["grpc_single_rps"],
            f"unary Track, {s.unary_callers} callers; "
            f"p50 {f['grpc_single_p50_ms']} ms, p99 {f['grpc_single_p99_ms']} ms",
        ),
        (
            "http_rps_max",
            f["http_rps_max"],
            f"wrk -t{s.wrk_threads} -c{s.wrk_connections} POST /api/event; "
            f"p50 {f['http_max_p50_ms']} ms, p99 {f['http_max_p99_ms']} ms",
        ),
        (
            "http_p50_ms",
            f["http_p50_ms"],
            f"open loop, {f['http_offered_rps']} req/s offered, {f['http_answered_rps']} answered; "
            "from scheduled send time",
        ),
        ("http_p99_ms", f["http_p99_ms"], t("http_p99_ms")),
        ("http_p999_ms", f["http_p999_ms"], f"errors/non-200: {f['http_latency_errors']}"),
        (
            "http_floor_p50_ms / p99",
            f"{f['http_floor_p50_ms']} / {f['http_floor_p99_ms']}" if f["http_floor_p99_ms"] else None,
            f"GET /health (Envoy → ingest GetHealth, nothing stored) open loop at the same rate; "
            f"errors/non-200: {f['http_floor_errors']}",
        ),
        (
            "http_stack_us_per_event",
            f["http_stack_us_per_event"],
            "CPU of the whole stack per stored HTTP event at that rate (load generator excluded)",
        ),
        (
            "http_floor_stack_us_per_request",
            f["http_floor_stack_us_per_request"],
            f"the same per GET /health; ratio {f['http_event_to_floor_cpu_ratio']}",
        ),
        *_live_rows(run.phases.get("live")),
        ("acknowledged_events", f["acknowledged_events"], "all phases"),
        ("lost_events", f["lost_events"], t("lost_events")),
        ("duplicate_events", f["duplicate_events"], t("duplicate_events")),
        (
            "unacknowledged_stored_events",
            f["unacknowledged_stored_events"],
            "sent, not answered (cut off at phase end), stored: fine",
        ),
    ]
    # Rows of skipped phases say nothing; targets stay visible either way.
    rows = [row for row in rows if row[1] is not None or "target" in row[2]]
    print()
    print(report.table(rows, "Results"))
    print()
    memory = run.memory
    mem_rows = [
        (name, mb, "sampled peak of summed PSS of all its processes" if name == "postgres" else "VmHWM")
        for name, mb in f["peak_rss_mb"].items()
    ]
    if "postgres" in memory.get("root_vmhwm_mb", {}):
        mem_rows.append(
            ("postgres (postmaster)", memory["root_vmhwm_mb"]["postgres"], "VmHWM of the postmaster alone")
        )
    print(report.table(mem_rows, "Peak memory (MiB)"))
    for name in ("e2e_batch", "http_max"):
        if name in run.cpu:
            print()
            print(
                report.cpu_table(
                    run.cpu[name]["cpu_s"],
                    run.cpu[name]["wall_s"],
                    f"CPU seconds during {name}",
                    procstat.OTHER,
                )
            )
    per_event = {
        phase: run.cpu[phase]["us_per_event"] for phase in run.cpu if "us_per_event" in run.cpu[phase]
    }
    if per_event:
        names = sorted({name for values in per_event.values() for name in values})
        print()
        print("CPU microseconds per event (per row for raw phases)")
        print("-" * 50)
        width = {phase: max(len(phase), 9) + 2 for phase in per_event}
        print(f"  {'':<24}" + "".join(f"{phase:>{width[phase]}}" for phase in per_event))
        for name in [*names, "total"]:
            cells = "".join(
                f"{(sum(v.values()) if name == 'total' else v.get(name, 0.0)):>{width[phase]},.1f}"
                for phase, v in per_event.items()
            )
            print(f"  {name:<24}{cells}")
    for service, summary in run.profiles.items():
        print()
        print(f"py-spy {service}: {summary.get('samples', 0)} samples")
        print("  top self time:")
        for frame, pct in summary.get("self_pct", [])[:8]:
            print(f"    {pct:5.1f}%  {frame}")
        print("  top project functions, inclusive:")
        for frame, pct in summary.get("inclusive_pct", [])[:8]:
            print(f"    {pct:5.1f}%  {frame}")
    print()
    print(
        report.table(
            [
                (
                    c.phase,
                    c.acknowledged,
                    f"stored {c.stored_rows:,}, missing {c.missing_acknowledged:,}, "
                    f"duplicates {c.duplicates:,}, unacknowledged stored {c.unacknowledged_stored:,}",
                )
                for c in run.checks
            ],
            "Exactly-once check per phase (acknowledged ids)",
        )
    )


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    settings = Settings.from_env()
    signal.signal(signal.SIGTERM, _on_sigterm)
    run = Run(settings)
    info = report.machine()
    say(
        f"settings: e2e {settings.seconds:.0f} s, unary {settings.unary_seconds:.0f} s, "
        f"raw {settings.raw_seconds:.0f} s, http {settings.http_seconds:.0f} s, "
        f"latency {settings.latency_seconds:.0f} s at {settings.http_rate:.0f} req/s; "
        f"load average {info['load_average_at_start']}"
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    failure: str | None = None
    try:
        with environment(
            settings.service_env,
            settings.replicas,
            edge_concurrency=settings.edge_concurrency,
            keep=settings.keep,
            log=say,
        ) as env:
            try:
                asyncio.run(phases(env, run))
            except asyncio.CancelledError:
                raise KeyboardInterrupt from None
            except Exception as error:
                failure = f"{type(error).__name__}: {error}"
                raise
            finally:
                # Closing the loop reset SIGTERM to the default; tear down on it, not die mid-way.
                signal.signal(signal.SIGTERM, _on_sigterm)
                logs = RESULTS_DIR / "logs"
                logs.mkdir(exist_ok=True)
                for name, tail in env.log_tails(200).items():
                    (logs / f"{name}.log").write_text(tail + "\n")
    except KeyboardInterrupt:
        say("interrupted; the stack was torn down")
        return 130
    except Exception as error:
        failure = failure or f"{type(error).__name__}: {error}"
        say(f"FAILED: {failure} (service log tails in {RESULTS_DIR / 'logs'})")
        return 2
    _figures(run)
    _per_event(run)
    _floor_ratio(run)
    targets = _targets(run.figures)
    document = {
        "figures": run.figures,
        "targets": targets,
        "phases": run.phases,
        "cpu": run.cpu,
        "memory": run.memory,
        "checks": [c.as_json() for c in run.checks],
        "profiles": run.profiles,
        "machine": info,
        "settings": settings.as_json(),
    }
    out = RESULTS_DIR / "latest.json"
    report.write(out, document)
    _print(run, targets)
    say(f"wrote {out}")
    if run.figures["lost_events"] or run.figures["duplicate_events"]:
        say("FAILED: acknowledged events were lost or stored twice")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
