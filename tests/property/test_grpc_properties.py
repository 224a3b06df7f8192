"""Random and malformed gRPC input: OK or a client-error status, never a server fault or a stored reject."""

from __future__ import annotations

import importlib.resources
import random
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, json_format
from hypothesis import example, given, settings
from hypothesis import strategies as st

from analytics.v1 import (
    events_pb2,
    ingest_pb2,
    ingest_pb2_grpc,
    product_pb2,
    product_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
)
from analytics_testing.fuzz import THROUGH_SERVICES

pytestmark = [
    pytest.mark.e2e,
    # Reports of failing examples may hold megabyte strings; hypothesis warns before printing them.
    pytest.mark.filterwarnings("ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"),
]

FUZZ = THROUGH_SERVICES
MARK = "{MARK}"  # replaced by the request's unique path prefix when it is sent
CONTROL = "".join(map(chr, [*range(32), 127]))
# Documented limits (README: Event limits) that the oracle below relies on.
LIMITS = {"title": 1024, "user_id": 256, "language": 35}

printable = st.characters(exclude_categories=("Cs", "Cc"))
nasty = st.text(max_size=40)  # any code point but surrogates: control characters, NUL, RTL marks ...
huge = st.builds(
    lambda ch, n: ch * n,
    st.characters(exclude_categories=("Cs",)),
    st.sampled_from([36, 101, 257, 1025, 2049, 4097, 70_000, 1_100_000]),
)
any_text = st.one_of(st.just(""), nasty, huge)
uuid_like = st.one_of(
    st.uuids().map(str),
    st.just(""),
    nasty,
    st.sampled_from(
        [
            "not-a-uuid",
            "00000000-0000-0000-0000-00000000000g",
            "{12345678-1234-5678-1234-567812345678}",
            "urn:uuid:12345678-1234-5678-1234-567812345678",
            "12345678123456781234567812345678",
            "12345678-1234-5678-1234-5678123456789",
            " 12345678-1234-5678-1234-567812345678 ",
        ]
    ),
)
offsets = st.timedeltas(min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59))
timestamps = st.one_of(
    st.just(""),
    st.datetimes(
        min_value=datetime(1, 1, 1),
        max_value=datetime(9999, 12, 31, 23, 59, 59),
        timezones=st.one_of(st.none(), st.just(UTC), offsets.map(timezone)),
    ).map(lambda d: d.isoformat()),
    nasty,
    st.sampled_from(
        [
            "0001-01-01T00:00:00+01:00",  # UTC is in year 0
            "9999-12-31T23:59:59-01:00",  # UTC is in year 10000
            "1969-12-31T23:59:59Z",
            "2024-02-30T00:00:00Z",
            "2024-01-01T25:00:00Z",
            "2024-01-01",
            "now",
            "1e10",
            " ",
        ]
    ),
)
good_events = st.builds(
    events_pb2.Event,
    site_id=st.just("{SITE}"),
    event_type=st.one_of(
        st.sampled_from(["pageview", "page_view", "signup"]), st.text(printable, min_size=1, max_size=20)
    ),
    path=st.text(printable, max_size=30).map(lambda s: MARK + s),
    url=st.one_of(
        st.just(""), st.text(printable, max_size=20).map(lambda s: f"https://shop.example/x?utm_source={s}")
    ),
    referrer=st.one_of(st.just(""), st.just("https://www.search.example/?q=1")),
    title=st.text(printable, max_size=50),
    user_id=st.text(printable, max_size=20),
    event_id=st.one_of(st.just(""), st.uuids().map(str)),
    timestamp=st.one_of(
        st.just(""),
        st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2020, 1, 1)).map(
            lambda d: d.isoformat() + "Z"
        ),
    ),
    properties=st.dictionaries(
        st.text(printable, min_size=1, max_size=10), st.text(printable, max_size=20), max_size=5
    ),
    screen_width=st.integers(0, 100_000),
    screen_height=st.integers(0, 100_000),
    language=st.sampled_from(["", "en-US", "de"]),
)
fuzzed_events = st.builds(
    events_pb2.Event,
    site_id=st.one_of(st.just("{SITE}"), st.just("{OTHER}"), uuid_like),
    event_type=st.one_of(st.just("pageview"), any_text),
    path=st.one_of(any_text.map(lambda s: MARK + s), any_text),
    url=st.one_of(any_text, st.sampled_from(["http://[::1", "https://", "ftp://x.example/", "http://x/%zz"])),
    referrer=st.one_of(any_text, st.just("http://[oops")),
    title=any_text,
    user_id=any_text,
    event_id=uuid_like,
    timestamp=timestamps,
    properties=st.dictionaries(any_text, any_text, max_size=3)
    | st.dictionaries(st.text(printable, min_size=1, max_size=5), st.just("v"), min_size=60, max_size=70),
    screen_width=st.integers(0, 2**32 - 1),
    screen_height=st.integers(0, 2**32 - 1),
    language=any_text,
)


