"""Hypothesis settings for property tests whose every example is a round trip through real services."""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings

THROUGH_SERVICES = settings(
    max_examples=200,
    deadline=None,
    database=None,  # no .hypothesis/ directory in the repository
    # No shrinking: each attempt is a round trip through real services, and shrinking a failure
    # costs minutes; deterministic tests pin the failures found so far.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
