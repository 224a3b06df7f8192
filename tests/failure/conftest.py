"""Private servers and stacks for failure tests that stop, pause or restart their dependencies.

The session servers of the analytics-testing plugin are shared by every test and must never be
stopped; a failure test that breaks a dependency asks for a private one here instead:

- ``private_postgres``: a started LocalPostgres of its own (throw-away, fsync off);
- ``private_nats``: a started LocalNats of its own, restartable on the same JetStream store;
- ``private_stack``: a factory that starts a ServiceStack with short failure timeouts against
  whichever servers the test passes (by default a fresh database on the session PostgreSQL server
  and a private nats-server), and stops it at teardown.

Every stack started by ``private_stack`` is stopped before any private server goes away, whatever
order a test names the fixtures in.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from analytics_testing.nats import LocalNats
from analytics_testing.plugin import NatsFactory, PostgresFactory
from analytics_testing.postgres import LocalPostgres, PostgresServer
from analytics_testing.stack import ServiceStack

# Short timeouts so a failure shows within a test's time budget:
# - ingest gives up waiting for a PubAck after 1 s (→ UNAVAILABLE), so an outage is seen at once;
# - auth answers are never cached, so every request exercises the auth path;
# - the processor polls often, so "caught up" is reached quickly after a recovery;
# - an ack lost while NATS restarts is redelivered after 5 s instead of a minute (and stored once).
FAILURE_ENV: Mapping[str, str] = {
    "ANALYTICS_PUBLISH_TIMEOUT_S": "1",
    "ANALYTICS_AUTH_CACHE_TTL_S": "0",
    "ANALYTICS_PROCESSOR_FETCH_TIMEOUT_S": "0.1",
    "ANALYTICS_PROCESSOR_RETRY_DELAY_S": "0.5",
    "ANALYTICS_PROCESSOR_REDELIVERY_BACKOFF_S": "5",
}


@pytest.fixture
def private_postgres(postgres_factory: PostgresFactory) -> LocalPostgres:
    """A started PostgreSQL+TimescaleDB cluster of this test only; stop and start it at will.

    Its ``url`` names the ``analytics`` database, which the services migrate on start.
    """
    return postgres_factory()


@pytest.fixture
def private_nats(nats_factory: NatsFactory) -> LocalNats:
    """A started nats-server of this test only; ``stop()``/``start()`` keep its JetStream store."""
    return nats_factory()


StackFactory = Callable[..., ServiceStack]


@pytest.fixture
def private_stack(
    request: pytest.FixtureRequest,
    postgres_factory: PostgresFactory,
    nats_factory: NatsFactory,
    tmp_path: Path,
) -> Iterator[StackFactory]:
    """Factory: ``private_stack(database_url=None, nats_url=None, with_edge=False, extra_env=None)``.

    Starts auth, processor, ingest, query (and the Envoy edge when asked) as real processes and
    waits until all are SERVING. ``database_url`` defaults to a fresh database on the session server
    (dropped at teardown); ``nats_url`` defaults to a new private nats-server. ``extra_env`` is laid
    over FAILURE_ENV. Stacks are stopped at teardown, before the private servers they use.
    """
    stacks: list[ServiceStack] = []
    databases: list[tuple[PostgresServer, str]] = []

    def start(
        *,
        database_url: str | None = None,
        nats_url: str | None = None,
        with_edge: bool = False,
        extra_env: Mapping[str, str] | None = None,
        timeout_s: float = 60.0,
    ) -> ServiceStack:
        if database_url is None:
            # Looked up only when needed: a test on private servers never starts the session one.
            server: PostgresServer = request.getfixturevalue("postgres_server")
            name = f"failure_{uuid.uuid4().hex[:16]}"
            database_url = server.create_database(name)
            databases.append((server, name))
        if nats_url is None:
            nats_url = nats_factory().url
        stack = ServiceStack(
            database_url=database_url,
            nats_url=nats_url,
            log_dir=tmp_path / f"stack-{len(stacks)}-logs",
            admin_token=secrets.token_urlsafe(32),
            extra_env={**FAILURE_ENV, **(extra_env or {})},
            with_edge=with_edge,
        )
        stacks.append(stack)
        stack.start(timeout_s=timeout_s)
        return stack

    try:
        yield start
    finally:
        for stack in stacks:
            _stop(stack)
        for server, name in databases:
            server.drop_database(name)


def _stop(stack: ServiceStack, timeout_s: float = 5.0) -> None:
    """ServiceStack.stop's order with a shorter SIGKILL deadline: clean-up, not a shutdown test.

    Graceful shutdown is asserted by the tests that care; a stack torn down after a test must not
    cost 20 s per slow process.
    """
    for name in ("edge", "ingest", "query", "processor", "auth"):
        if name in stack.processes:
            stack.processes[name].stop(timeout_s)
