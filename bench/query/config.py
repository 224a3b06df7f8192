"""Query benchmark settings, read from BENCH_QUERY_* environment variables in this one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from bench.config import RESULTS_DIR, env_float, env_int
from bench.query.generator import Params

REPO = Path(__file__).resolve().parents[2]


def _date(name: str, default: date) -> date:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a date (YYYY-MM-DD)") from None


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip() not in ("", "0", "false", "no")


@dataclass(frozen=True)
class Settings:
    params: Params
    data_dir: Path
    results: Path
    reseed: bool
    repetitions: int
    warmup: int
    raw_repetitions: int
    raw_warmup: int
    budget_seconds: float
    batch_size: int
    workers: int
    progress_seconds: float
    only: frozenset[str]

    @classmethod
    def from_env(cls) -> Settings:
        defaults = Params()
        params = Params(
            events=env_int("BENCH_QUERY_EVENTS", defaults.events, 1000),
            days=env_int("BENCH_QUERY_DAYS", defaults.days, 1),
            end=_date("BENCH_QUERY_END", defaults.end),
            seed=env_int("BENCH_QUERY_SEED", defaults.seed, 0),
        )
        data_dir = os.environ.get("BENCH_QUERY_DATA_DIR", "").strip()
        only = frozenset(n.strip() for n in os.environ.get("BENCH_QUERY_ONLY", "").split(",") if n.strip())
        return cls(
            params=params,
            data_dir=Path(data_dir).absolute() if data_dir else REPO / ".data" / "bench-query",
            results=RESULTS_DIR / "query.json",
            reseed=_flag("BENCH_QUERY_RESEED"),
            repetitions=env_int("BENCH_QUERY_REPETITIONS", 20, 1),
            warmup=env_int("BENCH_QUERY_WARMUP", 2, 0),
            raw_repetitions=env_int("BENCH_QUERY_RAW_REPETITIONS", 5, 1),
            raw_warmup=env_int("BENCH_QUERY_RAW_WARMUP", 1, 0),
            budget_seconds=env_float("BENCH_QUERY_BUDGET_SECONDS", 60.0, 0.0),
            batch_size=env_int("BENCH_QUERY_BATCH", 5000, 1),
            workers=env_int("BENCH_QUERY_WORKERS", 2, 1),
            progress_seconds=env_float("BENCH_QUERY_PROGRESS_SECONDS", 3.0, 0.5),
            only=only,
        )

    def as_json(self) -> dict[str, object]:
        return {
            "data_dir": str(self.data_dir),
            "repetitions": self.repetitions,
            "warmup": self.warmup,
            "raw_repetitions": self.raw_repetitions,
            "raw_warmup": self.raw_warmup,
            "budget_seconds": self.budget_seconds,
            "batch_size": self.batch_size,
            "workers": self.workers,
            "only": sorted(self.only),
        }
