"""Page path patterns of goals and funnel steps: ``*`` matches within one path segment, ``**``
across segments, everything else itself. Turned into anchored regular expressions that PostgreSQL
and Python's re read alike (only metacharacters are escaped, each with a backslash)."""

from __future__ import annotations

MAX_PATTERN = 2048
_META = frozenset(".^$|?*+()[]{}\\")


def problem(pattern: str) -> str | None:
    """Why a pattern is refused, or None."""
    if not pattern.startswith("/"):
        return f"must start with '/', got {pattern[:80]!r}"
    if len(pattern) > MAX_PATTERN:
        return f"must be at most {MAX_PATTERN} characters"
    if "***" in pattern:
        return "may use * (one segment) or ** (any segments), not ***"
    if any(ord(c) < 32 for c in pattern):
        return "must not contain control characters"
    return None


def to_regex(pattern: str) -> str:
    parts: list[str] = ["^"]
    index = 0
    while index < len(pattern):
        if pattern.startswith("**", index):
            parts.append(".*")
            index += 2
            continue
        char = pattern[index]
        if char == "*":
            parts.append("[^/]*")
        elif char in _META:
            parts.append("\\" + char)
        else:
            parts.append(char)
        index += 1
    parts.append("$")
    return "".join(parts)
