"""Fan-out of the processors' live updates to a replica's subscribers.

One core-NATS subscription per site per replica, however many subscribers watch the site; every
subscriber has a bounded queue of its own. Delivery never waits for a subscriber: a full queue
loses its oldest message, and the subscriber is told how many events it has lost so far. One
summary per site per interval, computed once and shared by the site's subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from analytics.v1 import bus_pb2, live_pb2
from analytics_bus import live_subject
from query_service.live import metrics
from query_service.live.alerts import ALERT_KIND, KIND_HEADER

log = structlog.get_logger("analytics.query")

Summarize = Callable[[str], Awaitable[live_pb2.LiveSummary]]


class Batch:
    """Events committed together, queued as one object for every subscriber of the site that takes
    all of them (never copied per subscriber), and encoded as JSON once, by whichever of them is the
    first to send it over HTTP."""

    __slots__ = ("_json", "events")

    def __init__(self, events: live_pb2.LiveEvents) -> None:
        self.events = events
        self._json: bytes | None = None

    def json(self) -> bytes:
        """The LiveEvents in proto3 JSON with proto field names and every field printed, as
        Envoy's transcoder prints it."""
        if self._json is None:
            self._json = orjson.dumps(proto_json(self.events))
        return self._json


def proto_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


# A queued message: events as a Batch, anything else as the message itself.
Queued = Batch | live_pb2.StreamLiveResponse


def _weight(item: Queued) -> int:
    return len(item.events.events) if isinstance(item, Batch) else 0


class Subscriber:
    """One stream's queue, bounded in messages and in events, oldest dropped first, the dropped
    events counted."""

    def __init__(
        self,
        site_id: str,
        pages: frozenset[str],
        countries: frozenset[str],
        capacity: int,
        max_events: int = 10_000,
    ) -> None:
        self.site_id = site_id
        self.pages = pages
        self.countries = countries
        self._capacity = capacity
        self._max_events = max_events
        self._queued_events = 0
        self._queue: deque[Queued] = deque()
        self._ready = asyncio.Event()
        self.dropped_events = 0
        self.dropped_messages = 0
        self.closed = False

    def wants(self, event: live_pb2.LiveEvent) -> bool:
        return (not self.pages or event.page in self.pages) and (
            not self.countries or event.country in self.countries
        )

    def offer(self, item: Queued) -> None:
        """Never blocks: a full queue drops its oldest messages to make room."""
        weight = _weight(item)
        while self._queue and (
            len(self._queue) >= self._capacity or self._queued_events + weight > self._max_events
        ):
            lost = self._queue.popleft()
            self.dropped_messages += 1
            self.dropped_events += _weight(lost)
            metrics.DROPPED_EVENTS.inc(_weight(lost))
            self._queued_events -= _weight(lost)
        self._queue.append(item)
        self._queued_events += weight
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def take(self, timeout_s: float, most: int = 1) -> list[Queued]:
        """Up to ``most`` of the oldest queued items as they were queued (``dropped_events`` says
        what the subscriber has lost so far); none after ``timeout_s`` without one, or once the
        subscriber is closed."""
        if not self._queue and not self.closed:
            self._ready.clear()
            # asyncio.timeout rather than wait_for: no task per wait, and a thousand streams wait
            # once per committed batch each.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._ready.wait()
        if self.closed:
            return []
        items: list[Queued] = []
        while self._queue and len(items) < most:
            item = self._queue.popleft()
            self._queued_events -= _weight(item)
            items.append(item)
        return items

    async def next(self, timeout_s: float) -> live_pb2.StreamLiveResponse | None:
        """The oldest queued item, as a message stamped with the dropped count."""
        taken = await self.take(timeout_s)
        if not taken:
            return None
        (item,) = taken
        if isinstance(item, Batch):
            return live_pb2.StreamLiveResponse(dropped_events=self.dropped_events, events=item.events)
        item.dropped_events = self.dropped_events
        return item


@dataclass
class _Site:
    subscription: Subscription
    summaries: asyncio.Task[None]
    subscribers: set[Subscriber] = field(default_factory=set)
    summary: live_pb2.LiveSummary | None = None


