"""Per-key token buckets: a key may send ``rate`` events per second with bursts up to ``burst``."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """In-process token buckets, one per API key.

    Each ingest process keeps its own buckets, so with N processes behind one address a key can
    reach N times its limit; the README says so.
    """

    def __init__(self, default_rate: float, default_burst: float, max_keys: int = 100_000) -> None:
        self.default_rate = default_rate
        self.default_burst = default_burst
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._max_keys = max_keys

    def take(self, key_id: str, cost: int, rate: float = 0, burst: float = 0) -> float | None:
        """Takes ``cost`` tokens; returns None when allowed, else the seconds to wait before retrying."""
        rate = rate or self.default_rate
        burst = max(burst or self.default_burst, 1.0)
        now = time.monotonic()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = _Bucket(burst, now)
            self._buckets[key_id] = bucket
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key_id)
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
        # A batch larger than the burst could never pass; it costs a full bucket instead.
        need = min(float(cost), burst)
        if bucket.tokens >= need:
            bucket.tokens -= need
            return None
        return (need - bucket.tokens) / rate
