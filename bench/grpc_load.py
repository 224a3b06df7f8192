"""gRPC load: TrackBatch (end to end, counted in the database) and unary Track, closed loop."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import grpc

from analytics.v1 import ingest_pb2
from bench.environment import Site
from bench.events import USER_AGENTS, Encoder
from bench.progress import Counters

_TRACK = "/analytics.v1.IngestService/Track"
_TRACK_BATCH = "/analytics.v1.IngestService/TrackBatch"
_CALL_TIMEOUT_S = 30.0
_MAX_PREBUILT_BYTES = 512 * 1024 * 1024


@dataclass
class LoadResult:
    """What the callers saw; ``acked`` holds (first counter, count) runs of acknowledged event ids."""

    counters: Counters = field(default_factory=Counters)
    acked: list[tuple[int, int]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    first_send: float = 0.0
    last_answer: float = 0.0

    def fail(self, code: str) -> None:
        self.counters.failed += 1
        self.errors[code] = self.errors.get(code, 0) + 1

    def latency_ms(self, quantile: float) -> float | None:
        if not self.latencies_s:
            return None
        ordered = sorted(self.latencies_s)
        return round(ordered[min(len(ordered) - 1, int(quantile * len(ordered)))] * 1000, 3)


def _metadata(site: Site, caller: int) -> tuple[tuple[str, str], ...]:
    # The bench connects from loopback, a trusted proxy by default: forwarded client facts count.
    return (
        ("x-api-key", site.api_key),
        ("x-forwarded-user-agent", USER_AGENTS[caller % len(USER_AGENTS)]),
        ("x-forwarded-for", f"198.51.100.{caller % 250 + 1}"),
        ("cf-ipcountry", ("DE", "US", "FR", "JP")[caller % 4]),
    )


class _Channels:
    """One channel (its own TCP connection) per caller, so SO_REUSEPORT replicas all get traffic."""

    def __init__(self, address: str, count: int) -> None:
        # A local subchannel pool stops grpc from sharing one connection among equal channels.
        options = [("grpc.use_local_subchannel_pool", 1)]
        self.channels = [grpc.aio.insecure_channel(address, options=options) for _ in range(count)]

    async def __aenter__(self) -> list[grpc.aio.Channel]:
        await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in self.channels)), 10)
        return self.channels

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(c.close() for c in self.channels), return_exceptions=True)


def prebuild(encoder: Encoder, batch_size: int, events: int) -> list[bytes]:
    """Encoded batches for the first ``events`` events (bounded in memory); the rest are built on demand."""
    batches: list[bytes] = []
    size = 0
    for n in range(max(1, events // batch_size)):
        batch = encoder.batch(n * batch_size, batch_size)
        size += len(batch)
        if size > _MAX_PREBUILT_BYTES:
            break
        batches.append(batch)
    return batches


async def track_batches(
    address: str,
    site: Site,
    encoder: Encoder,
    *,
    seconds: float,
    callers: int,
    batch_size: int,
    prebuilt: list[bytes],
    result: LoadResult,
) -> None:
    """``callers`` concurrent TrackBatch loops for ``seconds``; batch n holds counters n*size …"""
    numbers = itertools.count()
    async with _Channels(address, callers) as channels:
        calls = [
            channel.unary_unary(
                _TRACK_BATCH,
                request_serializer=None,
                response_deserializer=ingest_pb2.TrackBatchResponse.FromString,
            )
            for channel in channels
        ]
        result.first_send = time.monotonic()
        deadline = result.first_send + seconds

        async def caller(index: int) -> None:
            call = calls[index]
            metadata = _metadata(site, index)
            while time.monotonic() < deadline:
                n = next(numbers)
                first = n * batch_size
                payload = prebuilt[n] if n < len(prebuilt) else encoder.batch(first, batch_size)
                result.counters.sent += batch_size
                started = time.monotonic()
                try:
                    reply = await call(payload, metadata=metadata, timeout=_CALL_TIMEOUT_S)
                except grpc.aio.AioRpcError as error:
                    result.fail(error.code().name)
                    await asyncio.sleep(0.05)  # no hot loop against a failing service
                    continue
                now = time.monotonic()
                result.last_answer = now
                result.latencies_s.append(now - started)
                if reply.accepted != batch_size:
                    result.fail(f"accepted {reply.accepted} of {batch_size}")
                    continue
                result.counters.acked += batch_size
                result.acked.append((first, batch_size))

        await asyncio.gather(*(caller(i) for i in range(callers)))


async def track_singles(
    address: str, site: Site, encoder: Encoder, *, seconds: float, callers: int, result: LoadResult
) -> None:
    """``callers`` concurrent unary Track loops for ``seconds``, one event per call."""
    numbers = itertools.count()
    payloads = [encoder.track(n) for n in range(int(seconds * 5000))]
    async with _Channels(address, callers) as channels:
        calls = [
            channel.unary_unary(
                _TRACK, request_serializer=None, response_deserializer=ingest_pb2.TrackResponse.FromString
            )
            for channel in channels
        ]
        result.first_send = time.monotonic()
        deadline = result.first_send + seconds

        async def caller(index: int) -> None:
            call = calls[index]
            metadata = _metadata(site, index)
            while time.monotonic() < deadline:
                n = next(numbers)
                payload = payloads[n] if n < len(payloads) else encoder.track(n)
                result.counters.sent += 1
                started = time.monotonic()
                try:
                    await call(payload, metadata=metadata, timeout=_CALL_TIMEOUT_S)
                except grpc.aio.AioRpcError as error:
                    result.fail(error.code().name)
                    await asyncio.sleep(0.05)
                    continue
                now = time.monotonic()
                result.last_answer = now
                result.latencies_s.append(now - started)
                result.counters.acked += 1
                result.acked.append((n, 1))

        await asyncio.gather(*(caller(i) for i in range(callers)))
