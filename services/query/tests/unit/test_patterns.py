"""Page path patterns: the regular expression SQL runs matches exactly the paths the reference's
backtracking matcher accepts, and bad patterns are refused."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from query_service.product import patterns
from query_service.reference import glob_matches

# Characters that are regex syntax, path separators and ordinary letters.
ALPHABET = st.sampled_from(list("/ab.*+?()[]{}|^$\\-"))


@given(
    pattern=st.text(ALPHABET, max_size=10).map(lambda p: "/" + p),
    path=st.text(ALPHABET, max_size=10).map(lambda p: "/" + p),
)
def test_the_regex_agrees_with_the_glob(pattern: str, path: str) -> None:
    if patterns.problem(pattern) is not None:
        return
    assert bool(re.search(patterns.to_regex(pattern), path)) == glob_matches(pattern, path)


def test_star_stays_in_its_segment_and_double_star_crosses() -> None:
    one, any_depth = patterns.to_regex("/blog/*"), patterns.to_regex("/blog/**")
    assert re.search(one, "/blog/a") and not re.search(one, "/blog/a/b") and not re.search(one, "/blogx/a")
    assert re.search(any_depth, "/blog/a/b") and re.search(any_depth, "/blog/")


def test_bad_patterns_are_refused() -> None:
    assert patterns.problem("blog") is not None
    assert patterns.problem("/a/***") is not None
    assert patterns.problem("/a\nb") is not None
    assert patterns.problem("/" + "a" * patterns.MAX_PATTERN) is not None
    assert patterns.problem("/a/*/b/**") is None