@st.composite
def mutated_events(draw: st.DrawFn) -> events_pb2.Event:
    """A good event with one field replaced by a fuzzed value: reaches the deepest validation."""
    event = draw(good_events)
    bad = draw(fuzzed_events)
    name = draw(st.sampled_from([f.name for f in events_pb2.Event.DESCRIPTOR.fields]))
    if name == "properties":
        event.properties.clear()
        event.properties.update(bad.properties)
    else:
        setattr(event, name, getattr(bad, name))
    return event


events = st.one_of(good_events, fuzzed_events, mutated_events())
credentials = st.sampled_from(["own", "own", "own", "bearer", "other", "admin", "none", "garbage"])


def metadata(choice: str, sites: Any, admin_token: str) -> tuple[tuple[str, str], ...]:
    return {
        "own": (("x-api-key", sites.api_key),),
        "bearer": (("authorization", f"Bearer {sites.api_key}"),),
        "other": (("x-api-key", sites.other_api_key),),
        "admin": (("authorization", f"Bearer {admin_token}"),),
        "none": (),
        "garbage": (("x-api-key", "ak_" + "z" * 40),),
    }[choice]


def surely_invalid(event: events_pb2.Event) -> bool:
    """A partial oracle: events any correct validator must reject, whatever else it checks."""
    if event.event_id and _not_uuid(event.event_id):
        return True
    if _not_uuid(event.site_id):
        return True
    for name, limit in LIMITS.items():
        value = getattr(event, name)
        if len(value) > limit or any(ch in CONTROL for ch in value):
            return True
    return (
        max(event.screen_width, event.screen_height) > 100_000
        or len(event.properties) > 64
        or any(ch in CONTROL for ch in event.referrer)
    )


def _not_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return True
    return False


class Sender:
    """Sends one fuzzed ingest request and records in the test's ledger whether it was accepted."""

    def __init__(self, ledger: Any, channels: dict[str, grpc.Channel], check: Any) -> None:
        self.ledger = ledger
        self.ingest = ingest_pb2_grpc.IngestServiceStub(channels["ingest"])
        self.check = check
        self.sites = ledger.sites

    def prepare(self, events: list[events_pb2.Event]) -> tuple[str, list[events_pb2.Event]]:
        """Copies of events with this request's path marker and the real site ids filled in."""
        marker = self.ledger.marker()
        prepared = []
        for original in events:
            event = events_pb2.Event()
            event.CopyFrom(original)
            event.path = event.path.replace(MARK, marker, 1)
            event.site_id = event.site_id.replace("{SITE}", self.sites.site_id).replace(
                "{OTHER}", self.sites.other_site_id
            )
            prepared.append(event)
        return marker, prepared

    def send(self, method: str, request: Any, meta: Any, events: list[events_pb2.Event], marker: str) -> None:
        event_ids = [e.event_id for e in events]
        try:
            getattr(self.ingest, method)(request, metadata=meta, timeout=30)
        except grpc.RpcError as error:
            self.check(error)
            self.ledger.record(marker, event_ids, accepted=False)
            return
        self.ledger.record(marker, event_ids, accepted=True)
        invalid = [e for e in events if surely_invalid(e)]
        assert not invalid, f"{method} accepted an invalid event: {invalid[0]!r:.500}"


