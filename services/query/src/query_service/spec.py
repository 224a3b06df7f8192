"""The vocabulary of a statistics query as plain values: metrics, dimensions, filters, sort, range.

Request parsing builds these; the SQL report and the reference implementation both read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

# Metrics computed per event (in the range) and per visit (starting in the range).
EVENT_METRICS = ("visitors", "pageviews", "events")
VISIT_METRICS = ("visits", "views_per_visit", "bounce_rate", "visit_duration")
METRICS = ("visitors", "visits", "pageviews", "views_per_visit", "bounce_rate", "visit_duration", "events")
PERCENTAGE = "percentage"
# Visitors of the row per visitors of the same group without the goal (needs event:goal).
CONVERSION_RATE = "conversion_rate"
ALL_METRICS = (*METRICS, PERCENTAGE, CONVERSION_RATE)
# Visit metrics that describe whole visits, so they cannot be split by an event's attributes
# (Plausible refuses the same combinations).
WHOLE_VISIT_METRICS = ("views_per_visit", "bounce_rate", "visit_duration")

# Attributes of one event. event:goal is the site's goals the event completes (none, one or several).
GOAL = "event:goal"
EVENT_DIMENSIONS = ("event:page", "event:name", "event:hostname", GOAL)
PROPS_PREFIX = "event:props:"
# Attributes of a visit: taken from its first event (entry page: its first page view; exit page:
# its last page view).
VISIT_DIMENSIONS = (
    "visit:entry_page",
    "visit:exit_page",
    "visit:source",
    "visit:referrer",
    "visit:channel",
    "visit:utm_source",
    "visit:utm_medium",
    "visit:utm_campaign",
    "visit:utm_content",
    "visit:utm_term",
    "visit:device",
    "visit:browser",
    "visit:os",
    "visit:country",
)
TIME_DIMENSIONS = ("time", "time:hour", "time:day", "time:week", "time:month")
MAX_PROP_KEY = 128

Operator = Literal["is", "is_not", "contains", "contains_not", "matches", "matches_not"]
OPERATORS: tuple[Operator, ...] = ("is", "is_not", "contains", "contains_not", "matches", "matches_not")
Bucket = Literal["hour", "day", "week", "month"]
Direction = Literal["asc", "desc"]


def is_event_dimension(name: str) -> bool:
    return name in EVENT_DIMENSIONS or name.startswith(PROPS_PREFIX)


def is_visit_dimension(name: str) -> bool:
    return name in VISIT_DIMENSIONS


def is_time_dimension(name: str) -> bool:
    return name in TIME_DIMENSIONS


@dataclass(frozen=True, slots=True)
class Goal:
    """A site's goal as event:goal reads it: a custom event's name, or a page path pattern."""

    name: str  # the display name, which event:goal values are
    event_name: str = ""  # completed by a custom event (kind 2) of this name…
    page_path: str = ""  # …or by a page view whose path matches this pattern,
    page_regex: str = ""  # which is this regular expression (product.patterns.to_regex)


@dataclass(frozen=True, slots=True)
class Condition:
    """Holds when the dimension's value passes the operator for any of the values."""

    operator: Operator
    dimension: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AllOf:
    filters: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    filters: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Negation:
    filter: Filter


Filter = Condition | AllOf | AnyOf | Negation


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Half-open [start, end) in UTC, and the site's local days it was made of (None for instants)."""

    start: datetime
    end: datetime
    first_day: date | None = None
    last_day: date | None = None


@dataclass(frozen=True, slots=True)
class OrderKey:
    field: str
    direction: Direction


@dataclass(frozen=True, slots=True)
class StatsQuery:
    """A validated question: everything the report needs, the range already resolved."""

    site_id: str
    timezone: str
    range: TimeRange
    metrics: tuple[str, ...]
    dimensions: tuple[str, ...]
    filter: Filter | None
    order_by: tuple[OrderKey, ...]
    limit: int
    offset: int
    bucket: Bucket | None  # the time dimension's bucket, when there is one
    time_labels: bool = False
    total_rows: bool = False
    comparison: TimeRange | None = None
    # The site's goals, when the query uses event:goal.
    goals: tuple[Goal, ...] = ()
