"""One real stack for the property tests, plus the bookkeeping that proves rejected input is never stored.

The stack (auth, processor, ingest, query and the Envoy edge) runs against its own database on the
session PostgreSQL server and its own nats-server: the JetStream consumer must not be shared with
another stack of the same session, whose processor would otherwise store these events elsewhere.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc
import psycopg
import pytest

from analytics.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc
from analytics_testing.nats import LocalNats
from analytics_testing.ports import free_port
from analytics_testing.postgres import PostgresServer
from analytics_testing.stack import ServiceStack

# What a service may answer to any input a client can send; anything else is a server fault.
CLIENT_ERRORS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        # A goal named as another of the site's (409).
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
# INVALID_ARGUMENT messages start with the path of the first bad field, as ServiceError.invalid
# writes them: "event.path: ...", "events[3].site_id: ...", "events: ...", "event.properties['k']: ...".
FIELD_PATH = re.compile(r"^[a-z_]+(?:\[\d+\])?(?:\.[a-z_]+)*[:\[]")
# Large messages: >1000 events with long fields pass the 4 MiB gRPC default.
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


@dataclass(frozen=True)
class PropertySites:
    """Two sites, each with a key whose rate limit never interferes; keys only work for their site."""

    site_id: str
    api_key: str
    other_site_id: str
    other_api_key: str


@dataclass(frozen=True)
class HttpReply:
    status: int
    content_type: str
    body: bytes


class Edge:
    """Raw HTTP/1.1 calls to the edge: any bytes, any headers, one connection per call."""

    def __init__(self, port: int) -> None:
        self.port = port

    def call(
        self, method: str, target: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> HttpReply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            # The edge may answer an oversized body (413) and close before it has all been sent.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                conn.request(method, target, body=body, headers=dict(headers or {}))
            response = conn.getresponse()
            return HttpReply(response.status, response.getheader("Content-Type") or "", response.read())
        finally:
            conn.close()


@dataclass
class Ledger:
    """Which fuzzed requests were accepted or rejected, by path marker and by event id.

    Every fuzzed request gets a unique path prefix (``marker``); events whose path starts with it
    can only have come from that request. Event ids are checked as well, for events whose path was
    fuzzed away from the marker; ids that were ever accepted (hypothesis may repeat values) are
    left out of that check.
    """

    stack: ServiceStack
    sites: PropertySites
    accepted_ids: set[str]
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    rejected_markers: set[str] = field(default_factory=set)
    rejected_ids: set[str] = field(default_factory=set)
    accepted: int = 0
    rejected: int = 0
    _counter: Iterator[int] = field(default_factory=itertools.count)

    def marker(self) -> str:
        """A fresh path prefix for one request, e.g. ``/fz-1a2b3c4d-17/``."""
        return f"/fz-{self.tag}-{next(self._counter)}/"

    def record(self, marker: str, event_ids: Sequence[str], accepted: bool) -> None:
        canonical = [_canonical(i) for i in event_ids]
        valid = [i for i in canonical if i is not None]
        if accepted:
            self.accepted += 1
            self.accepted_ids.update(valid)
        else:
            self.rejected += 1
            self.rejected_markers.add(marker)
            self.rejected_ids.update(valid)

    def assert_nothing_rejected_stored(self, timeout_s: float = 30.0) -> None:
        """Sends one good event and waits for it: the processor works in stream order, so by then
        anything a rejected request might have leaked onto the stream would be stored too."""
        sentinel = str(uuid.uuid4())
        with grpc.insecure_channel(self.stack.addresses["ingest"]) as channel:
            ingest_pb2_grpc.IngestServiceStub(channel).Track(
                ingest_pb2.TrackRequest(
                    event=events_pb2.Event(
                        site_id=self.sites.site_id,
                        event_type="pageview",
                        path=f"/fz-{self.tag}-sentinel",
                        event_id=sentinel,
                        timestamp=datetime.now(UTC).isoformat(),
                    )
                ),
                metadata=(("x-api-key", self.sites.api_key),),
                timeout=10,
            )
        deadline = time.monotonic() + timeout_s
        with psycopg.connect(self.stack.database_url, autocommit=True, connect_timeout=10) as conn:
            while not conn.execute(
                "SELECT 1 FROM analytics.events WHERE event_id = %s", (sentinel,)
            ).fetchone():
                assert time.monotonic() < deadline, f"sentinel event not stored within {timeout_s} s"
                time.sleep(0.1)
            rows = conn.execute(
                "SELECT event_id::text, path FROM analytics.events"
                " WHERE path LIKE %s OR event_id::text = ANY(%s)",
                (f"/fz-{self.tag}-%", sorted(self.rejected_ids - self.accepted_ids)),
            ).fetchall()
        leaked = [
            (event_id, path[:80])
            for event_id, path in rows
            if path.startswith(tuple(self.rejected_markers))
            or event_id in self.rejected_ids - self.accepted_ids
        ]
        assert not leaked, f"events of rejected requests were stored: {leaked[:10]}"
        for process in self.stack.processes.values():
            assert process.running, f"{process.name} died:\n{process.log_tail()}"


def _canonical(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _check_status(error: grpc.RpcError) -> None:
    """A failed call must carry a client-error code; INVALID_ARGUMENT must name the bad field."""
    code = error.code()  # type: ignore[attr-defined]
    details = error.details() or ""  # type: ignore[attr-defined]
    assert code in CLIENT_ERRORS, f"{code}: {details[:300]}"
    assert details, f"{code} without a message"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert FIELD_PATH.match(details), f"INVALID_ARGUMENT message names no field: {details[:300]}"


@pytest.fixture(scope="session")
def property_stack(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceStack]:
    """The whole stack with the Envoy edge, on a private nats-server and a database of its own."""
    nats = LocalNats(tmp_path_factory.mktemp("property-nats"), free_port())
    nats.start()
    name = f"property_{uuid.uuid4().hex[:12]}"
    stack = ServiceStack(
        database_url=postgres_server.create_database(name),
        nats_url=nats.url,
        log_dir=tmp_path_factory.mktemp("property-stack-logs"),
        admin_token=secrets.token_urlsafe(32),
        extra_env={"ANALYTICS_PROCESSOR_FETCH_TIMEOUT_S": "0.1"},
        with_edge=True,
    )
    try:
        stack.start(timeout_s=90)
        yield stack
    finally:
        # Clean-up only (graceful shutdown is tested elsewhere): no process may hold it up for long.
        for service in ("edge", "ingest", "query", "processor", "auth"):
            if service in stack.processes:
                stack.processes[service].stop(5.0)
        nats.stop()
        postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def sites(property_stack: ServiceStack) -> PropertySites:
    made = [property_stack.create_site(name) for name in ("fuzz", "fuzz-other")]
    return PropertySites(made[0][0], made[0][1], made[1][0], made[1][1])


@pytest.fixture(scope="session")
def _accepted_ids() -> set[str]:
    return set()


@pytest.fixture
def ledger(property_stack: ServiceStack, sites: PropertySites, _accepted_ids: set[str]) -> Ledger:
    """Per-test record of accepted and rejected requests; call ``assert_nothing_rejected_stored()``."""
    return Ledger(property_stack, sites, _accepted_ids)


@pytest.fixture(scope="session")
def edge(property_stack: ServiceStack) -> Edge:
    """Raw HTTP access to the stack's edge."""
    return Edge(property_stack.http_port)


@pytest.fixture(scope="session")
def grpc_channels(property_stack: ServiceStack) -> Iterator[dict[str, grpc.Channel]]:
    """One synchronous channel per service, shared by all property tests."""
    channels = {
        name: grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        for name, address in property_stack.addresses.items()
    }
    try:
        yield channels
    finally:
        for channel in channels.values():
            channel.close()


@pytest.fixture(scope="session")
def check_status() -> Callable[[grpc.RpcError], None]:
    """The assertion every failed gRPC call must pass: client-error code, a message naming the field."""
    return _check_status
