"""The benchmark's hand-encoded requests decode to the events they claim: ids, visitors, variants."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from analytics.v1 import ingest_pb2
from bench import events

SITE = "0f0e0d0c-0b0a-4000-8000-000000000001"


def test_a_batch_decodes_to_consecutive_ids_and_visitors_of_the_population() -> None:
    encoder = events.Encoder(SITE, events.PHASE_BATCH, visitors=1000)
    request = ingest_pb2.TrackBatchRequest.FromString(encoder.batch(998, 4))
    assert [e.event_id for e in request.events] == [
        events.event_id(events.PHASE_BATCH, c) for c in range(998, 1002)
    ]
    assert [e.user_id for e in request.events] == [
        "visitor-000003e6",
        "visitor-000003e7",
        "visitor-00000000",
        "visitor-00000001",
    ]
    assert {e.site_id for e in request.events} == {SITE}
    assert all(e.url.split("?")[0] == "https://bench.example.com" + e.path for e in request.events)


def test_a_single_event_request_carries_the_same_event() -> None:
    encoder = events.Encoder(SITE, events.PHASE_UNARY, visitors=7)
    request = ingest_pb2.TrackRequest.FromString(encoder.track(12))
    assert request.event.event_id == events.event_id(events.PHASE_UNARY, 12)
    assert request.event.user_id == "visitor-00000005"
    assert request.event == ingest_pb2.TrackBatchRequest.FromString(encoder.batch(12, 1)).events[0]


def test_the_visitor_population_must_fit_the_fixed_width_id() -> None:
    with pytest.raises(ValueError, match="visitors"):
        events.Encoder(SITE, events.PHASE_BATCH, visitors=0)
