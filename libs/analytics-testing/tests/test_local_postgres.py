"""LocalPostgres and the PostgreSQL fixtures against a real TimescaleDB."""

from __future__ import annotations

import socket
from pathlib import Path

import psycopg
import pytest

from analytics_testing.plugin import TestSettings
from analytics_testing.ports import free_port
from analytics_testing.postgres import ExternalPostgres, LocalPostgres, PostgresServer, edition, tsl_available

pytestmark = pytest.mark.integration


def test_fresh_database_has_timescaledb_and_hypertables(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        assert row is not None
        assert row[0].startswith("2.")
        conn.execute("CREATE TABLE events (time timestamptz NOT NULL, site text NOT NULL, n int NOT NULL)")
        conn.execute("SELECT create_hypertable('events', 'time', chunk_time_interval => interval '1 day')")
        conn.execute(
            "INSERT INTO events SELECT t, 'a', 1 FROM generate_series("
            "'2024-01-01'::timestamptz, '2024-01-03'::timestamptz - interval '1 hour', interval '1 hour') t"
        )
        buckets = conn.execute(
            "SELECT time_bucket('1 day', time) AS day, sum(n) FROM events GROUP BY day ORDER BY day"
        ).fetchall()
        assert [b[1] for b in buckets] == [24, 24]
        chunks = conn.execute("SELECT count(*) FROM show_chunks('events')").fetchone()
        assert chunks == (2,)


def test_each_test_gets_its_own_database(database_url: str, postgres_url: str) -> None:
    assert database_url != postgres_url
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relname = 'events'").fetchone() == (0,)


def test_server_runs_the_requested_license(
    postgres_server: PostgresServer, analytics_test_settings: TestSettings
) -> None:
    if isinstance(postgres_server, ExternalPostgres):
        pytest.skip("a reused server runs whatever license it was started with")
    assert edition(postgres_server.url) == analytics_test_settings.license


def test_local_server_is_private_and_restartable(tmp_path: Path) -> None:
    server = LocalPostgres(tmp_path / "pg", free_port())
    assert server.ensure_initialized() is True
    assert server.ensure_initialized() is False
    server.start()
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            names = [
                "listen_addresses",
                "unix_socket_directories",
                "fsync",
                "max_connections",
                "timescaledb.telemetry_level",
                "timescaledb.max_background_workers",
            ]
            settings = {n: conn.execute("SELECT current_setting(%s)", [n]).fetchone()[0] for n in names}  # type: ignore[index]
            conn.execute("CREATE TABLE kept (id int)")
            conn.execute("INSERT INTO kept VALUES (42)")
        assert settings == {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": "",
            "fsync": "on",
            "max_connections": "200",
            "timescaledb.telemetry_level": "off",
            # Apache license: no job scheduler (its jobs are all TSL ones and would only log errors).
            "timescaledb.max_background_workers": "0",
        }
        server.stop()
        server.stop()  # idempotent
        assert not server.running
        server.start()
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT id FROM kept").fetchall() == [(42,)]
        url = server.create_database("second")
        assert url == server.url_for("second")
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("second",)
    finally:
        server.stop()


def test_start_failure_reports_the_log_tail(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = LocalPostgres(tmp_path / "pg", taken.getsockname()[1], durable=False)
        with pytest.raises(RuntimeError, match=r"could not bind|could not create any TCP/IP sockets"):
            server.start(timeout=30)
    assert not server.running


def test_timescale_license_needs_the_tsl_library(tmp_path: Path) -> None:
    if tsl_available():
        pytest.skip("the TSL library is installed here")
    with pytest.raises(RuntimeError, match="TSL library"):
        LocalPostgres(tmp_path / "pg", free_port(), license="timescale").ensure_initialized()


def test_bad_license_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="license"):
        LocalPostgres(tmp_path, 1, license="gpl")  # type: ignore[arg-type]
