"""Provider selection, the reuse overrides and the foreground runners."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from analytics_testing.local import main as local_main
from analytics_testing.nats import LocalNats, NatsServer
from analytics_testing.plugin import TestSettings, open_nats, open_postgres
from analytics_testing.ports import free_port
from analytics_testing.postgres import ExternalPostgres, PostgresServer

pytestmark = pytest.mark.integration


def _no_workdir() -> Path:
    raise AssertionError("a reused server must not get a work directory")


def test_settings_come_from_the_given_environment() -> None:
    assert TestSettings.from_env({}) == TestSettings()
    settings = TestSettings.from_env(
        {
            "ANALYTICS_TEST_PROVIDER": "docker",
            "ANALYTICS_TEST_TIMESCALE_LICENSE": "timescale",
            "ANALYTICS_TEST_DATABASE_URL": "postgresql://u@h:1/d",
            "ANALYTICS_TEST_NATS_URL": "nats://h:2",
        }
    )
    assert settings == TestSettings("docker", "timescale", "postgresql://u@h:1/d", "nats://h:2")
    with pytest.raises(pytest.UsageError, match="ANALYTICS_TEST_PROVIDER"):
        TestSettings.from_env({"ANALYTICS_TEST_PROVIDER": "podman"})
    with pytest.raises(pytest.UsageError, match="ANALYTICS_TEST_TIMESCALE_LICENSE"):
        TestSettings.from_env({"ANALYTICS_TEST_TIMESCALE_LICENSE": "gpl"})


def test_reuse_overrides_start_nothing(postgres_server: PostgresServer, nats_server: NatsServer) -> None:
    settings = TestSettings(database_url=postgres_server.url, nats_url=nats_server.url)
    messages: list[str] = []
    with (
        open_postgres(settings, _no_workdir, messages.append) as pg,
        open_nats(settings, _no_workdir, messages.append) as ns,
    ):
        assert isinstance(pg, ExternalPostgres)
        assert pg.url == postgres_server.url
        assert ns.url == nats_server.url
        assert pg.admin_url.endswith("/postgres")
        url = pg.create_database("reuse_check")
        assert url.endswith("/reuse_check")
        pg.drop_database("reuse_check")
    assert all("reusing" in m for m in messages)


def test_reuse_overrides_through_pytest(
    postgres_server: PostgresServer, nats_server: NatsServer, tmp_path: Path
) -> None:
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = session\nfilterwarnings = error\n"
    )
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent(
            f"""
            import psycopg

            def test_reused(postgres_url, database_url, nats_url):
                assert postgres_url == {postgres_server.url!r}
                assert nats_url == {nats_server.url!r}
                assert database_url.rsplit("/", 1)[0] == postgres_url.rsplit("/", 1)[0]
                with psycopg.connect(database_url) as conn:
                    row = conn.execute(
                        "SELECT extname FROM pg_extension WHERE extname = 'timescaledb'"
                    ).fetchone()
                    assert row == ("timescaledb",)
            """
        )
    )
    env = {
        **os.environ,
        "ANALYTICS_TEST_DATABASE_URL": postgres_server.url,
        "ANALYTICS_TEST_NATS_URL": nats_server.url,
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_inner.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert "starting" not in result.stderr


@pytest.mark.parametrize("kind", ["nats", "postgres"])
def test_foreground_runner_stops_cleanly_on_sigterm(kind: str, tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "analytics_testing.local",
            kind,
            "--data-dir",
            str(tmp_path / kind),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert local_main(["wait-tcp", f"127.0.0.1:{port}", "--timeout", "60"]) == 0
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    if kind == "nats":
        assert "Server Exiting" in output
    else:
        assert "fast shutdown request" in output


def test_wait_tcp_times_out_on_a_closed_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert local_main(["wait-tcp", f"127.0.0.1:{free_port()}", "--timeout", "0.5"]) == 1
    assert "still closed" in capsys.readouterr().err


def test_local_nats_reports_start_failures(tmp_path: Path) -> None:
    with LocalNats(tmp_path / "a", free_port()) as running:
        clash = LocalNats(tmp_path / "b", running.port)
        with pytest.raises(RuntimeError, match="exited with code"):
            clash.start(timeout=20)
