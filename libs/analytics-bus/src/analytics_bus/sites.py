"""Site deletion on the bus: auth publishes a SiteDeleted message to a JetStream stream, and every
owner of per-site data (the processor for schema analytics; any other service that keeps rows per
site) deletes its rows through a durable consumer of its own, acknowledging after its commit. A
message waits in the stream for an owner that is down, and an owner added later reads every
deletion still kept (deliver all), so no owner depends on another being up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from google.protobuf.message import DecodeError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig

from analytics.v1 import privacy_pb2
from analytics_bus.jetstream import ensure_stream_config

log = structlog.get_logger("analytics.bus")


@dataclass(frozen=True, slots=True)
class SitesBus:
    """Where site deletions travel."""

    stream: str = "ANALYTICS_SITES"
    subject: str = "analytics.sites.deleted"
    # Kept long enough for an owner deployed later, or down for long, to catch up.
    max_age_s: float = 90 * 24 * 3600.0
    # Auth publishes again when a deletion is asked again; JetStream drops it within this window.
    duplicate_window_s: float = 3600.0
    # A failed deletion is tried again after this long (nak with delay).
    retry_delay_s: float = 5.0
    replicas: int = 1


async def ensure_sites_stream(js: JetStreamContext, bus: SitesBus) -> None:
    await ensure_stream_config(
        js,
        StreamConfig(
            name=bus.stream,
            subjects=[bus.subject],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            duplicate_window=bus.duplicate_window_s,
            max_age=bus.max_age_s,
            num_replicas=bus.replicas,
        ),
    )


async def publish_site_deleted(
    js: JetStreamContext, bus: SitesBus, site_id: str, deleted_at: datetime
) -> None:
    """Publishes the deletion and waits for JetStream's acknowledgement (raises when it fails)."""
    message = privacy_pb2.SiteDeleted(
        site_id=site_id, deleted_at=deleted_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    )
    await js.publish(
        bus.subject,
        message.SerializeToString(),
        stream=bus.stream,
        headers={"Nats-Msg-Id": f"site-deleted.{site_id}"},
    )


Handler = Callable[[str], Awaitable[None]]


async def follow_site_deletions(
    js: JetStreamContext, bus: SitesBus, durable: str, handle: Handler, *, batch: int = 10
) -> None:
    """Runs for the owner's life: ``handle(site_id)`` for every deletion, acknowledged once it
    returns; retried after ``bus.retry_delay_s`` when it raises. ``durable`` names the owner's own
    consumer (one per owner, shared by its replicas)."""
    await ensure_sites_stream(js, bus)
    await js.add_consumer(
        bus.stream,
        ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=300.0,
            filter_subject=bus.subject,
        ),
    )
    subscription = await js.pull_subscribe(bus.subject, durable=durable, stream=bus.stream)
    while True:
        try:
            messages = await subscription.fetch(batch, timeout=1.0)
        except TimeoutError:  # nothing to fetch (nats-py raises either timeout class)
            continue
        except Exception as error:  # NATS away or reconnecting: JetStream keeps the messages
            log.warning(
                "fetching site deletions failed", consumer=durable, error=str(error) or type(error).__name__
            )
            await asyncio.sleep(1.0)
            continue
        for message in messages:
            try:
                deleted = privacy_pb2.SiteDeleted.FromString(message.data)
            except DecodeError:
                log.error("undecodable site deletion dropped", stream=bus.stream, consumer=durable)
                await message.term()
                continue
            try:
                await handle(deleted.site_id)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await message.nak()
                raise
            except Exception as error:
                log.warning(
                    "site deletion failed, retrying",
                    site_id=deleted.site_id,
                    consumer=durable,
                    error=str(error),
                )
                await message.nak(delay=bus.retry_delay_s)
                continue
            await message.ack()
