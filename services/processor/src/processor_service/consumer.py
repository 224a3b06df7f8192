"""The pull loop: fetch batches, store them, ack only after the transaction commits."""

from __future__ import annotations

import asyncio

import psycopg
import structlog
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from analytics.v1 import bus_pb2
from analytics_bus import BusConfig
from processor_service.writer import EventWriter, rows_of

log = structlog.get_logger("analytics.processor")


class Consumer:
    def __init__(
        self,
        js: JetStreamContext,
        writer: EventWriter,
        bus: BusConfig,
        *,
        fetch_batch: int,
        fetch_timeout_s: float,
        retry_delay_s: float,
    ) -> None:
        self._js = js
        self._writer = writer
        self._bus = bus
        self._fetch_batch = fetch_batch
        self._fetch_timeout_s = fetch_timeout_s
        self._retry_delay_s = retry_delay_s
        self._stopping = asyncio.Event()
        self.stored = 0

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        subscription = await self._js.pull_subscribe(
            self._bus.subject, durable=self._bus.consumer, stream=self._bus.stream
        )
        log.info("consuming", stream=self._bus.stream, consumer=self._bus.consumer)
        while not self._stopping.is_set():
            try:
                messages = await subscription.fetch(self._fetch_batch, timeout=self._fetch_timeout_s)
            except (NatsTimeoutError, TimeoutError):
                continue
            except Exception as error:  # connection loss: the client reconnects by itself
                log.warning("fetch failed", error=str(error) or type(error).__name__)
                await asyncio.sleep(0.5)
                continue
            await self._handle(messages)

    async def _handle(self, messages: list[Msg]) -> None:
        good: list[Msg] = []
        batches: list[bus_pb2.EventBatch] = []
        for message in messages:
            try:
                batch = bus_pb2.EventBatch.FromString(message.data)
            except DecodeError:
                log.error("undecodable message terminated", subject=message.subject, size=len(message.data))
                await message.term()
                continue
            good.append(message)
            batches.append(batch)
        if not good:
            return
        try:
            inserted = await self._writer.write(rows_of(batches))
        except (psycopg.OperationalError, psycopg.errors.AdminShutdown) as error:
            # Transient: hand the messages back with a delay; they are redelivered and, thanks to the
            # idempotent insert, counted once whenever the database is back.
            log.warning("database unavailable, retrying later", error=str(error).strip(), messages=len(good))
            await asyncio.gather(*(m.nak(delay=self._retry_delay_s) for m in good))
            await asyncio.sleep(self._retry_delay_s)
            return
        await asyncio.gather(*(m.ack() for m in good))
        self.stored += inserted
        log.debug("batch stored", messages=len(good), inserted=inserted)
