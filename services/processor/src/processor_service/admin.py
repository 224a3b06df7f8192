"""ProcessorService servicer: list and replay dead letters, for the admin credential only."""

from __future__ import annotations

import contextlib

from google.protobuf.message import DecodeError
from nats.js import JetStreamContext

from analytics.v1 import bus_pb2, processor_pb2, processor_pb2_grpc
from analytics_bus import BusConfig, deadletter
from analytics_bus.deadletter import DeadLetter, Reason
from analytics_grpc.auth_client import AuthClient
from analytics_grpc.errors import ServiceError, permission_denied, unauthenticated, unavailable
from analytics_grpc.metadata import Context, credential

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

_REASONS: dict[str, int] = {
    Reason.UNDECODABLE.value: processor_pb2.DEAD_LETTER_REASON_UNDECODABLE,
    Reason.INVALID.value: processor_pb2.DEAD_LETTER_REASON_INVALID,
    Reason.REJECTED.value: processor_pb2.DEAD_LETTER_REASON_REJECTED,
    Reason.MAX_DELIVERIES.value: processor_pb2.DEAD_LETTER_REASON_MAX_DELIVERIES,
}


def dead_letter_message(entry: DeadLetter) -> processor_pb2.DeadLetter:
    message = processor_pb2.DeadLetter(
        sequence=entry.sequence,
        reason=_REASONS.get(entry.reason, processor_pb2.DEAD_LETTER_REASON_UNSPECIFIED),  # type: ignore[arg-type]
        original_stream=entry.original_stream,
        original_sequence=entry.original_sequence,
        subject=entry.original_subject,
        size=len(entry.data),
        first_error=entry.error,
        deliveries=entry.deliveries,
    )
    if entry.time is not None:
        message.time.FromDatetime(entry.time)
    with contextlib.suppress(DecodeError):  # undecodable: event_count stays absent
        message.event_count = len(bus_pb2.EventBatch.FromString(entry.data).events)
    return message


class ProcessorServicer(processor_pb2_grpc.ProcessorServiceServicer):
    def __init__(self, auth: AuthClient, bus: BusConfig) -> None:
        self._auth = auth
        self._bus = bus
        self._js: JetStreamContext | None = None

    def attach(self, js: JetStreamContext) -> None:
        """Called once NATS is connected; until then every call answers UNAVAILABLE."""
        self._js = js

    async def _admin(self, context: Context) -> JetStreamContext:
        api_key = credential(context)
        if not api_key:
            raise unauthenticated()
        principal = await self._auth.authenticate(api_key, site_id="")
        if not principal.is_admin:
            raise permission_denied("dead letters need the admin credential")
        if self._js is None:
            raise unavailable("the processor is not connected to NATS yet, retry later")
        return self._js

    async def ListDeadLetters(
        self, request: processor_pb2.ListDeadLettersRequest, context: Context
    ) -> processor_pb2.ListDeadLettersResponse:
        start = 1
        if request.page_token:
            if not request.page_token.isdigit() or int(request.page_token) < 1:
                raise ServiceError.field("page_token", "is not a token returned by ListDeadLetters")
            start = int(request.page_token)
        js = await self._admin(context)
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        entries, next_start = await deadletter.page(js, self._bus.deadletter, start, size)
        return processor_pb2.ListDeadLettersResponse(
            dead_letters=[dead_letter_message(entry) for entry in entries],
            next_page_token=str(next_start) if next_start else "",
        )

    async def ReplayDeadLetters(
        self, request: processor_pb2.ReplayDeadLettersRequest, context: Context
    ) -> processor_pb2.ReplayDeadLettersResponse:
        if not request.all and not request.sequences:
            raise ServiceError.field("sequences", "name at least one sequence, or set all")
        js = await self._admin(context)
        config = self._bus.deadletter
        if request.all:
            # Only what is there now: letters dead-lettered during the replay wait for the next call.
            last = (await js.stream_info(config.stream)).state.last_seq
            sequences: list[int] = []
            start = 1
            while start and start <= last:
                entries, start = await deadletter.page(js, config, start, MAX_PAGE_SIZE)
                sequences += [entry.sequence for entry in entries if entry.sequence <= last]
        else:
            sequences = list(dict.fromkeys(request.sequences))
        replayed = 0
        not_found: list[int] = []
        for sequence in sequences:
            if await deadletter.replay(js, config, sequence, self._bus.subject):
                replayed += 1
            else:
                not_found.append(sequence)
        return processor_pb2.ReplayDeadLettersResponse(replayed=replayed, not_found=not_found)
