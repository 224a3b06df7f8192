"""Dead letters: bus messages the processor could not store, kept with headers that say why.

A dead letter is the original message body, byte for byte, published to the dead-letter stream
with the headers below. Its Nats-Msg-Id is derived from the original stream and sequence, so copying
the same original twice within the stream's duplicate window stores it once. Replaying publishes the
body to the events subject again under a fresh Nats-Msg-Id and deletes the dead letter.
"""

from __future__ import annotations

import contextlib
import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from analytics_bus.jetstream import DeadLetterConfig

REASON = "Analytics-Dead-Letter-Reason"
ERROR = "Analytics-Dead-Letter-Error"
TIME = "Analytics-Dead-Letter-Time"
ORIGINAL_STREAM = "Analytics-Original-Stream"
ORIGINAL_SEQUENCE = "Analytics-Original-Sequence"
ORIGINAL_SUBJECT = "Analytics-Original-Subject"
ORIGINAL_MSG_ID = "Analytics-Original-Msg-Id"
DELIVERIES = "Analytics-Deliveries"
REPLAYED_FROM = "Analytics-Replayed-From"
MSG_ID = "Nats-Msg-Id"
_MAX_ERROR_CHARS = 1000


class Reason(enum.StrEnum):
    """Why a message became a dead letter."""

    UNDECODABLE = "undecodable"  # not an EventBatch at all
    INVALID = "invalid"  # decodes, but an event lacks what storing it needs
    REJECTED = "rejected"  # the database refused it (e.g. a NUL byte in a text)
    MAX_DELIVERIES = "max_deliveries"  # delivered max_deliver times without an ack


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of the dead-letter stream."""

    sequence: int
    reason: str
    error: str
    original_stream: str
    original_sequence: int
    original_subject: str
    time: datetime | None
    deliveries: int
    data: bytes


def _header_value(text: str) -> str:
    # Header values are one line; errors from the database can span several.
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_ERROR_CHARS else flat[: _MAX_ERROR_CHARS - 1] + "…"


async def publish(
    js: JetStreamContext,
    config: DeadLetterConfig,
    data: bytes,
    *,
    reason: Reason,
    error: str,
    original_stream: str,
    original_sequence: int,
    original_subject: str,
    deliveries: int,
    original_msg_id: str | None = None,
    at: datetime | None = None,
) -> int:
    """Stores a dead letter and returns its sequence in the dead-letter stream."""
    headers = {
        MSG_ID: f"deadletter.{original_stream}.{original_sequence}",
        REASON: str(reason),
        ERROR: _header_value(error),
        TIME: (at or datetime.now(UTC)).isoformat(),
        ORIGINAL_STREAM: original_stream,
        ORIGINAL_SEQUENCE: str(original_sequence),
        ORIGINAL_SUBJECT: original_subject,
        DELIVERIES: str(deliveries),
    }
    if original_msg_id:
        headers[ORIGINAL_MSG_ID] = _header_value(original_msg_id)
    ack = await js.publish(config.subject, data, stream=config.stream, headers=headers)
    return int(ack.seq)


def _int(headers: Mapping[str, str], name: str) -> int:
    try:
        return int(headers.get(name, "0"))
    except ValueError:
        return 0


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def parse(message: RawStreamMsg) -> DeadLetter:
    headers: Mapping[str, str] = message.headers or {}
    return DeadLetter(
        sequence=int(message.seq or 0),
        reason=headers.get(REASON, ""),
        error=headers.get(ERROR, ""),
        original_stream=headers.get(ORIGINAL_STREAM, ""),
        original_sequence=_int(headers, ORIGINAL_SEQUENCE),
        original_subject=headers.get(ORIGINAL_SUBJECT, ""),
        time=_time(headers.get(TIME)) or message.time,
        deliveries=_int(headers, DELIVERIES),
        data=message.data or b"",
    )


async def get(js: JetStreamContext, config: DeadLetterConfig, sequence: int) -> DeadLetter | None:
    """The dead letter with that sequence, None when there is none (never stored, replayed, expired)."""
    try:
        return parse(await js.get_msg(config.stream, sequence))
    except NotFoundError:
        return None


async def page(
    js: JetStreamContext, config: DeadLetterConfig, start: int, limit: int
) -> tuple[list[DeadLetter], int]:
    """Up to ``limit`` dead letters from sequence ``start`` on; the next start, 0 when there are no more."""
    entries: list[DeadLetter] = []
    sequence = max(1, start)
    while len(entries) < limit:
        try:
            # next_by_subj skips deleted (replayed) sequences on the server side.
            raw = await js.get_msg(config.stream, sequence, subject=config.subject, next=True)
        except NotFoundError:
            return entries, 0
        entry = parse(raw)
        entries.append(entry)
        sequence = entry.sequence + 1
    try:
        await js.get_msg(config.stream, sequence, subject=config.subject, next=True)
    except NotFoundError:
        return entries, 0
    return entries, sequence


async def replay(js: JetStreamContext, config: DeadLetterConfig, sequence: int, subject: str) -> bool:
    """Publishes the dead letter's body to ``subject`` again, then deletes it; False when it is gone.

    The new Nats-Msg-Id is fresh: the original id may still be inside the duplicate window. A crash
    between the publish and the delete leaves the dead letter in place, and replaying it again is
    harmless because the processor stores each event once whatever the number of copies.
    """
    entry = await get(js, config, sequence)
    if entry is None:
        return False
    headers = {MSG_ID: f"replay.{sequence}.{uuid.uuid4().hex}", REPLAYED_FROM: str(sequence)}
    await js.publish(subject, entry.data, headers=headers)
    with contextlib.suppress(NotFoundError):  # replayed concurrently: published twice, stored once
        await js.delete_msg(config.stream, sequence)
    return True
