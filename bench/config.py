"""Benchmark settings, read from BENCH_* environment variables in this one place."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def env_float(name: str, default: float, minimum: float = 0.0) -> float:
    """A number from the environment, or the default; a bad or too small one ends the run."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise SystemExit(f"{name} must be at least {minimum}, got {value}")
    return value


def env_int(name: str, default: int, minimum: int = 1) -> int:
    return int(env_float(name, default, minimum))


def _pairs(name: str) -> dict[str, str]:
    raw = os.environ.get(name, "").strip()
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("ANALYTICS_"):
            raise SystemExit(f"{name}: expected ANALYTICS_NAME=value[,…], got {item!r}")
        pairs[key] = value
    return pairs


def _replicas(name: str) -> dict[str, int]:
    raw = os.environ.get(name, "").strip()
    replicas: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        service, sep, count = item.partition("=")
        if not sep or not count.isdigit() or int(count) < 1:
            raise SystemExit(f"{name}: expected service=count[,…] (e.g. ingest=2), got {item!r}")
        replicas[service] = int(count)
    return replicas


@dataclass(frozen=True)
class Settings:
    """Durations are seconds of measured load per phase; other phases default to at most BENCH_SECONDS."""

    seconds: float
    warmup_seconds: float
    unary_seconds: float
    raw_seconds: float
    http_seconds: float
    latency_seconds: float
    latency_warmup_seconds: float
    floor_seconds: float
    http_rate: float
    batch_size: int
    visitors: int
    batch_callers: int
    unary_callers: int
    wrk_threads: int
    wrk_connections: int
    latency_connections: int
    raw_batch_rows: int
    progress_seconds: float
    drain_timeout_seconds: float
    service_env: dict[str, str]
    replicas: dict[str, int]
    edge_concurrency: int
    pyspy: str
    keep: bool
    skip: frozenset[str]
    live_subscribers: int = 1000
    live_probes: int = 20
    live_rate: float = 1000.0
    live_seconds: float = 15.0

    @classmethod
    def from_env(cls) -> Settings:
        seconds = env_float("BENCH_SECONDS", 30.0, 1.0)
        skip = frozenset(s.strip() for s in os.environ.get("BENCH_SKIP", "").split(",") if s.strip())
        unknown = skip - {"unary", "raw", "staging", "http", "latency", "floor", "live"}
        if unknown:
            raise SystemExit(f"BENCH_SKIP: unknown phases {sorted(unknown)}")
        return cls(
            seconds=seconds,
            warmup_seconds=env_float("BENCH_WARMUP_SECONDS", min(3.0, seconds), 0.0),
            unary_seconds=env_float("BENCH_UNARY_SECONDS", min(10.0, seconds), 1.0),
            raw_seconds=env_float("BENCH_RAW_SECONDS", min(10.0, seconds), 1.0),
            http_seconds=env_float("BENCH_HTTP_SECONDS", min(15.0, seconds), 1.0),
            latency_seconds=env_float("BENCH_LATENCY_SECONDS", min(20.0, max(seconds, 5.0)), 1.0),
            latency_warmup_seconds=env_float("BENCH_LATENCY_WARMUP_SECONDS", 2.0, 0.0),
            floor_seconds=env_float("BENCH_FLOOR_SECONDS", min(10.0, max(seconds, 5.0)), 1.0),
            http_rate=env_float("BENCH_HTTP_RATE", 1000.0, 1.0),
            batch_size=env_int("BENCH_BATCH_SIZE", 1000),
            visitors=env_int("BENCH_VISITORS", 100_000),
            batch_callers=env_int("BENCH_BATCH_CALLERS", 8),
            unary_callers=env_int("BENCH_UNARY_CALLERS", 16),
            wrk_threads=env_int("BENCH_WRK_THREADS", 1),
            wrk_connections=env_int("BENCH_WRK_CONNECTIONS", 32),
            latency_connections=env_int("BENCH_LATENCY_CONNECTIONS", 64),
            raw_batch_rows=env_int("BENCH_RAW_BATCH_ROWS", 10_000),
            progress_seconds=env_float("BENCH_PROGRESS_SECONDS", 3.0, 0.5),
            drain_timeout_seconds=env_float("BENCH_DRAIN_TIMEOUT_SECONDS", 180.0, 5.0),
            service_env=_pairs("BENCH_SERVICE_ENV"),
            replicas=_replicas("BENCH_REPLICAS"),
            edge_concurrency=env_int("BENCH_EDGE_CONCURRENCY", 0, 0),
            pyspy=os.environ.get("BENCH_PYSPY", "").strip(),
            keep=os.environ.get("BENCH_KEEP", "") not in ("", "0"),
            skip=skip,
            live_subscribers=env_int("BENCH_LIVE_SUBSCRIBERS", 1000),
            live_probes=env_int("BENCH_LIVE_PROBES", 20),
            live_rate=env_float("BENCH_LIVE_RATE", 1000.0, 1.0),
            live_seconds=env_float("BENCH_LIVE_SECONDS", min(15.0, max(seconds, 5.0)), 1.0),
        )

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        data["skip"] = sorted(self.skip)
        return data
