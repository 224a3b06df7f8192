"""Per-event cost of ingest's enrichment: python services/ingest/bench/bench_enrich.py.

Times what the servicer does with validated events: picking the visitor keys (the day's salt when
an event has no user_id, the identity secrets of the sites whose events have one; both from their
caches, as on every request after a site's first) and ``enrich()`` per event, for anonymous,
identified and half-and-half traffic, in batches of ``--batch`` and one event at a time. An
in-process auth server answers the caches' first fetch. ``validate_event`` is timed too, as the
scale the enrichment is measured against. Prints microseconds per event, the best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc

from analytics.v1 import auth_pb2, auth_pb2_grpc, bus_pb2, events_pb2
from ingest_service.enrich import useragent
from ingest_service.enrich.request import RequestInfo
from ingest_service.identity import IdentitySecretCache
from ingest_service.salts import SaltCache
from ingest_service.servicer import enrich_events
from ingest_service.validation import Limits, RequestClock, validate_event

TOKEN = "bench-internal-token"  # noqa: S105 - only the in-process keys server below sees it
NOW = datetime.now(UTC)
INFO = RequestInfo(
    client_ip="203.0.113.7",
    user_agent=(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36"
    ),
    country="DE",
    origin="https://shop.example",
)


class _Keys(auth_pb2_grpc.AuthServiceServicer):
    """Answers the two key look-ups with fixed keys: the caches ask once, the timed loop never."""

    async def GetVisitorSalts(
        self, request: auth_pb2.GetVisitorSaltsRequest, context: Any
    ) -> auth_pb2.GetVisitorSaltsResponse:
        return auth_pb2.GetVisitorSaltsResponse(
            salts=[auth_pb2.VisitorSalt(day=NOW.date().isoformat(), salt=b"s" * 32)]
        )

    async def GetIdentitySecret(
        self, request: auth_pb2.GetIdentitySecretRequest, context: Any
    ) -> auth_pb2.GetIdentitySecretResponse:
        return auth_pb2.GetIdentitySecretResponse(secret=b"i" * 32)


def _events(count: int, site: str, identified: float) -> list[events_pb2.Event]:
    signed_in = round(count * identified)
    return [
        events_pb2.Event(
            site_id=site,
            event_type="pageview",
            url=f"https://shop.example/products/{i % 50}?utm_source=news&utm_medium=email",
            referrer="https://www.google.com/",
            user_id=f"user-{i}" if i < signed_in else "",
        )
        for i in range(count)
    ]


def _validated(events: list[events_pb2.Event]) -> list[bus_pb2.EnrichedEvent]:
    clock = RequestClock(NOW)
    out: list[bus_pb2.EnrichedEvent] = []
    for event in events:
        result, problems = validate_event(event, "", clock, Limits())
        assert result is not None, problems
        out.append(result)
    return out


async def _enrich_request(
    events: list[bus_pb2.EnrichedEvent], salts: SaltCache, secrets: IdentitySecretCache
) -> None:
    # The servicer's steps after admission (IngestServicer._accept).
    await enrich_events(events, INFO, NOW.date(), salts, secrets)


async def _best_us_per_event(run: Callable[[], Awaitable[None]], events: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter_ns()
        await run()
        best = min(best, (time.perf_counter_ns() - started) / 1000 / events)
    return best


async def main(batch: int, rounds: int, repeats: int) -> None:
    useragent.prepare()
    server = grpc.aio.server()
    auth_pb2_grpc.add_AuthServiceServicer_to_server(_Keys(), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    site = str(uuid.uuid4())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        salts, secrets = SaltCache(channel, TOKEN), IdentitySecretCache(channel, TOKEN)
        print(f"us per event, best of {repeats}; batches of {batch} and single events")
        print(f"{'traffic':<18}{'validate':>10}{'enrich (batch)':>16}{'enrich (single)':>17}")
        for name, share in (("anonymous", 0.0), ("identified", 1.0), ("half identified", 0.5)):
            raw = _events(batch, site, share)
            events = _validated(raw)
            await _enrich_request(events, salts, secrets)  # the first fetches, outside the timing

            async def validate_batches(raw: list[events_pb2.Event] = raw) -> None:
                for _ in range(rounds):
                    _validated(raw)

            async def enrich_batches(events: list[bus_pb2.EnrichedEvent] = events) -> None:
                for _ in range(rounds):
                    await _enrich_request(events, salts, secrets)

            async def enrich_singles(events: list[bus_pb2.EnrichedEvent] = events) -> None:
                for _ in range(rounds):
                    for event in events:
                        await _enrich_request([event], salts, secrets)

            total = batch * rounds
            validate_us = await _best_us_per_event(validate_batches, total, repeats)
            batch_us = await _best_us_per_event(enrich_batches, total, repeats)
            single_us = await _best_us_per_event(enrich_singles, total, repeats)
            print(f"{name:<18}{validate_us:>10.2f}{batch_us:>16.2f}{single_us:>17.2f}")
    await server.stop(None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.batch, arguments.rounds, arguments.repeats))
