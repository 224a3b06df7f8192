"""The pull loop: fetch batches, store them, ack only after the transaction commits.

Transient database errors never hand messages back: the batch stays in hand, its ack deadline is
pushed out with in_progress(), and the transaction is retried with exponential backoff until the
database answers (or the process is asked to stop, when the messages are released for
redelivery). Messages that can never be stored go to the dead-letter stream and are terminated.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import psycopg
import structlog
from google.protobuf.message import DecodeError
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from analytics.v1 import bus_pb2
from analytics_bus import BusConfig, deadletter
from analytics_bus.deadletter import Reason
from analytics_bus.health import round_trip
from processor_service import metrics
from processor_service.live import LivePublisher
from processor_service.writer import EventWriter, InvalidEvent, Row, WriteResult, rows_of

log = structlog.get_logger("analytics.processor")

# The database refused these rows themselves: retrying cannot help, but splitting the batch finds
# the message that carries them.
_REJECTED = (psycopg.DataError, psycopg.IntegrityError)
# Lock contention between replicas (deadlock, serialization): retried at once, not an outage.
_CONTENTION = psycopg.errors.TransactionRollback
_ACK_ATTEMPTS = 5
_ACK_TIMEOUT_S = 1


class DatabaseHealth(Protocol):
    """Told when writes start failing and when they work again (health NOT_SERVING / SERVING)."""

    async def database_down(self, error: str) -> None: ...

    async def database_up(self) -> None: ...


class _Stopping(Exception):
    """Raised inside a batch when the process stops while the database is still failing."""


@dataclass(slots=True)
class _InHand:
    message: Msg
    rows: list[Row]


class Consumer:
    def __init__(
        self,
        nc: Client,
        writer: EventWriter,
        bus: BusConfig,
        *,
        fetch_batch: int,
        fetch_timeout_s: float,
        fetch_linger_s: float = 0.0,
        max_inflight: int = 2,
        retry_delay_s: float = 0.25,
        retry_max_delay_s: float = 5.0,
        health: DatabaseHealth | None = None,
        live: LivePublisher | None = None,
    ) -> None:
        # One round trip confirms a batch of acks; JetStream pulls and dead letters.
        self._nc = nc
        self._js = nc.jetstream()
        self._confirm = nc.jetstream(timeout=_ACK_TIMEOUT_S)
        self._writer = writer
        self._bus = bus
        self._fetch_batch = fetch_batch
        self._fetch_timeout_s = fetch_timeout_s
        self._fetch_linger_s = fetch_linger_s
        self._max_inflight = max_inflight
        self._retry_delay_s = retry_delay_s
        self._retry_max_delay_s = retry_max_delay_s
        self._health = health
        self._live = live
        ack_wait_s = bus.backoff_s[0] if bus.backoff_s else bus.ack_wait_s
        # in_progress() well before the ack deadline, so a slow or retried batch is never redelivered.
        self._keepalive_s = max(0.5, ack_wait_s / 4)
        self._stopping = asyncio.Event()
        self._failure: BaseException | None = None
        self.stored = 0
        self.dead_lettered = 0
        self.transactions = 0  # committed batches

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        subscription = await self._js.pull_subscribe(
            self._bus.subject, durable=self._bus.consumer, stream=self._bus.stream
        )
        log.info("consuming", stream=self._bus.stream, consumer=self._bus.consumer)
        # Up to max_inflight batches at once: one converts and copies in Python while the other's
        # statements run in PostgreSQL, so both cores work.
        slots = asyncio.Semaphore(self._max_inflight)
        tasks: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            slots.release()
            if not task.cancelled() and task.exception() is not None and self._failure is None:
                self._failure = task.exception()
                self._stopping.set()

        try:
            while not self._stopping.is_set():
                await slots.acquire()
                messages = await self._fetch(subscription) if not self._stopping.is_set() else []
                if not messages:
                    slots.release()
                    continue
                task = asyncio.create_task(self._handle(messages), name="batch")
                tasks.add(task)
                task.add_done_callback(finished)
                if len(messages) < self._fetch_batch and self._fetch_linger_s > 0:
                    # A trickle: let messages gather so that the next transaction carries many.
                    # Each transaction costs far more than one more row in it; under load the
                    # fetches come back full and never wait here.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self._fetch_linger_s)
        finally:
            if tasks:
                await asyncio.wait(set(tasks))
            # An open pull subscription keeps the connection's drain waiting until its timeout.
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        if self._failure is not None:
            raise self._failure

    async def _fetch(self, subscription: JetStreamContext.PullSubscription) -> list[Msg]:
        try:
            return list(await subscription.fetch(self._fetch_batch, timeout=self._fetch_timeout_s))
        except (NatsTimeoutError, TimeoutError):
            return []
        except Exception as error:  # connection loss: the client reconnects by itself
            log.warning("fetch failed", error=str(error) or type(error).__name__)
            await asyncio.sleep(0.5)
            return []

    async def _handle(self, messages: list[Msg]) -> None:
        keepalive = asyncio.create_task(self._keep_alive(messages), name="keepalive")
        try:
            in_hand: list[_InHand] = []
            for message in messages:
                try:
                    batch = bus_pb2.EventBatch.FromString(message.data)
                except DecodeError as error:
                    await self._dead_letter(message, Reason.UNDECODABLE, f"not an EventBatch: {error}")
                    continue
                try:
                    rows = rows_of([batch])
                except InvalidEvent as error:
                    await self._dead_letter(message, Reason.INVALID, str(error))
                    continue
                in_hand.append(_InHand(message, rows))
            await self._store(in_hand)
        finally:
            keepalive.cancel()

    async def _keep_alive(self, messages: Sequence[Msg]) -> None:
        while True:
            await asyncio.sleep(self._keepalive_s)
            # Acked or terminated messages ignore it; a failure here only means NATS is away.
            await asyncio.gather(*(m.in_progress() for m in messages), return_exceptions=True)

    async def _store(self, in_hand: list[_InHand]) -> None:
        if not in_hand:
            return
        rows = [row for item in in_hand for row in item.rows]
        try:
            result = await self._write(rows)
        except _REJECTED as error:
            if len(in_hand) == 1:
                await self._dead_letter(in_hand[0].message, Reason.REJECTED, _first_line(error))
                return
            middle = len(in_hand) // 2
            await self._store(in_hand[:middle])
            await self._store(in_hand[middle:])
            return
        except _Stopping:
            # Released for redelivery (to another replica, or to this one after the restart).
            await asyncio.gather(*(item.message.nak() for item in in_hand), return_exceptions=True)
            log.info("stopping: batch released unacknowledged", messages=len(in_hand))
            return
        await self._ack([item.message for item in in_hand])
        self.stored += result.inserted
        self.transactions += 1
        metrics.BATCHES.inc()
        metrics.MESSAGES.inc(len(in_hand))
        metrics.ROWS_INSERTED.inc(result.inserted)
        metrics.DUPLICATES_SKIPPED.inc(len(rows) - result.inserted)
        log.debug("batch stored", messages=len(in_hand), inserted=result.inserted, sessions=result.sessions)
        if self._live is not None:
            await self._live.publish(result.sites, rows)

    async def _ack(self, messages: list[Msg]) -> None:
        """Acks every message, then one round trip confirms the server has read them.

        NATS handles a connection's messages in order, so the answer vouches for all the acks before
        it: one round trip per batch instead of one per message. When the connection breaks
        first, the acks are sent again as confirmed requests, retried across a short outage: an
        ack lost in a reconnect would leave its message pending until the ack wait expires and it
        is redelivered (stored once, but the stream looks busy for a minute).
        """
        try:
            for message in messages:
                await message.ack()
            await round_trip(self._confirm)
            return
        except Exception as error:
            log.info("acks not confirmed, sending them again", error=str(error) or type(error).__name__)
        pending = messages
        for attempt in range(_ACK_ATTEMPTS):
            # What Msg.ack_sync sends; called directly because the message counts as acked already.
            outcomes = await asyncio.gather(
                *(self._nc.request(m.reply, Msg.Ack.Ack, timeout=_ACK_TIMEOUT_S) for m in pending),
                return_exceptions=True,
            )
            pending = [
                m for m, outcome in zip(pending, outcomes, strict=True) if isinstance(outcome, Exception)
            ]
            if not pending:
                return
            if attempt + 1 < _ACK_ATTEMPTS:
                await asyncio.sleep(_ACK_TIMEOUT_S)
        # Committed already: a redelivery is stored once, so this costs time, not correctness.
        log.warning("acks not confirmed; those messages will be redelivered", messages=len(pending))

    async def _write(self, rows: list[Row]) -> WriteResult:
        delay = self._retry_delay_s
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                result = await self._writer.write(rows)
            except _REJECTED:
                raise
            except psycopg.Error as error:
                attempt += 1
                metrics.WRITE_RETRIES.inc()
                message = _first_line(error)
                if self._stopping.is_set():
                    raise _Stopping from error
                contention = isinstance(error, _CONTENTION)
                if not contention and self._health is not None:
                    await self._health.database_down(message)
                log.warning(
                    "database write failed, retrying",
                    error=message,
                    error_type=type(error).__name__,
                    attempt=attempt,
                    retry_in_s=round(delay, 3),
                    rows=len(rows),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                if self._stopping.is_set():
                    raise _Stopping from error
                delay = min(delay * 2, self._retry_max_delay_s)
                continue
            metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
            if attempt:
                log.info("database write succeeded after retrying", attempts=attempt + 1)
            if self._health is not None:
                await self._health.database_up()
            return result

    async def _dead_letter(self, message: Msg, reason: Reason, error: str) -> None:
        metadata = message.metadata
        try:
            sequence = await deadletter.publish(
                self._js,
                self._bus.deadletter,
                message.data,
                reason=reason,
                error=error,
                original_stream=metadata.stream,
                original_sequence=metadata.sequence.stream,
                original_subject=message.subject,
                deliveries=metadata.num_delivered,
                original_msg_id=(message.headers or {}).get(deadletter.MSG_ID),
            )
        except Exception as failure:
            # Not copied, so not terminated: it comes back and is tried again.
            log.error(
                "dead letter could not be stored",
                reason=str(reason),
                error=str(failure) or type(failure).__name__,
                stream_sequence=metadata.sequence.stream,
            )
            return
        await message.term()
        self.dead_lettered += 1
        metrics.DEAD_LETTERS.labels(str(reason)).inc()
        log.warning(
            "message dead-lettered",
            reason=str(reason),
            error=error,
            stream_sequence=metadata.sequence.stream,
            dead_letter_sequence=sequence,
            size=len(message.data),
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
