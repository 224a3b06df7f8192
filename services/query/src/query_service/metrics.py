"""Metric values from exact aggregates, rounded as the API answers them, and comparison changes.

Rounding is half away from zero on exact fractions: counts are integers, bounce_rate,
visit_duration and changes whole numbers, views_per_visit and percentage two decimals.
"""

from __future__ import annotations

import math
from fractions import Fraction

from query_service.reports.stats import Raw

PLACES = {"views_per_visit": 2, "percentage": 2, "conversion_rate": 2}


def rounded(value: Fraction, places: int = 0) -> float:
    scale = 10**places
    magnitude = math.floor(abs(value) * scale + Fraction(1, 2))
    return math.copysign(magnitude / scale, value) if magnitude else 0.0


def _ratio(numerator: Fraction | int, denominator: int) -> Fraction:
    return Fraction(numerator) / denominator if denominator else Fraction(0)


def exact_value(metric: str, raw: Raw, total_visitors: int, base_visitors: int = 0) -> Fraction:
    """``total_visitors``: of all matching events (percentage); ``base_visitors``: of the row's
    group without the goal (conversion_rate)."""
    if metric in ("visitors", "pageviews", "events", "visits"):
        return Fraction(int(getattr(raw, metric)))
    if metric == "percentage":
        return _ratio(100 * raw.visitors, total_visitors)
    if metric == "conversion_rate":
        return _ratio(100 * raw.visitors, base_visitors)
    if metric == "bounce_rate":
        return _ratio(100 * raw.bounces, raw.visits)
    if metric == "visit_duration":
        return _ratio(Fraction(raw.duration), raw.visits)
    if metric == "views_per_visit":
        return _ratio(raw.visit_pageviews, raw.visits)
    raise ValueError(f"unknown metric {metric}")


def value(metric: str, raw: Raw, total_visitors: int, base_visitors: int = 0) -> float:
    return rounded(exact_value(metric, raw, total_visitors, base_visitors), PLACES.get(metric, 0))


def change(metric: str, old: float, new: float, *, old_visits: int, old_base: int = 0) -> float | None:
    """Percent change, whole (bounce_rate: the difference in points, None without earlier visits;
    conversion_rate: the difference in points, two decimals, None without earlier visitors)."""
    if metric == "bounce_rate":
        return None if old_visits == 0 else rounded(Fraction(new) - Fraction(old))
    if metric == "conversion_rate":
        return None if old_base == 0 else rounded(Fraction(new) - Fraction(old), 2)
    if old == 0:
        return 100.0 if new > 0 else 0.0
    return rounded((Fraction(new) - Fraction(old)) / Fraction(old) * 100)
