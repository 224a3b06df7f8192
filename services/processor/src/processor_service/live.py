"""Live updates: after each commit, one small LiveUpdate per site touched, on core NATS."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import structlog
from nats.aio.client import Client

from analytics.v1 import bus_pb2, live_pb2
from analytics_bus import live_subject
from processor_service.writer import COLUMNS, Row, SiteActivity

log = structlog.get_logger("analytics.processor")

MAX_PATHS = 10
# Events listed per message: a larger transaction's events follow in further messages of the same
# update, so no message nears NATS's payload limit (1 MiB by default).
MAX_EVENTS = 1000

_AT = {name: index for index, (name, _) in enumerate(COLUMNS)}
_TIME, _SITE, _KIND, _NAME, _PATH = _AT["time"], _AT["site_id"], _AT["kind"], _AT["name"], _AT["path"]
_HOST, _CHANNEL, _UTM = _AT["referrer_host"], _AT["referrer_source"], _AT["utm_source"]
_COUNTRY, _BROWSER, _DEVICE, _BOT = _AT["country"], _AT["browser"], _AT["device"], _AT["is_bot"]
_micros = struct.Struct(">q").unpack
# Rows carry times as PostgreSQL's binary timestamptz: microseconds since 2000-01-01 UTC.
_PG_EPOCH_S = 946_684_800


def _live_event(row: Row) -> live_pb2.LiveEvent:
    (micros,) = _micros(row[_TIME])  # type: ignore[arg-type]
    seconds, rest = divmod(micros, 1_000_000)
    event = live_pb2.LiveEvent(
        page=str(row[_PATH]),
        name=str(row[_NAME]),
        country=str(row[_COUNTRY]),
        device=str(row[_DEVICE]),
        source=str(row[_UTM] or row[_HOST]),
        channel=str(row[_CHANNEL]),
        browser=str(row[_BROWSER]),
    )
    event.time.seconds = seconds + _PG_EPOCH_S
    event.time.nanos = rest * 1000
    return event


def events_by_site(
    rows: Sequence[Row], sites: Mapping[uuid.UUID, SiteActivity]
) -> dict[uuid.UUID, list[Row]]:
    """Each site's counted rows, oldest first, for the sites whose rows were all new: a site whose
    counted rows outnumber what the transaction added also had copies of stored events, which the
    rows cannot tell apart, so none of its rows is listed (its counts still are)."""
    found: dict[uuid.UUID, list[Row]] = {}
    for row in rows:
        if not row[_BOT]:
            found.setdefault(uuid.UUID(bytes=bytes(row[_SITE])), []).append(row)  # type: ignore[call-overload]
    listed: dict[uuid.UUID, list[Row]] = {}
    for site_id, site_rows in found.items():
        activity = sites.get(site_id)
        if activity is not None and activity.events == len(site_rows):
            site_rows.sort(key=lambda row: row[_TIME])  # type: ignore[arg-type, return-value]
            listed[site_id] = site_rows
    return listed


def live_updates(
    site_id: uuid.UUID, activity: SiteActivity, committed_at: datetime, rows: Sequence[Row] = ()
) -> list[bus_pb2.LiveUpdate]:
    """The messages of one site's update: the first carries the counts and the first MAX_EVENTS
    of ``rows`` (the site's new rows, oldest first), each further one only MAX_EVENTS more rows."""
    first = live_update(site_id, activity, committed_at)
    first.live_events.extend(_live_event(row) for row in rows[:MAX_EVENTS])
    updates = [first]
    for start in range(MAX_EVENTS, len(rows), MAX_EVENTS):
        more = bus_pb2.LiveUpdate(site_id=str(site_id), committed_at=first.committed_at)
        more.live_events.extend(_live_event(row) for row in rows[start : start + MAX_EVENTS])
        updates.append(more)
    return updates


def live_update(site_id: uuid.UUID, activity: SiteActivity, committed_at: datetime) -> bus_pb2.LiveUpdate:
    """The counts of one site's update; paths are bounded to the MAX_PATHS most viewed."""
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

    async def publish(self, sites: Mapping[uuid.UUID, SiteActivity], rows: Sequence[Row] = ()) -> None:
        """One update per site, after the commit of ``rows`` that added ``sites``' activity."""
        if not sites:
            return
        committed_at = datetime.now(UTC)
        listed = events_by_site(rows, sites)
        for site_id, activity in sites.items():
            try:
                for update in live_updates(site_id, activity, committed_at, listed.get(site_id, ())):
                    await self._nc.publish(live_subject(str(site_id)), update.SerializeToString())
                self.published += 1
            except Exception as error:  # disconnected with a full buffer, closed connection, …
                log.debug(
                    "live update dropped", site_id=str(site_id), error=str(error) or type(error).__name__
                )
