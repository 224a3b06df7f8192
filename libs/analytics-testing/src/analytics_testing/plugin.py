"""pytest plugin: PostgreSQL+TimescaleDB and NATS JetStream fixtures, local processes or containers."""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, TypeVar, cast

import psycopg
import pytest

from analytics_testing.nats import ExternalNats, LocalNats, NatsServer
from analytics_testing.ports import free_port
from analytics_testing.postgres import LICENSES, ExternalPostgres, License, LocalPostgres, PostgresServer

__all__ = [
    "DOCKER_NATS_IMAGE",
    "DOCKER_POSTGRES_IMAGE",
    "ENV_DATABASE_URL",
    "ENV_LICENSE",
    "ENV_NATS_URL",
    "ENV_PROVIDER",
    "NatsFactory",
    "PostgresFactory",
    "TestSettings",
    "open_nats",
    "open_postgres",
]

# The only environment variables the plugin reads.
ENV_PROVIDER = "ANALYTICS_TEST_PROVIDER"
ENV_LICENSE = "ANALYTICS_TEST_TIMESCALE_LICENSE"
ENV_DATABASE_URL = "ANALYTICS_TEST_DATABASE_URL"
ENV_NATS_URL = "ANALYTICS_TEST_NATS_URL"

DOCKER_POSTGRES_IMAGE = "timescale/timescaledb:latest-pg15"
DOCKER_NATS_IMAGE = "nats:2.10"

Provider = Literal["local", "docker"]
Report = Callable[[str], None]


@dataclass(frozen=True)
class TestSettings:
    """Where the fixtures get their servers from, read once from the environment."""

    __test__ = False  # a settings object, not a test class

    provider: Provider = "local"
    license: License = "apache"
    database_url: str | None = None
    nats_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TestSettings:
        provider = env.get(ENV_PROVIDER, "local") or "local"
        if provider not in ("local", "docker"):
            raise pytest.UsageError(f"{ENV_PROVIDER} must be 'local' or 'docker', got {provider!r}")
        license = env.get(ENV_LICENSE, "apache") or "apache"
        if license not in LICENSES:
            raise pytest.UsageError(f"{ENV_LICENSE} must be one of {LICENSES}, got {license!r}")
        return cls(
            provider=cast(Provider, provider),
            license=license,
            database_url=env.get(ENV_DATABASE_URL) or None,
            nats_url=env.get(ENV_NATS_URL) or None,
        )


@contextlib.contextmanager
def open_postgres(
    settings: TestSettings, workdir: Callable[[], Path], report: Report
) -> Iterator[PostgresServer]:
    """Yield the PostgreSQL server the settings ask for, started for the block unless reused."""
    if settings.database_url:
        report("reusing the PostgreSQL server given by " + ENV_DATABASE_URL)
        yield ExternalPostgres(settings.database_url)
        return
    if settings.provider == "docker":
        with _docker_postgres(settings.license, report) as server:
            yield server
        return
    server = LocalPostgres(workdir() / "data", free_port(), license=settings.license, durable=False)
    report(f"starting PostgreSQL+TimescaleDB ({settings.license} license) on port {server.port} ...")
    started = time.monotonic()
    server.start()
    report(f"PostgreSQL ready in {time.monotonic() - started:.1f}s")
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def open_nats(settings: TestSettings, workdir: Callable[[], Path], report: Report) -> Iterator[NatsServer]:
    """Yield the NATS server the settings ask for, started for the block unless reused."""
    if settings.nats_url:
        report("reusing the NATS server given by " + ENV_NATS_URL)
        yield ExternalNats(settings.nats_url)
        return
    if settings.provider == "docker":
        with _docker_nats(report) as server:
            yield server
        return
    server = LocalNats(workdir(), free_port())
    report(f"starting nats-server with JetStream on port {server.port} ...")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def _docker_postgres(license: License, report: Report) -> Iterator[PostgresServer]:
    with warnings.catch_warnings():
        # testcontainers deprecates module paths between releases; that must not fail a test run.
        warnings.simplefilter("ignore", DeprecationWarning)
        from testcontainers.community.postgres import PostgresContainer

    report(f"starting container {DOCKER_POSTGRES_IMAGE} ({license} license) ...")
    # A throw-away container reachable only by this test run: the password protects nothing.
    container = PostgresContainer(
        DOCKER_POSTGRES_IMAGE,
        username="analytics",
        password="analytics",  # noqa: S106
        dbname="analytics",
        driver=None,
    )
    settings = {
        "shared_preload_libraries": "timescaledb",
        "timescaledb.license": license,
        "timescaledb.telemetry_level": "off",
        "max_connections": "200",
        "fsync": "off",
    }
    container.with_command(["postgres", *(arg for k, v in settings.items() for arg in ("-c", f"{k}={v}"))])
    container.start()
    try:
        yield ExternalPostgres(container.get_connection_url(driver=None))
    finally:
        container.stop()


