"""The live phase: many Server-Sent Events subscribers of one site through the edge while events
are ingested at a fixed rate; delivery latency from the ingest acknowledgement to the subscriber,
events dropped per subscriber, and ingest's call latency with and without the subscribers.

Every event's path carries its sequence number. A few "probe" subscribers parse every message and
time each event against its batch's acknowledgement; the others only count the events they get
and read the dropped count of their latest message, so the load generator's own CPU stays small.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from bench.environment import Site
from bench.openloop import _quantile
from bench.progress import say

# Events are sent in batches every 10 ms: 1000 events/s is 10 per request.
TICK_S = 0.01
_DROPPED = re.compile(rb'"dropped_events":"(\d+)"')
_PAGE = b'"page":"/live/'


@dataclass
class Subscriber:
    probe: bool
    events: int = 0
    dropped: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    latencies: list[float] = field(default_factory=list)


@dataclass
class Sender:
    acked_at: dict[int, float] = field(default_factory=dict)
    call_latencies: list[float] = field(default_factory=list)
    failed: int = 0
    sent: int = 0


async def _follow(
    http: aiohttp.ClientSession, site: Site, subscriber: Subscriber, sender: Sender, base: int
) -> None:
    headers = {"x-api-key": site.api_key}
    async with http.get(f"/v1/sites/{site.site_id}/live", headers=headers) as response:
        response.raise_for_status()
        async for line in response.content:
            if not line.startswith(b"data:"):
                continue
            subscriber.ready.set()
            now = time.monotonic()
            if subscriber.probe:
                message = orjson.loads(line[5:])
                subscriber.dropped = int(message.get("dropped_events", 0))
                for event in message.get("events", {}).get("events", []):
                    seq = int(event["page"].rsplit("/", 1)[1])
                    if seq >= base:
                        acked = sender.acked_at.get(seq)
                        # Stored and streamed before its answer came back: latency under zero.
                        subscriber.latencies.append(now - acked if acked is not None else 0.0)
                        subscriber.events += 1
            else:
                subscriber.events += line.count(_PAGE)
                found = _DROPPED.search(line)
                if found:
                    subscriber.dropped = int(found.group(1))


async def _send(
    http: aiohttp.ClientSession,
    site: Site,
    sender: Sender,
    *,
    rate: float,
    seconds: float,
    first_seq: int,
    prefix: str = "/live/",
) -> None:
    """Batches every TICK_S at ``rate`` events/s; each batch's acknowledgement time is its events'."""
    per_tick = max(1, round(rate * TICK_S))
    seq = first_seq
    tasks: set[asyncio.Task[None]] = set()
    started = time.monotonic()

    async def one(seqs: range) -> None:
        payload = [{"site_id": site.site_id, "event_type": "pageview", "path": f"{prefix}{n}"} for n in seqs]
        sent = time.monotonic()
        try:
            async with http.post(
                "/api/events/batch", json=payload, headers={"x-api-key": site.api_key}
            ) as response:
                await response.read()
                ok = response.status == 200
        except aiohttp.ClientError:
            ok = False
        done = time.monotonic()
        if ok:
            sender.call_latencies.append(done - sent)
            for n in seqs:
                sender.acked_at[n] = done
        else:
            sender.failed += len(seqs)

    tick = 0
    while time.monotonic() - started < seconds:
        batch = range(seq, seq + per_tick)
        seq += per_tick
        sender.sent += per_tick
        task = asyncio.create_task(one(batch))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        tick += 1
        await asyncio.sleep(max(0.0, started + tick * TICK_S - time.monotonic()))
    await asyncio.gather(*tasks)


def _ms(values: list[float], q: float) -> float | None:
    return _quantile(sorted(values), q)


async def live_phase(
    http_url: str, site: Site, *, subscribers: int, probes: int, rate: float, seconds: float
) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(base_url=http_url, connector=connector, timeout=timeout) as http:
        # Ingest alone first, for its call latency without subscribers.
        say(f"live: ingest alone at {rate:g} events/s for {min(seconds, 5.0):g} s")
        alone = Sender()
        # Paths of their own: late commits of these must not count as the subscribers' events.
        await _send(http, site, alone, rate=rate, seconds=min(seconds, 5.0), first_seq=0, prefix="/alone/")
        base = 10_000_000
        sender = Sender()
        followers = [Subscriber(probe=i < probes) for i in range(subscribers)]
        say(f"live: opening {subscribers} SSE subscribers ({probes} timing every event)")
        tasks = [asyncio.create_task(_follow(http, site, f, sender, base)) for f in followers]
        try:
            async with asyncio.timeout(120):
                await asyncio.gather(*(f.ready.wait() for f in followers))
            say(f"live: ingesting at {rate:g} events/s for {seconds:g} s with {subscribers} subscribers")
            await _send(http, site, sender, rate=rate, seconds=seconds, first_seq=base)
            acked = sender.sent - sender.failed
            # Let the last commits reach everyone (bounded: the figures then show what is missing).
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if all(f.events + f.dropped >= acked for f in followers):
                    break
                await asyncio.sleep(0.2)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                    await task
    latencies = [value for f in followers if f.probe for value in f.latencies]
    delivered = [f.events for f in followers]
    dropped = [f.dropped for f in followers]
    missing = [max(0, acked - f.events - f.dropped) for f in followers]
    return {
        "subscribers": subscribers,
        "probes": probes,
        "offered_events_per_s": rate,
        "seconds": seconds,
        "events_acknowledged": acked,
        "delivery_p50_ms": _ms(latencies, 0.5),
        "delivery_p99_ms": _ms(latencies, 0.99),
        "delivered_per_subscriber_min": min(delivered),
        "delivered_per_subscriber_median": statistics.median(delivered),
        "dropped_per_subscriber_max": max(dropped),
        "dropped_total": sum(dropped),
        "subscribers_with_drops": sum(1 for d in dropped if d),
        "missing_per_subscriber_max": max(missing),
        "ingest_alone_call_p50_ms": _ms(alone.call_latencies, 0.5),
        "ingest_alone_call_p99_ms": _ms(alone.call_latencies, 0.99),
        "ingest_call_p50_ms": _ms(sender.call_latencies, 0.5),
        "ingest_call_p99_ms": _ms(sender.call_latencies, 0.99),
        "ingest_failed_events": sender.failed + alone.failed,
    }
