"""The events a live update lists: new, counted rows of the site, oldest first; none when the
transaction also met copies of stored events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from analytics.v1 import bus_pb2
from processor_service.live import MAX_EVENTS, events_by_site, live_updates
from processor_service.writer import SiteActivity, rows_of

T0 = datetime(2026, 12, 1, 8, tzinfo=UTC)


def event(site: uuid.UUID, seconds: int, path: str, **fields: object) -> bus_pb2.EnrichedEvent:
    made = bus_pb2.EnrichedEvent(
        site_id=site.bytes,
        event_id=uuid.uuid4().bytes,
        kind=bus_pb2.EVENT_KIND_PAGEVIEW,
        name="pageview",
        path=path,
        **fields,  # type: ignore[arg-type]
    )
    made.occurred_at.FromDatetime(T0 + timedelta(seconds=seconds))
    made.received_at.FromDatetime(T0)
    return made


def activity(count: int) -> SiteActivity:
    counted = SiteActivity()
    counted.add(bus_pb2.EVENT_KIND_PAGEVIEW, "/", count, first_at=T0, last_at=T0)
    return counted


def test_new_rows_are_listed_oldest_first_without_bots() -> None:
    site = uuid.uuid4()
    rows = rows_of(
        [
            bus_pb2.EventBatch(
                events=[
                    event(site, 5, "/later", country="DE", utm_source="news", referrer_host="t.co"),
                    event(site, 1, "/bot", is_bot=True),
                    event(
                        site,
                        2,
                        "/first",
                        referrer_host="google.com",
                        referrer_source="search",
                        device="mobile",
                    ),
                ]
            )
        ]
    )
    listed = events_by_site(rows, {site: activity(2)})
    (update,) = live_updates(site, activity(2), T0, listed[site])
    assert [(e.page, e.source, e.country) for e in update.live_events] == [
        ("/first", "google.com", ""),
        ("/later", "news", "DE"),
    ]
    assert update.live_events[0].time.ToDatetime(tzinfo=UTC) == T0 + timedelta(seconds=2)
    assert (update.live_events[0].device, update.live_events[0].channel) == ("mobile", "search")
    # What a live view shows and nothing else (the bus carries no address or user agent anyway).
    assert [f.name for f in update.live_events[0].DESCRIPTOR.fields] == [
        "time",
        "page",
        "name",
        "country",
        "device",
        "source",
        "channel",
        "browser",
    ]


def test_a_site_with_copies_of_stored_events_lists_none() -> None:
    site, other = uuid.uuid4(), uuid.uuid4()
    rows = rows_of(
        [bus_pb2.EventBatch(events=[event(site, 1, "/a"), event(site, 2, "/b"), event(other, 1, "/c")])]
    )
    # Only one of the site's two rows was new: which one, the rows cannot tell.
    listed = events_by_site(rows, {site: activity(1), other: activity(1)})
    assert list(listed) == [other]
    (update,) = live_updates(site, activity(1), T0, listed.get(site, ()))
    assert (len(update.live_events), update.events) == (0, 1)


def test_a_large_transaction_is_listed_in_several_messages() -> None:
    site = uuid.uuid4()
    count = 2 * MAX_EVENTS + 5
    rows = rows_of([bus_pb2.EventBatch(events=[event(site, i, f"/{i}") for i in range(count)])])
    listed = events_by_site(rows, {site: activity(count)})
    updates = live_updates(site, activity(count), T0, listed[site])
    assert [len(u.live_events) for u in updates] == [MAX_EVENTS, MAX_EVENTS, 5]
    assert [e.page for u in updates for e in u.live_events] == [f"/{i}" for i in range(count)]
    # Counted once: the further messages carry events only.
    assert [u.events for u in updates] == [count, 0, 0]
    assert {u.committed_at.ToDatetime(tzinfo=UTC) for u in updates} == {T0}
