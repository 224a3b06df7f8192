"""Processor drain rate: python services/processor/bench/bench_pipeline.py POSTGRES_ADMIN_URL NATS_URL.

Publishes ``--events`` events as EventBatch messages of ``--batch-events`` each to a fresh stream,
then runs the processor's consumer (in this process, as ``python -m processor_service`` would) until
the stream is drained, and compares the rate with a binary COPY of the same rows into the hypertable.
``--visitors 8`` mimics the load generator of ``make bench`` (client event ids, server times);
``--visitors 0`` gives many short sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import bench_writer  # type: ignore[import-not-found]  # run as a script from this directory
import nats
import psycopg
from nats.js import JetStreamContext

from analytics.v1 import bus_pb2
from analytics_bus import (
    BusConfig,
    DeadLetterConfig,
    ensure_consumer,
    ensure_deadletter_stream,
    ensure_stream,
)
from analytics_db import create_pool, open_pool
from processor_service.consumer import Consumer
from processor_service.writer import EventWriter


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("admin_url")
    parser.add_argument("nats_url")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-events", type=int, default=1000)
    parser.add_argument("--visitors", type=int, default=8)
    parser.add_argument("--fetch-batch", type=int, default=64)
    parser.add_argument("--max-inflight", type=int, default=2)
    parser.add_argument("--no-sessions", action="store_true")
    parser.add_argument("--skip-raw", action="store_true")
    args = parser.parse_args()

    events = bench_writer.make_event_messages(args.events, args.visitors)
    suffix = uuid.uuid4().hex[:8].upper()
    bus = BusConfig(
        stream=f"BENCH_{suffix}",
        subject=f"bench.{suffix}",
        deadletter=DeadLetterConfig(stream=f"BENCH_{suffix}_DLQ", subject=f"bench.{suffix}.dlq"),
    )
    nc = await nats.connect(args.nats_url)
    js = nc.jetstream()
    await fill_stream(js, bus, events, args.batch_events)
    url = await bench_writer.fresh_database(args.admin_url)
    try:
        if not args.skip_raw:
            raw = await raw_rate(url, events)
            print(f"raw COPY       {raw:10.0f} rows/s", flush=True)
        rate, stored = await drain(url, nc, js, bus, args)
        print(f"processor      {rate:10.0f} events/s  stored={stored}", flush=True)
    finally:
        await bench_writer.drop_database(args.admin_url, url)
        for stream in (bus.stream, bus.deadletter.stream, bus.advisory_stream):
            await js.delete_stream(stream)
        await nc.close()


async def fill_stream(
    js: JetStreamContext, bus: BusConfig, events: list[bus_pb2.EnrichedEvent], batch_events: int
) -> None:
    await ensure_stream(js, bus)
    await ensure_deadletter_stream(js, bus.deadletter)
    await ensure_consumer(js, bus)
    payloads = [
        bus_pb2.EventBatch(events=events[i : i + batch_events]).SerializeToString()
        for i in range(0, len(events), batch_events)
    ]
    for i in range(0, len(payloads), 100):
        await asyncio.gather(*(js.publish(bus.subject, p) for p in payloads[i : i + 100]))


async def raw_rate(url: str, events: list[bus_pb2.EnrichedEvent]) -> float:
    rows = bench_writer.rows_of([bus_pb2.EventBatch(events=events)])
    rate: float = await bench_writer.raw_copy(url, rows, 10_000)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("TRUNCATE analytics.events")
    return rate


async def drain(
    url: str, nc: nats.NATS, js: JetStreamContext, bus: BusConfig, args: argparse.Namespace
) -> tuple[float, int]:
    pool = create_pool(url, name="bench", max_size=args.max_inflight + 1)
    await open_pool(pool)
    consumer = Consumer(
        nc,
        EventWriter(pool, sessions=not args.no_sessions),
        bus,
        fetch_batch=args.fetch_batch,
        fetch_timeout_s=0.2,
        max_inflight=args.max_inflight,
    )
    started = time.perf_counter()
    task = asyncio.create_task(consumer.run())
    while True:
        info = await js.consumer_info(bus.stream, bus.consumer)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    consumer.stop()
    await task
    await pool.close()
    return args.events / elapsed, consumer.stored


if __name__ == "__main__":
    asyncio.run(main())