@contextlib.contextmanager
def _docker_nats(report: Report) -> Iterator[NatsServer]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    report(f"starting container {DOCKER_NATS_IMAGE} with JetStream ...")
    container = (
        DockerContainer(DOCKER_NATS_IMAGE)
        .with_command("-js --max_payload 8MB")
        .with_exposed_ports(4222)
        .waiting_for(LogMessageWaitStrategy("Server is ready"))
    )
    container.start()
    try:
        yield ExternalNats(f"nats://{container.get_container_host_ip()}:{container.get_exposed_port(4222)}")
    finally:
        container.stop()


def _reporter(config: pytest.Config) -> Report:
    capture = config.pluginmanager.get_plugin("capturemanager")

    def report(message: str) -> None:
        # Slow starts should be visible while they happen, not in a captured-output section later.
        ctx = capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()
        with ctx:
            print(f"\nanalytics-testing: {message}", file=sys.stderr, flush=True)

    return report


@pytest.fixture(scope="session")
def analytics_test_settings() -> TestSettings:
    """Fixture provider choice and overrides, from ANALYTICS_TEST_* environment variables."""
    return TestSettings.from_env(os.environ)


@pytest.fixture(scope="session")
def postgres_server(
    analytics_test_settings: TestSettings,
    tmp_path_factory: pytest.TempPathFactory,
    pytestconfig: pytest.Config,
) -> Iterator[PostgresServer]:
    """A running PostgreSQL+TimescaleDB server for the whole session (LocalPostgres by default)."""
    with open_postgres(
        analytics_test_settings, lambda: tmp_path_factory.mktemp("postgres"), _reporter(pytestconfig)
    ) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """URL of the session server's main database (`analytics` for a local server); shared by all tests."""
    return postgres_server.url


@pytest.fixture
def database_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a fresh database with the timescaledb extension, dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = postgres_server.create_database(name)
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    yield url
    postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def nats_server(
    analytics_test_settings: TestSettings,
    tmp_path_factory: pytest.TempPathFactory,
    pytestconfig: pytest.Config,
) -> Iterator[NatsServer]:
    """A NATS JetStream server shared by the session (LocalNats by default); never stop it in a test."""
    with open_nats(
        analytics_test_settings, lambda: tmp_path_factory.mktemp("nats"), _reporter(pytestconfig)
    ) as server:
        yield server


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer) -> str:
    """URL of the session's NATS server."""
    return nats_server.url


_S = TypeVar("_S", LocalNats, LocalPostgres)


class _ServerFactory(Generic[_S]):
    """Starts private servers for tests that stop, restart or break them; stops them all at teardown."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self.servers: list[_S] = []

    def _make(self) -> _S:
        raise NotImplementedError

    def __call__(self, *, start: bool = True) -> _S:
        server = self._make()
        self.servers.append(server)
        if start:
            server.start()
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


class NatsFactory(_ServerFactory[LocalNats]):
    """Private nats-servers (always local processes, whatever the provider)."""

    def _make(self) -> LocalNats:
        return LocalNats(self._tmp.mktemp("nats-private"), free_port())


class PostgresFactory(_ServerFactory[LocalPostgres]):
    """Private PostgreSQL+TimescaleDB clusters (throw-away: fsync off)."""

    def _make(self) -> LocalPostgres:
        return LocalPostgres(self._tmp.mktemp("postgres-private") / "data", free_port(), durable=False)


@pytest.fixture
def nats_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsFactory]:
    """A callable returning a started private LocalNats; every one is stopped at teardown."""
    factory = NatsFactory(tmp_path_factory)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def postgres_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresFactory]:
    """A callable returning a started private LocalPostgres; every one is stopped at teardown."""
    factory = PostgresFactory(tmp_path_factory)
    try:
        yield factory
    finally:
        factory.stop_all()


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Tests marked `tsl` need the Timescale License features, chosen per run by the license setting.
    if item.get_closest_marker("tsl") is None:
        return
    settings = TestSettings.from_env(os.environ)
    if settings.license != "timescale":
        pytest.skip(f"needs the TimescaleDB TSL edition: run with {ENV_LICENSE}=timescale")
