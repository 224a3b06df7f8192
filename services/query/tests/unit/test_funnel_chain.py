"""A person's funnel attempt: the greedy pass (no step windows) and the exact search (steps with
windows of their own) against the brute-force reference, and a case where greedy is wrong."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from query_service.product.definitions import Step
from query_service.product.funnels import chain, timed_chain
from query_service.product.reference import person_attempt, step_matches
from query_service.reference import EventRow

BASE = datetime(2024, 5, 1, tzinfo=UTC)
SECOND = 1_000_000


def _events(timeline: list[tuple[int, str]]) -> list[EventRow]:
    """Custom events at (seconds after BASE, name), in (time, event id) order."""
    rows = [
        EventRow(
            time=BASE + timedelta(seconds=at), event_id=uuid.UUID(int=n + 1), visitor_id=1, kind=2, name=name
        )
        for n, (at, name) in enumerate(timeline)
    ]
    return sorted(rows, key=lambda e: (e.time, e.event_id))


def _search(events: list[EventRow], steps: list[Step], window_s: int) -> tuple[list[int], list[int]]:
    """(the exact search's indexes, the reference's indexes) for one person."""
    times = [int((e.time - BASE).total_seconds()) * SECOND for e in events]
    masks = [sum(1 << d for d, step in enumerate(steps) if step_matches(step, e)) for e in events]
    gaps = [None if s.time_window_seconds is None else s.time_window_seconds * SECOND for s in steps]
    found = timed_chain(times, masks, gaps, window_s * SECOND)
    want = [events.index(e) for e in person_attempt(events, steps, timedelta(seconds=window_s))]
    return found, want


def test_a_later_step_2_event_keeps_step_3_in_its_window() -> None:
    """Greedy takes the first add (at 10 s) and then finds no buy within 60 s of it; the add at
    100 s is followed by a buy 50 s later."""
    events = _events([(0, "view"), (10, "add"), (100, "add"), (150, "buy")])
    steps = [Step("view"), Step("add"), Step("buy", time_window_seconds=60)]
    times = [int((e.time - BASE).total_seconds()) * SECOND for e in events]
    masks = [1, 2, 2, 4]
    assert chain(times, masks, 3, 3600 * SECOND) == [0, 1, 3]
    found, want = _search(events, steps, 3600)
    assert found == want == [0, 2, 3]


def test_the_window_from_the_first_step_still_bounds_the_attempt() -> None:
    events = _events([(0, "view"), (100, "add"), (150, "buy"), (200, "view"), (230, "add"), (260, "buy")])
    steps = [Step("view"), Step("add", time_window_seconds=100), Step("buy", time_window_seconds=60)]
    # From 0 the buy at 150 is past a 120 s window; the second view completes all three.
    assert _search(events, steps, 120) == ([3, 4, 5], [3, 4, 5])
    # With 59 s no start reaches buy (the second view's is 60 s after it); the earliest start
    # that reaches add is the second view (the first's add is 100 s after it).
    assert _search(events, steps, 59) == ([3, 4], [3, 4])
    assert _search(events, steps, 60) == ([3, 4, 5], [3, 4, 5])


def test_a_step_window_counts_from_the_previous_step_not_the_first() -> None:
    events = _events([(0, "view"), (500, "add"), (530, "buy")])
    steps = [Step("view"), Step("add"), Step("buy", time_window_seconds=30)]
    assert _search(events, steps, 3600) == ([0, 1, 2], [0, 1, 2])
    tighter = [Step("view"), Step("add", time_window_seconds=499), Step("buy", time_window_seconds=30)]
    assert _search(events, tighter, 3600) == ([0], [0])


def test_among_the_longest_the_first_in_event_order_is_taken() -> None:
    events = _events([(0, "view"), (5, "view"), (10, "add"), (12, "add"), (20, "buy")])
    steps = [Step("view"), Step("add", time_window_seconds=15), Step("buy", time_window_seconds=9)]
    # Both views start a complete attempt; from the first, the add at 10 s is in time but the buy
    # is not within 9 s of it, so the add at 12 s is taken.
    assert _search(events, steps, 3600) == ([0, 3, 4], [0, 3, 4])


def test_events_of_one_instant_serve_consecutive_steps_in_event_id_order() -> None:
    events = _events([(0, "view"), (0, "add"), (0, "buy")])
    steps = [Step("view"), Step("add", time_window_seconds=1), Step("buy", time_window_seconds=1)]
    assert _search(events, steps, 1) == ([0, 1, 2], [0, 1, 2])


NAMES = ["a", "b", "c"]
GAPS = [0, 0, 1, 5, 20, 60, 61, 200]


@given(
    timeline=st.lists(st.tuples(st.sampled_from(GAPS), st.sampled_from(NAMES)), min_size=1, max_size=9),
    chosen=st.lists(
        st.tuples(st.sampled_from(NAMES), st.sampled_from([None, None, 1, 20, 60, 120])),
        min_size=2,
        max_size=4,
    ),
    window_s=st.sampled_from([1, 60, 100, 300, 3600]),
)
def test_the_search_equals_the_reference(
    timeline: list[tuple[int, str]], chosen: list[tuple[str, int | None]], window_s: int
) -> None:
    at, moments = 0, []
    for gap, name in timeline:
        at += gap
        moments.append((at, name))
    events = _events(moments)
    steps = [Step(name, time_window_seconds=gap if d else None) for d, (name, gap) in enumerate(chosen)]
    found, want = _search(events, steps, window_s)
    assert found == want
    if all(step.time_window_seconds is None for step in steps):
        times = [int((e.time - BASE).total_seconds()) * SECOND for e in events]
        masks = [sum(1 << d for d, step in enumerate(steps) if step_matches(step, e)) for e in events]
        assert chain(times, masks, len(steps), window_s * SECOND) == found


def test_thousands_of_events_are_searched_and_unbounded_steps_agree_with_greedy() -> None:
    """The search is linear in events per step pair: a person with 20,000 events is answered, and
    without step windows it picks what the greedy pass picks."""
    pick = random.Random(13)
    times, at = [], 0
    for _ in range(20_000):
        at += pick.choice([0, 1, 3, 30]) * SECOND
        times.append(at)
    masks = [pick.choice([1, 2, 4, 8, 3, 0]) for _ in times]
    window = 600 * SECOND
    assert timed_chain(times, masks, [None] * 4, window) == chain(times, masks, 4, window)
    timed = timed_chain(times, masks, [None, 2 * SECOND, None, 1 * SECOND], window)
    assert len(timed) == 4
    assert times[timed[1]] - times[timed[0]] <= 2 * SECOND
    assert times[timed[3]] - times[timed[2]] <= SECOND
