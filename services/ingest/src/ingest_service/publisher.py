"""Group commit: events of concurrent requests share one JetStream message; callers wait for its PubAck."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field

import structlog
from nats.js import JetStreamContext

from analytics.v1 import bus_pb2
from analytics_bus.health import BusHealth
from ingest_service import metrics

log = structlog.get_logger("analytics.ingest.publisher")

# How long past the publish timeout a caller may wait: the time to settle its future and answer.
ANSWER_MARGIN_S = 0.25


class PublishError(Exception):
    """JetStream did not acknowledge the events in time: whether they are stored is unknown."""


@dataclass(slots=True)
class _Pending:
    encoded: bytes  # the caller's events as EventBatch.events fields, ready to concatenate
    count: int
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


# EventBatch's fields as they appear on the wire: batch_id = 1 and events = 2, both length-delimited.
_BATCH_ID_TAG = b"\x0a"
_EVENT_TAG = b"\x12"


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_events(events: list[bus_pb2.EnrichedEvent]) -> bytes:
    """The events as EventBatch.events fields: each event is serialized once, by its own caller."""
    parts: list[bytes] = []
    for event in events:
        data = event.SerializeToString()
        parts += (_EVENT_TAG, _varint(len(data)), data)
    return b"".join(parts)


def encode_batch(batch_id: str, encoded_events: list[bytes]) -> bytes:
    """An EventBatch, byte for byte what protobuf would write: fields concatenate on the wire."""
    raw_id = batch_id.encode()
    return b"".join((_BATCH_ID_TAG, _varint(len(raw_id)), raw_id, *encoded_events))


class GroupCommitPublisher:
    """Packs the events of concurrent callers into bus messages of bounded size and delay.

    A caller's events always travel in one message, so a request is stored whole or not at all.
    Several messages may await their PubAck at once (``max_in_flight``), so a slow acknowledgement
    does not stop the next batch from forming.
    """

    def __init__(
        self,
        js: JetStreamContext,
        subject: str,
        *,
        max_batch_bytes: int = 512 * 1024,
        max_batch_events: int = 5000,
        max_delay_s: float = 0.002,
        ack_timeout_s: float = 5.0,
        max_in_flight: int = 16,
        health: BusHealth | None = None,
    ) -> None:
        self._js = js
        self._subject = subject
        self._max_bytes = max_batch_bytes
        self._max_events = max_batch_events
        self._max_delay_s = max_delay_s
        self._ack_timeout_s = ack_timeout_s
        self._health = health
        self._queue: list[_Pending] = []
        self._queued_bytes = 0
        self._queued_events = 0
        self._wakeup = asyncio.Event()
        self._full = asyncio.Event()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._publishes: set[asyncio.Task[None]] = set()
        self._closed = False
        self._flusher = asyncio.create_task(self._run(), name="group-commit")
        self.messages_published = 0

    async def publish(self, events: list[bus_pb2.EnrichedEvent]) -> None:
        """Returns once JetStream has durably stored ``events``; raises PublishError otherwise, at
        the latest the publish timeout (plus a small margin) after the call, whatever the bus does.

        After a PublishError the events may or may not be stored (a publish may have reached the
        server and only its acknowledgement been lost): retrying them with their event ids is safe.
        """
        if self._closed:
            raise PublishError("ingest is shutting down")
        if self._health is not None and not self._health.up:
            # Known down: answer now rather than queue behind publishes that wait out their timeout.
            raise PublishError("event queue unreachable, retry later")
        pending = _Pending(encode_events(events), len(events))
        self._queue.append(pending)
        self._queued_bytes += len(pending.encoded)
        self._queued_events += pending.count
        self._wakeup.set()
        if self._queued_bytes >= self._max_bytes or self._queued_events >= self._max_events:
            self._full.set()
        # A cancelled caller cancels only its own future; _publish skips futures already done. The
        # shield keeps a caller that stops waiting from cancelling the future _publish will settle.
        try:
            async with asyncio.timeout(self._ack_timeout_s + ANSWER_MARGIN_S):
                await asyncio.shield(pending.done)
        except TimeoutError:
            raise PublishError("event queue did not acknowledge in time, retry later") from None

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # Wait a moment for concurrent callers to join, unless the batch is already full.
            if self._max_delay_s > 0 and not self._full.is_set() and not self._closed:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._max_delay_s):
                        await self._full.wait()
            group = self._take()
            await self._slots.acquire()
            task = asyncio.create_task(self._publish(group))
            self._publishes.add(task)
            task.add_done_callback(self._publishes.discard)

    def _take(self) -> list[_Pending]:
        group: list[_Pending] = []
        size = events = 0
        while self._queue:
            nxt = self._queue[0]
            if group and (size + len(nxt.encoded) > self._max_bytes or events + nxt.count > self._max_events):
                break
            group.append(self._queue.pop(0))
            size += len(nxt.encoded)
            events += nxt.count
        self._queued_bytes -= size
        self._queued_events -= events
        if self._queued_bytes < self._max_bytes and self._queued_events < self._max_events:
            self._full.clear()
        return group

    async def _publish(self, group: list[_Pending]) -> None:
        try:
            batch_id = uuid.uuid4().hex
            count = sum(pending.count for pending in group)
            payload = encode_batch(batch_id, [pending.encoded for pending in group])
            metrics.BATCH_EVENTS.observe(count)
            metrics.BATCH_BYTES.observe(len(payload))
            started = time.perf_counter()
            try:
                await self._js.publish(
                    self._subject, payload, timeout=self._ack_timeout_s, headers={"Nats-Msg-Id": batch_id}
                )
            except Exception as error:
                metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
                metrics.PUBLISH_FAILURES.inc()
                reason = str(error) or type(error).__name__
                log.warning("publish failed", error=reason, events=count)
                if self._health is not None:
                    self._health.failed(reason)
                failure = PublishError("event queue unavailable, retry later")
                for pending in group:
                    if not pending.done.done():
                        pending.done.set_exception(failure)
                        pending.done.exception()  # the caller re-raises it; avoid "never retrieved"
                return
            metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
            self.messages_published += 1
            if self._health is not None:
                self._health.succeeded()
            for pending in group:
                if not pending.done.done():
                    pending.done.set_result(None)
        finally:
            self._slots.release()

    async def close(self) -> None:
        """Publishes everything already queued, then stops."""
        self._closed = True
        self._wakeup.set()
        self._full.set()
        await self._flusher
        if self._publishes:
            await asyncio.gather(*self._publishes, return_exceptions=True)
