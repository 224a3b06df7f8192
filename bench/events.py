"""Benchmark events: client-chosen ids (so losses and duplicates are visible) and pre-encoded bytes.

An event id is ``RRRRRRRR-PPPP-4000-8000-CCCCCCCCCCCC``: run, phase (or phase + load thread) and a
counter, all hex. Protobuf messages are built once per variant and the id appended as field 8 at
send time, so the load generator spends microseconds, not protobuf builds, per event.

gRPC events also carry a ``user_id`` (field 7) from a population of ``visitors``, event ``c`` from
visitor ``c % visitors``: a producer that knows its users, and as many distinct visitors per batch
as real traffic brings, each continuing a session, so the writer's session work is measured too
(with one user id per request, as a single client address would give, sessions cost next to
nothing).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from analytics.v1 import events_pb2

RUN = secrets.randbits(32)
PHASE_WARMUP = 0x0001
PHASE_BATCH = 0x0100
PHASE_UNARY = 0x0200
PHASE_WRK = 0x0300  # + wrk thread number
PHASE_LATENCY = 0x0400

USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
)
_REFERRERS = ("", "", "https://www.google.com/", "https://news.ycombinator.com/", "https://t.co/abc")
_VARIANTS = 64
# What follows a variant's head: the 12 hex digits of the counter, then field 7 (user_id, 16 bytes).
_TAIL = b"%012x\x3a\x10visitor-%08x"


def event_id(phase: int, counter: int) -> str:
    return f"{RUN:08x}-{phase:04x}-4000-8000-{counter:012x}"


def id_prefix(phase: int) -> str:
    """Everything before the counter: the template the Lua script and the latency client fill in."""
    return f"{RUN:08x}-{phase:04x}-4000-8000-"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _variant(site_id: str, n: int) -> bytes:
    path = f"/docs/page-{n % 16}" if n % 3 else "/"
    query = "?utm_source=newsletter&utm_medium=email&utm_campaign=spring" if n % 8 == 0 else ""
    event = events_pb2.Event(
        site_id=site_id,
        event_type="pageview" if n % 5 else "signup",
        path=path,
        url=f"https://bench.example.com{path}{query}",
        referrer=_REFERRERS[n % len(_REFERRERS)],
        title=f"Page {n % 16}",
        screen_width=1920 if n % 2 else 390,
        screen_height=1080 if n % 2 else 844,
        language="en-US",
        properties={"plan": "pro"} if n % 5 == 0 else {},
    )
    return event.SerializeToString()


@dataclass(frozen=True)
class Encoder:
    """Builds serialized TrackRequest / TrackBatchRequest bytes for one site and id phase."""

    site_id: str
    phase: int
    visitors: int

    def __post_init__(self) -> None:
        if not 0 < self.visitors <= 0xFFFFFFFF:
            raise ValueError("visitors must be between 1 and 2**32 - 1")
        # Everything of an encoded event but the 12 hex digits of its counter and its user id.
        prefix = id_prefix(self.phase).encode()
        heads = []
        for n in range(_VARIANTS):
            # Field 8 (event_id, 36 bytes) then field 7 (user_id, 16 bytes), after the variant's fields.
            body_length = len(_variant(self.site_id, n)) + 2 + 36 + 2 + 16
            heads.append(b"\x0a" + _varint(body_length) + _variant(self.site_id, n) + b"\x42\x24" + prefix)
        object.__setattr__(self, "_heads", heads)

    def _event(self, counter: int) -> bytes:
        head = self._heads[counter % _VARIANTS]  # type: ignore[attr-defined]
        return head + _TAIL % (counter, counter % self.visitors)  # type: ignore[no-any-return]

    def track(self, counter: int) -> bytes:
        """TrackRequest{event} (field 1 holds the event exactly like TrackBatchRequest's events)."""
        return self._event(counter)

    def batch(self, first: int, size: int) -> bytes:
        """TrackBatchRequest with events first … first+size-1."""
        heads, visitors = self._heads, self.visitors  # type: ignore[attr-defined]
        return b"".join(
            [heads[c % _VARIANTS] + _TAIL % (c, c % visitors) for c in range(first, first + size)]
        )
