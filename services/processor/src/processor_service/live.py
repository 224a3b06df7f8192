"""Live updates: after each commit, one small LiveUpdate per site touched, on core NATS."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

import structlog
from nats.aio.client import Client

from analytics.v1 import bus_pb2
from analytics_bus import live_subject
from processor_service.writer import SiteActivity

log = structlog.get_logger("analytics.processor")

MAX_PATHS = 10


def live_update(site_id: uuid.UUID, activity: SiteActivity, committed_at: datetime) -> bus_pb2.LiveUpdate:
    """The update for one site; paths are bounded to the MAX_PATHS most viewed."""
    ranked = sorted(activity.paths.items(), key=lambda item: (-item[1], item[0]))[:MAX_PATHS]
    update = bus_pb2.LiveUpdate(
        site_id=str(site_id),
        events=activity.events,
        pageviews=activity.pageviews,
        paths=[bus_pb2.LivePathCount(path=path, pageviews=count) for path, count in ranked],
        other_pageviews=activity.pageviews - sum(count for _, count in ranked),
    )
    if activity.first_at is not None:
        update.first_event_at.FromDatetime(activity.first_at)
    if activity.last_at is not None:
        update.last_event_at.FromDatetime(activity.last_at)
    update.committed_at.FromDatetime(committed_at)
    return update


class LivePublisher:
    """Fire and forget: a failed publish is logged and dropped, never failing the batch."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self.published = 0

    async def publish(self, sites: Mapping[uuid.UUID, SiteActivity]) -> None:
        if not sites:
            return
        committed_at = datetime.now(UTC)
        for site_id, activity in sites.items():
            try:
                update = live_update(site_id, activity, committed_at)
                await self._nc.publish(live_subject(str(site_id)), update.SerializeToString())
                self.published += 1
            except Exception as error:  # disconnected with a full buffer, closed connection, …
                log.debug(
                    "live update dropped", site_id=str(site_id), error=str(error) or type(error).__name__
                )
