"""Times each question through the Query RPC and as raw SQL, and checks that the answers agree."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import grpc

from bench.query.queries import BenchQuery, Context, Row, differences


def percentile(samples: Sequence[float], quantile: float) -> float | None:
    """Nearest-rank percentile of the samples (seconds) in milliseconds."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(1, math.ceil(quantile * len(ordered)))
    return round(ordered[rank - 1] * 1000, 3)


@dataclass
class Measurement:
    name: str
    what: str
    target_ms: float | None
    rpc_s: list[float] = field(default_factory=list)
    raw_s: list[float] = field(default_factory=list)
    error: str | None = None
    difference: str | None = None

    @property
    def p50_ms(self) -> float | None:
        return percentile(self.rpc_s, 0.5)

    @property
    def p95_ms(self) -> float | None:
        return percentile(self.rpc_s, 0.95)

    @property
    def raw_p50_ms(self) -> float | None:
        return percentile(self.raw_s, 0.5)

    @property
    def raw_p95_ms(self) -> float | None:
        return percentile(self.raw_s, 0.95)

    @property
    def speedup(self) -> float | None:
        p95, raw = self.p95_ms, self.raw_p95_ms
        return round(raw / p95, 2) if p95 and raw else None

    @property
    def met(self) -> bool | None:
        p95 = self.p95_ms
        if self.target_ms is None or p95 is None:
            return None
        return p95 < self.target_ms

    @property
    def agree(self) -> bool | None:
        if self.error is not None:
            return None
        return self.difference is None

    def as_json(self) -> dict[str, Any]:
        return {
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "raw_p95_ms": self.raw_p95_ms,
            "speedup": self.speedup,
            "raw_p50_ms": self.raw_p50_ms,
            "target_p95_ms": self.target_ms,
            "met": self.met,
            "answers_agree": self.agree,
            "difference": self.difference,
            "error": self.error,
            "repetitions": len(self.rpc_s),
            "raw_repetitions": len(self.raw_s),
            "what": self.what,
        }


# At least this many timed runs per question, whatever the time budget.
MIN_REPETITIONS = 5


def _runs(warmup: int, repetitions: int, budget_s: float, samples: list[float]) -> Iterator[bool]:
    """Yields whether each run is timed: warmup untimed runs, then timed ones until there are
    repetitions of them, or at least MIN_REPETITIONS once they took budget_s together."""
    for _ in range(warmup):
        yield False
    while len(samples) < repetitions and (len(samples) < MIN_REPETITIONS or sum(samples) < budget_s):
        yield True


def measure(
    channel: grpc.Channel,
    metadata: Sequence[tuple[str, str]],
    ctx: Context,
    queries: Sequence[BenchQuery],
    *,
    repetitions: int,
    warmup: int,
    raw_repetitions: int,
    raw_warmup: int,
    today: date,
    log: Callable[[str], None],
    budget_s: float = float("inf"),
    timeout_s: float = 600.0,
) -> list[Measurement]:
    """Runs each question warmup + repetitions times through the RPC, then raw_warmup +
    raw_repetitions times as raw SQL, one at a time; warm-up runs are not timed, and a side
    stops repeating once its timed runs took budget_s (after MIN_REPETITIONS of them)."""
    results = []
    for query in queries:
        found = Measurement(query.name, query.what, query.target_ms)
        response: list[Row] | None = None
        try:
            for timed in _runs(warmup, repetitions, budget_s, found.rpc_s):
                started = time.perf_counter()
                response = query.answer(channel, ctx.site_id, today, metadata, timeout_s)
                if timed:
                    found.rpc_s.append(time.perf_counter() - started)
        except grpc.RpcError as error:
            found.error = f"{error.code().name}: {error.details()}"
        raw = None
        for timed in _runs(raw_warmup, raw_repetitions, budget_s, found.raw_s):
            started = time.perf_counter()
            raw = query.raw(ctx)
            if timed:
                found.raw_s.append(time.perf_counter() - started)
        if response is not None and raw is not None and found.error is None:
            found.difference = differences(response, raw)
        verdict = (
            f"FAILED ({found.error})"
            if found.error
            else ("answers agree" if found.difference is None else "ANSWERS DIFFER")
        )
        log(
            f"{query.name}: Query p50 {found.p50_ms} ms, p95 {found.p95_ms} ms; "
            f"raw SQL p95 {found.raw_p95_ms} ms; speedup {found.speedup}; {verdict}"
        )
        results.append(found)
    return results