@pytest.fixture
def sender(ledger: Any, grpc_channels: dict[str, grpc.Channel], check_status: Any) -> Sender:
    return Sender(ledger, grpc_channels, check_status)


def test_track_and_track_batch_take_any_event_values(sender: Sender, property_stack: Any) -> None:
    admin = property_stack.admin_token

    @FUZZ
    @given(
        batch=st.lists(events, min_size=0, max_size=6),
        single=st.booleans(),
        who=credentials,
    )
    @example(
        batch=[events_pb2.Event(site_id="{SITE}", event_type="pageview", path=MARK)] * 1001,
        single=False,
        who="own",
    )
    def run(batch: list[events_pb2.Event], single: bool, who: str) -> None:
        marker, prepared = sender.prepare(batch)
        meta = metadata(who, sender.sites, admin)
        if single and prepared:
            sender.send("Track", ingest_pb2.TrackRequest(event=prepared[0]), meta, prepared[:1], marker)
        else:
            sender.send("TrackBatch", ingest_pb2.TrackBatchRequest(events=prepared), meta, prepared, marker)

    run()
    sender.ledger.assert_nothing_rejected_stored()
    assert sender.ledger.accepted > 0 and sender.ledger.rejected > 0, "the fuzzing exercised one outcome only"


def test_track_stream_takes_any_event_values(sender: Sender, property_stack: Any) -> None:
    admin = property_stack.admin_token

    @settings(FUZZ, max_examples=100)
    @given(messages=st.lists(st.lists(events, max_size=4), min_size=0, max_size=3), who=credentials)
    def run(messages: list[list[events_pb2.Event]], who: str) -> None:
        flat = [e for m in messages for e in m]
        marker, prepared = sender.prepare(flat)
        chunks: list[ingest_pb2.TrackStreamRequest] = []
        start = 0
        for message in messages:
            chunks.append(ingest_pb2.TrackStreamRequest(events=prepared[start : start + len(message)]))
            start += len(message)
        sender.send("TrackStream", iter(chunks), metadata(who, sender.sites, admin), prepared, marker)

    run()
    sender.ledger.assert_nothing_rejected_stored()


# The services' upstream names, as ServiceStack.addresses calls them.
UPSTREAMS = {
    "analytics.v1.IngestService": "ingest",
    "analytics.v1.QueryService": "query",
    "analytics.v1.ProductService": "query",
    "analytics.v1.LiveService": "query",
    "analytics.v1.SeedEventService": "ingest",
    "analytics.v1.AuthService": "auth",
    "analytics.v1.ProcessorService": "processor",
    "analytics.v1.EventApiService": "ingest",
    "analytics.v1.PeopleService": "query",
    "analytics.v1.PrivacyService": "processor",
}
# Unary RPCs the raw-bytes fuzzer leaves alone, and why; every other one is fuzzed, new ones too.
NOT_FUZZED = {
    # Random input that decodes would create sites, or revoke the key the suite runs with.
    "/analytics.v1.AuthService/CreateSite": "creates sites",
    "/analytics.v1.AuthService/RevokeApiKey": "could revoke the suite's own key",
    # Replays dead letters into the stream the ledger checks.
    "/analytics.v1.ProcessorService/ReplayDeadLetters": "republishes events",
    # Would delete a site, or a person's data, that other checks count on.
    "/analytics.v1.AuthService/DeleteSite": "deletes sites",
    "/analytics.v1.PrivacyService/EraseVisitor": "erases stored events",
}


