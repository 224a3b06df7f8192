"""Turns JetStream MAX_DELIVERIES advisories into dead letters.

JetStream gives up on a message after max_deliver unacknowledged deliveries (a processor that keeps
crashing on it, say) and publishes an advisory naming the stream sequence. The advisories are kept
in a stream of their own (analytics_bus.ensure_consumer), so one published while every processor
was down is handled when one comes back. The processor fetches the original message by sequence
and copies it to the dead-letter stream with reason max_deliveries.

Limits of nats-server 2.9: the advisory is the only signal (the consumer drops the message from its
pending set without terminating it, and its ack floor stays below it for ever, which monitoring
shows as a redelivered message); a pull consumer only notices the exhaustion at its next delivery
attempt, i.e. while some processor is fetching; the original must still be in the stream, so it is
found only within the stream's max_age; and an advisory published before its capture stream
existed (first start-up) is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import structlog
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from analytics_bus import BusConfig, deadletter
from analytics_bus.deadletter import Reason
from processor_service import metrics

log = structlog.get_logger("analytics.processor")


class MaxDeliveriesWatcher:
    def __init__(self, js: JetStreamContext, bus: BusConfig, *, fetch_timeout_s: float = 1.0) -> None:
        self._js = js
        self._bus = bus
        self._fetch_timeout_s = fetch_timeout_s
        self._stopping = asyncio.Event()
        self.dead_lettered = 0

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        subscription = await self._js.pull_subscribe(
            self._bus.advisory_subject, durable=self._bus.consumer, stream=self._bus.advisory_stream
        )
        try:
            await self._watch(subscription)
        finally:
            with contextlib.suppress(Exception):  # else the connection's drain waits for it
                await subscription.unsubscribe()

    async def _watch(self, subscription: JetStreamContext.PullSubscription) -> None:
        while not self._stopping.is_set():
            try:
                advisories = await subscription.fetch(16, timeout=self._fetch_timeout_s)
            except (NatsTimeoutError, TimeoutError):
                continue
            except Exception as error:
                log.warning("advisory fetch failed", error=str(error) or type(error).__name__)
                await asyncio.sleep(1)
                continue
            for advisory in advisories:
                if await self._handle(advisory.data):
                    await advisory.ack()
                else:
                    await advisory.nak(delay=5)

    async def _handle(self, payload: bytes) -> bool:
        """True when done with the advisory (copied, or nothing left to copy)."""
        try:
            body = json.loads(payload)
            sequence = int(body["stream_seq"])
            deliveries = int(body.get("deliveries", 0))
        except (ValueError, KeyError, TypeError):
            log.error("malformed max-deliveries advisory", payload=payload[:200])
            return True
        try:
            original = await self._js.get_msg(self._bus.stream, sequence)
        except NotFoundError:
            log.error("message given up by JetStream is no longer in the stream", stream_sequence=sequence)
            return True
        except Exception as error:
            log.warning(
                "cannot read message given up by JetStream", error=str(error), stream_sequence=sequence
            )
            return False
        try:
            dead = await deadletter.publish(
                self._js,
                self._bus.deadletter,
                original.data or b"",
                reason=Reason.MAX_DELIVERIES,
                error=f"delivered {deliveries} times without an acknowledgement",
                original_stream=self._bus.stream,
                original_sequence=sequence,
                original_subject=original.subject or self._bus.subject,
                deliveries=deliveries,
                original_msg_id=(original.headers or {}).get(deadletter.MSG_ID),
            )
        except Exception as error:
            log.warning("dead letter could not be stored", error=str(error), stream_sequence=sequence)
            return False
        self.dead_lettered += 1
        metrics.DEAD_LETTERS.labels(str(Reason.MAX_DELIVERIES)).inc()
        log.warning(
            "message dead-lettered",
            reason=str(Reason.MAX_DELIVERIES),
            stream_sequence=sequence,
            deliveries=deliveries,
            dead_letter_sequence=dead,
        )
        return True
