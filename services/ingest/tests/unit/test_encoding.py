"""Hand-rolled encodings on the hot path give exactly what the general-purpose library code gives."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from urllib.parse import parse_qsl

from hypothesis import given
from hypothesis import strategies as st

from analytics.v1 import bus_pb2, events_pb2
from analytics_grpc.metadata import credential_in, metadata_map
from ingest_service.publisher import encode_batch, encode_events
from ingest_service.validation import Limits, uuid_text, validate_event

SITE = str(uuid.uuid4())
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
UTM = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


def enriched(path: str, **fields: object) -> bus_pb2.EnrichedEvent:
    event = events_pb2.Event(site_id=SITE, event_type="pageview", path=path, **fields)  # type: ignore[arg-type]
    result, violations = validate_event(event, "event.", NOW, Limits())
    assert result is not None, violations
    return result


def test_a_batch_is_byte_for_byte_what_protobuf_writes() -> None:
    first = [enriched("/a", title="A" * 300), enriched("/b", properties={"plan": "pro"})]
    second = [enriched("/c", url="https://example.com/c?utm_source=x")]
    batch_id = uuid.uuid4().hex
    encoded = encode_batch(batch_id, [encode_events(first), encode_events(second)])
    expected = bus_pb2.EventBatch(batch_id=batch_id, events=[*first, *second])
    assert encoded == expected.SerializeToString()
    assert bus_pb2.EventBatch.FromString(encoded) == expected


@given(st.binary(min_size=16, max_size=16))
def test_uuid_text_is_the_canonical_form(raw: bytes) -> None:
    assert uuid_text(raw) == str(uuid.UUID(bytes=raw))


_QUERY_PART = st.one_of(
    st.sampled_from([*UTM, "utm_", "utm%5Fsource", "x", "utm_source+"]),
    st.text(alphabet="abcutm_%25+=&;", max_size=12),
)


@given(
    st.lists(
        st.tuples(_QUERY_PART, st.text(alphabet="ab%+=&é;5F2", max_size=8), st.booleans()),
        max_size=6,
    )
)
def test_utm_parameters_read_as_parse_qsl_reads_them(parts: list[tuple[str, str, bool]]) -> None:
    query = "&".join(f"{key}={value}" if with_value else key for key, value, with_value in parts)
    reference: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=False):
        if key in UTM:
            reference.setdefault(key, value[:256])
    result = enriched("/", url=f"https://example.com/?{query}")
    assert {key: getattr(result, key) for key in UTM if getattr(result, key)} == reference


class _Context:
    def __init__(self, metadata: tuple[tuple[str, str | bytes], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata


def test_metadata_map_keeps_the_first_text_value_of_each_key() -> None:
    context = _Context(
        (
            ("x-forwarded-for", "1.1.1.1"),
            ("trace-bin", b"\x00"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-api-key", " k "),
        )
    )
    metadata = metadata_map(context)
    assert metadata == {"x-forwarded-for": "1.1.1.1", "x-api-key": " k "}
    assert credential_in(metadata) == "k"
    assert credential_in({"authorization": "Bearer  t "}) == "t"
    assert credential_in({"authorization": "Basic t"}) is None