def _unary_methods() -> dict[str, str]:
    """Every unary RPC of the descriptor set (gRPC path → upstream), read from the descriptor."""
    data = importlib.resources.files("analytics.v1").joinpath("descriptor_set.binpb").read_bytes()
    methods: dict[str, str] = {}
    for file in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        for service in file.service:
            name = f"{file.package}.{service.name}"
            for method in service.method:
                if not (method.client_streaming or method.server_streaming):
                    methods[f"/{name}/{method.name}"] = UPSTREAMS[name]
    return methods


METHODS = _unary_methods()
FUZZED = sorted(set(METHODS) - set(NOT_FUZZED))


def test_the_fuzzed_methods_are_every_unary_rpc_but_the_listed_ones() -> None:
    assert set(NOT_FUZZED) <= set(METHODS), "an exclusion names an RPC that no longer exists"
    assert "/analytics.v1.QueryService/Query" in FUZZED
    assert "/analytics.v1.AuthService/Authenticate" in FUZZED


def _mutate(data: bytes, seed: int) -> bytes:
    """A few random byte flips and insertions: mostly undecodable, sometimes a different valid message."""
    rng = random.Random(seed)
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if buffer and rng.random() < 0.6:
            buffer[rng.randrange(len(buffer))] = rng.randrange(256)
        else:
            buffer.insert(rng.randint(0, len(buffer)), rng.randrange(256))
    return bytes(buffer)


# How a raw payload is built: random bytes, a corrupted valid request, or a huge length prefix.
payloads = st.one_of(
    st.tuples(st.just("random"), st.binary(max_size=300)),
    st.tuples(st.sampled_from(["track", "batch"]), st.integers(0, 2**32).map(lambda n: n.to_bytes(5, "big"))),
    st.tuples(st.just("prefix"), st.binary(max_size=50)),
)


def test_raw_random_bytes_as_requests(
    grpc_channels: dict[str, grpc.Channel], ledger: Any, check_status: Any, property_stack: Any
) -> None:
    sites = ledger.sites

    @FUZZ
    @given(method=st.sampled_from(FUZZED), payload=payloads, who=credentials)
    def run(method: str, payload: tuple[str, bytes], who: str) -> None:
        kind, data = payload
        marker = ledger.marker()
        event = events_pb2.Event(
            site_id=sites.site_id, event_type="pageview", path=marker, event_id=str(uuid.uuid4())
        )
        if kind == "track":
            data = _mutate(ingest_pb2.TrackRequest(event=event).SerializeToString(), int.from_bytes(data))
        elif kind == "batch":
            request = ingest_pb2.TrackBatchRequest(events=[event] * 3)
            data = _mutate(request.SerializeToString(), int.from_bytes(data))
        elif kind == "prefix":
            data = b"\x0a\xff\xff\xff\xff\x0f" + data
        call = grpc_channels[METHODS[method]].unary_unary(method)  # identity serializers: raw bytes
        try:
            call(data, metadata=metadata(who, sites, property_stack.admin_token), timeout=30)
        except grpc.RpcError as error:
            check_status(error)
            ledger.record(marker, [event.event_id], accepted=False)
        else:
            ledger.record(marker, [event.event_id], accepted=True)

    run()
    ledger.assert_nothing_rejected_stored()