class LiveHub:
    def __init__(
        self,
        nc: Client,
        summarize: Summarize,
        *,
        queue_size: int,
        summary_interval_s: float,
        queue_events: int = 10_000,
    ) -> None:
        self._nc = nc
        self._summarize = summarize
        self._queue_size = queue_size
        self._queue_events = queue_events
        self._summary_interval_s = summary_interval_s
        self._sites: dict[str, _Site] = {}
        self._lock = asyncio.Lock()
        self.updates = 0
        self.dropped_events = 0

    @property
    def sites(self) -> int:
        """Sites with a NATS subscription (one each)."""
        return len(self._sites)

    @property
    def total_dropped_events(self) -> int:
        """Events lost by this replica's subscribers so far, those still open included."""
        open_ = sum(s.dropped_events for site in self._sites.values() for s in site.subscribers)
        return self.dropped_events + open_

    @property
    def total_subscribers(self) -> int:
        return sum(len(site.subscribers) for site in self._sites.values())

    def subscribers(self, site_id: str) -> int:
        site = self._sites.get(site_id)
        return len(site.subscribers) if site else 0

    @contextlib.asynccontextmanager
    async def subscribe(
        self, site_id: str, pages: frozenset[str] = frozenset(), countries: frozenset[str] = frozenset()
    ) -> AsyncIterator[Subscriber]:
        subscriber = Subscriber(site_id, pages, countries, self._queue_size, self._queue_events)
        async with self._lock:
            site = self._sites.get(site_id)
            if site is None:
                subscription = await self._nc.subscribe(live_subject(site_id), cb=self._on_update)
                task = asyncio.create_task(self._summaries(site_id), name=f"live-summary-{site_id}")
                site = self._sites[site_id] = _Site(subscription, task)
            site.subscribers.add(subscriber)
            metrics.SUBSCRIBERS.inc()
            summary = site.summary
        if summary is not None:
            subscriber.offer(live_pb2.StreamLiveResponse(summary=summary))
        try:
            yield subscriber
        finally:
            metrics.SUBSCRIBERS.dec()
            self.dropped_events += subscriber.dropped_events
            async with self._lock:
                site = self._sites.get(site_id)
                if site is not None:
                    site.subscribers.discard(subscriber)
                    if not site.subscribers:
                        del self._sites[site_id]
                        await self._leave(site)

    @staticmethod
    async def _leave(site: _Site) -> None:
        site.summaries.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await site.summaries
        with contextlib.suppress(Exception):  # the connection may be closing; nothing to keep
            await site.subscription.unsubscribe()

    def broadcast(self, site_id: str, message: live_pb2.StreamLiveResponse) -> None:
        """Hands a message to every subscriber of the site (alerts, summaries)."""
        site = self._sites.get(site_id)
        for subscriber in list(site.subscribers) if site else ():
            copy = live_pb2.StreamLiveResponse()
            copy.CopyFrom(message)
            subscriber.offer(copy)

    async def _on_update(self, msg: Msg) -> None:
        if msg.headers and msg.headers.get(KIND_HEADER) == ALERT_KIND:
            self._on_alert(msg)
            return
        try:
            update = bus_pb2.LiveUpdate.FromString(msg.data)
        except DecodeError:
            log.warning("undecodable live update ignored", subject=msg.subject)
            return
        site = self._sites.get(update.site_id)
        if site is None or not update.live_events:
            return
        self.updates += 1
        everything: Batch | None = None
        for subscriber in list(site.subscribers):
            if subscriber.pages or subscriber.countries:
                chosen = [event for event in update.live_events if subscriber.wants(event)]
                if not chosen:
                    continue
                batch = Batch(live_pb2.LiveEvents(events=chosen, committed_at=update.committed_at))
            else:
                if everything is None:
                    everything = Batch(
                        live_pb2.LiveEvents(events=update.live_events, committed_at=update.committed_at)
                    )
                batch = everything
            subscriber.offer(batch)

    def _on_alert(self, msg: Msg) -> None:
        try:
            alert = live_pb2.LiveAlert.FromString(msg.data)
        except DecodeError:
            log.warning("undecodable alert ignored", subject=msg.subject)
            return
        site_id = msg.subject.removeprefix(live_subject(""))
        self.broadcast(site_id, live_pb2.StreamLiveResponse(alert=alert))

    async def _summaries(self, site_id: str) -> None:
        while True:
            try:
                summary = await self._summarize(site_id)
            except Exception as error:  # a lost database: the next interval tries again
                log.warning("live summary failed", site_id=site_id, error=str(error) or type(error).__name__)
            else:
                site = self._sites.get(site_id)
                if site is not None:
                    site.summary = summary
                    self.broadcast(site_id, live_pb2.StreamLiveResponse(summary=summary))
            await asyncio.sleep(self._summary_interval_s)

    async def close(self) -> None:
        """Ends every stream (shutdown): subscribers see their queue closed."""
        async with self._lock:
            for site in self._sites.values():
                for subscriber in site.subscribers:
                    subscriber.close()