# Query inputs: JSON made of the query vocabulary, near misses of it, and anything else.
WORDS = [
    "visitors", "visits", "pageviews", "bounce_rate", "percentage", "events", "visit_duration",
    "event:page", "event:props:plan", "visit:country", "visit:source", "time", "time:hour", "time:week",
    "is", "is_not", "contains", "matches", "matches_not", "and", "or", "not", "has_done",
    "day", "7d", "all", "month", "2024-03-10", "2024-03-10T10:00:00+05:45", "2024-02-30", "asc", "desc",
    "previous_period", "year_over_year", "custom", "(", "[z-a]", "^/", "",
]  # fmt: skip
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 20_000)
    | st.floats(allow_nan=False)
    | st.sampled_from(WORDS)
    | nasty,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["mode", "date_range", "time_labels", "total_rows", "comparisons", "limit", "offset"]
            )
            | st.text(max_size=5),
            inner,
            max_size=3,
        )
    ),
    max_leaves=25,
)
plausible_bodies = st.fixed_dictionaries(
    {"site_id": st.sampled_from(["{SITE}", "{OTHER}", "", "nowhere.example", "not a domain"]) | nasty},
    optional={
        name: json_values
        for name in (
            "metrics",
            "date_range",
            "dimensions",
            "filters",
            "order_by",
            "include",
            "pagination",
            "date",
        )
    },
)
date_ranges = st.builds(
    query_pb2.DateRange,
    period=st.sampled_from(WORDS) | nasty,
    start=st.sampled_from(WORDS) | timestamps,
    end=st.sampled_from(WORDS) | timestamps,
    relative_to=st.sampled_from(["", "2024-03-10", "0001-01-01", "9999-12-31"]) | nasty,
)
typed_requests = st.builds(
    query_pb2.QueryRequest,
    site_id=st.sampled_from(["{SITE}", "{OTHER}"]) | uuid_like,
    date_range=date_ranges,
    metrics=st.lists(st.sampled_from(WORDS) | nasty, max_size=4),
    dimensions=st.lists(st.sampled_from(WORDS) | nasty, max_size=3),
    pagination=st.builds(
        query_pb2.Pagination, limit=st.integers(0, 2**32 - 1), offset=st.integers(0, 2**32 - 1)
    ),
    include=st.builds(query_pb2.QueryInclude, time_labels=st.booleans(), total_rows=st.booleans()),
)


def _site(value: str, sites: Any) -> str:
    return value.replace("{SITE}", sites.site_id).replace("{OTHER}", sites.other_site_id)


def test_query_rpcs_answer_any_input_with_ok_or_a_client_error(
    grpc_channels: dict[str, grpc.Channel], ledger: Any, check_status: Any, property_stack: Any
) -> None:
    sites = ledger.sites
    stub = query_pb2_grpc.QueryServiceStub(grpc_channels["query"])
    outcomes: set[str] = set()

    @FUZZ
    @given(body=plausible_bodies, typed=typed_requests, who=credentials, plausible=st.booleans())
    def run(body: dict[str, Any], typed: query_pb2.QueryRequest, who: str, plausible: bool) -> None:
        meta = metadata(who, sites, property_stack.admin_token)
        try:
            if plausible:
                body = {**body, "site_id": _site(body["site_id"], sites)}
                stub.QueryPlausible(
                    json_format.ParseDict(body, query_pb2.QueryPlausibleRequest()), metadata=meta
                )
            else:
                typed.site_id = _site(typed.site_id, sites)
                stub.Query(typed, metadata=meta, timeout=30)
        except grpc.RpcError as error:
            check_status(error)
            outcomes.add(error.code().name)  # type: ignore[attr-defined]
        else:
            outcomes.add("OK")

    run()
    assert "INVALID_ARGUMENT" in outcomes and len(outcomes) > 1, outcomes
    for process in property_stack.processes.values():
        assert process.running, f"{process.name} died:\n{process.log_tail()}"


funnel_steps = st.lists(
    st.builds(
        product_pb2.FunnelStep,
        event_name=st.sampled_from(["", "signup", "page_view"]) | nasty,
        page_path=st.sampled_from(["", "/", "/docs/*", "/**", "docs", "/a/***"]) | nasty,
        filters=st.dictionaries(nasty, nasty, max_size=2),
    ),
    max_size=9,
)
product_requests = st.one_of(
    st.builds(
        product_pb2.QueryFunnelRequest,
        site_id=st.sampled_from(["{SITE}", "{OTHER}"]) | uuid_like,
        funnel_id=st.just("") | uuid_like,
        steps=funnel_steps,
        window_seconds=st.integers(0, 2**32 - 1),
        date_range=date_ranges,
        breakdown=st.sampled_from(["", "visit:source", "event:page", "time:day"]) | nasty,
    ),
    st.builds(
        product_pb2.QueryRetentionRequest,
        site_id=st.sampled_from(["{SITE}", "{OTHER}"]) | uuid_like,
        date_range=date_ranges,
        period=st.sampled_from(["", "day", "week", "month", "year"]) | nasty,
        periods=st.integers(0, 2**32 - 1),
        cohort_event=st.sampled_from(["", "signup", "page_view"]) | nasty,
        return_event=nasty,
    ),
    st.builds(
        product_pb2.CreateGoalRequest,
        site_id=st.sampled_from(["{SITE}", "{OTHER}"]) | uuid_like,
        goal=st.builds(
            product_pb2.GoalDefinition, event_name=nasty, page_path=st.just("/x") | nasty, display_name=nasty
        ),
    ),
    st.builds(
        product_pb2.CreateFunnelRequest,
        site_id=st.sampled_from(["{SITE}", "{OTHER}", ""]) | uuid_like,
        name=nasty,
        steps=funnel_steps,
        window_seconds=st.integers(0, 2**32 - 1),
    ),
)


def test_product_rpcs_answer_any_input_with_ok_or_a_client_error(
    grpc_channels: dict[str, grpc.Channel], ledger: Any, check_status: Any, property_stack: Any
) -> None:
    sites = ledger.sites
    stub = product_pb2_grpc.ProductServiceStub(grpc_channels["query"])
    outcomes: set[str] = set()

    @FUZZ
    @given(request=product_requests, who=credentials)
    def run(request: Any, who: str) -> None:
        request.site_id = _site(request.site_id, sites)
        method = getattr(stub, type(request).__name__.removesuffix("Request"))
        try:
            method(request, metadata=metadata(who, sites, property_stack.admin_token), timeout=30)
        except grpc.RpcError as error:
            check_status(error)
            outcomes.add(error.code().name)  # type: ignore[attr-defined]
        else:
            outcomes.add("OK")

    run()
    assert "INVALID_ARGUMENT" in outcomes and len(outcomes) > 1, outcomes
    for process in property_stack.processes.values():
        assert process.running, f"{process.name} died:\n{process.log_tail()}"


# --- Deterministic cases of what the fuzzing found ----------------------------------------------


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamp_beyond_datetime_range_is_invalid_argument(
    grpc_channels: dict[str, grpc.Channel], sites: Any, timestamp: str
) -> None:
    """Valid ISO-8601 whose UTC form falls outside years 1..9999 must be a field error, not INTERNAL."""
    track = grpc_channels["ingest"].unary_unary(
        "/analytics.v1.IngestService/Track",
        request_serializer=ingest_pb2.TrackRequest.SerializeToString,
        response_deserializer=ingest_pb2.TrackResponse.FromString,
    )
    event = events_pb2.Event(site_id=sites.site_id, event_type="pageview", path="/t", timestamp=timestamp)
    with pytest.raises(grpc.RpcError) as caught:
        track(ingest_pb2.TrackRequest(event=event), metadata=(("x-api-key", sites.api_key),), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert "event.timestamp" in caught.value.details()


@pytest.mark.parametrize(
    "method",
    [
        "/analytics.v1.IngestService/Track",
        "/analytics.v1.IngestService/TrackBatch",
        "/analytics.v1.QueryService/GetDailyStats",
        "/analytics.v1.AuthService/Authenticate",
    ],
)
def test_undecodable_request_is_invalid_argument(
    grpc_channels: dict[str, grpc.Channel], sites: Any, method: str
) -> None:
    """Bytes that are not a protobuf message are the caller's fault: INVALID_ARGUMENT, not UNKNOWN."""
    call = grpc_channels[METHODS[method]].unary_unary(method)
    with pytest.raises(grpc.RpcError) as caught:
        call(b"\xff", metadata=(("x-api-key", sites.api_key),), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (
        f"{caught.value.code()}: {caught.value.details()}"
    )
