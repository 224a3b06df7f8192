"""A project-local PostgreSQL 15 + TimescaleDB cluster run as a child process."""

from __future__ import annotations

import functools
import signal
import subprocess
import time
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from analytics_testing import _process

__all__ = [
    "DATABASE",
    "PG_CONFIG",
    "USER",
    "ExternalPostgres",
    "License",
    "LocalPostgres",
    "PostgresServer",
    "edition",
    "pg_bindir",
    "pg_pkglibdir",
    "tsl_available",
]

PG_CONFIG = Path("/usr/lib/postgresql/15/bin/pg_config")
USER = "analytics"
DATABASE = "analytics"
License = Literal["apache", "timescale"]
LICENSES: tuple[License, ...] = ("apache", "timescale")
_CONF_NAME = "analytics.conf"
_LOG_NAME = "postgres.log"
_READY_LINE = "database system is ready to accept connections"


@functools.cache
def _pg_config(flag: str) -> Path:
    if not PG_CONFIG.exists():
        raise RuntimeError(f"{PG_CONFIG} is missing: install PostgreSQL 15 with `make setup`")
    out = subprocess.run([str(PG_CONFIG), flag], check=True, capture_output=True, text=True).stdout
    return Path(out.strip())


def pg_bindir() -> Path:
    """Directory of the PostgreSQL 15 server binaries (initdb, postgres, pg_ctl)."""
    return _pg_config("--bindir")


def pg_pkglibdir() -> Path:
    """Directory PostgreSQL loads extension libraries from."""
    return _pg_config("--pkglibdir")


def tsl_available() -> bool:
    """Whether the Timescale License library is installed, so `timescaledb.license=timescale` can work."""
    return any(pg_pkglibdir().glob("timescaledb-tsl-*.so"))


def edition(url: str) -> str:
    """The TimescaleDB license the server at url runs with: 'apache' or 'timescale'."""
    with psycopg.connect(url, connect_timeout=10) as conn:
        row = conn.execute("SELECT current_setting('timescaledb.license', true)").fetchone()
    if row is None or not row[0]:
        raise RuntimeError("TimescaleDB is not loaded on this server (shared_preload_libraries)")
    return str(row[0])


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(name, safe="")))


class PostgresServer(Protocol):
    """What tests need from a server, whoever runs it."""

    @property
    def url(self) -> str: ...

    @property
    def admin_url(self) -> str: ...

    def create_database(self, name: str) -> str: ...

    def drop_database(self, name: str) -> None: ...


class _CreatesDatabases:
    @property
    def admin_url(self) -> str:
        raise NotImplementedError

    def url_for(self, database: str) -> str:
        raise NotImplementedError

    def create_database(self, name: str) -> str:
        """Create database name (it must not exist) and return its URL."""
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database name if it exists, disconnecting its sessions (tests' pools, TimescaleDB workers)."""
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class ExternalPostgres(_CreatesDatabases):
    """A server someone else runs, reached through a postgresql:// URL (reuse override, containers)."""

    def __init__(self, url: str) -> None:
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("expected a postgresql:// URL")
        self._url = url

    @property
    def url(self) -> str:
        return self._url

    @property
    def admin_url(self) -> str:
        return _with_database(self._url, "postgres")

    def url_for(self, database: str) -> str:
        return _with_database(self._url, database)


class LocalPostgres(_CreatesDatabases):
    """A PostgreSQL+TimescaleDB cluster in data_dir, listening on 127.0.0.1:port only, trust auth.

    durable=False turns fsync and friends off: for throw-away test clusters only.
    """

    def __init__(
        self, data_dir: Path, port: int, *, license: License = "apache", durable: bool = True
    ) -> None:
        if license not in LICENSES:
            raise ValueError(f"license must be one of {LICENSES}, got {license!r}")
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.license: License = license
        self.durable = durable
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.url_for(DATABASE)

    @property
    def admin_url(self) -> str:
        return self.url_for("postgres")

    @property
    def log_path(self) -> Path:
        return self.data_dir / _LOG_NAME

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def url_for(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{quote(database, safe='')}"

    def server_command(self) -> list[str]:
        """The foreground server command line (settings come from the data directory's config)."""
        return [str(pg_bindir() / "postgres"), "-D", str(self.data_dir)]

    def ensure_initialized(self) -> bool:
        """Create the cluster and its `analytics` database unless present; True when it was created."""
        if self.license == "timescale" and not tsl_available():
            raise RuntimeError(
                "timescaledb.license=timescale needs the TSL library, but only the Apache edition "
                f"is installed in {pg_pkglibdir()}"
            )
        if (self.data_dir / "PG_VERSION").exists():
            self._write_settings()
            return False
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise RuntimeError(f"{self.data_dir} is neither empty nor a PostgreSQL data directory")
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _process.hand_over(self.data_dir)
        initdb = [
            str(pg_bindir() / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]
        if not self.durable:
            initdb.append("--no-sync")
        self._run(initdb, "initdb")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"\n# Project settings, rewritten at every start.\ninclude '{_CONF_NAME}'\n")
        self._write_settings()
        # Single-user mode creates the database before any server listens, so a foreground runner
        # (make run) needs no second start.
        self._run(
            [
                str(pg_bindir() / "postgres"),
                "--single",
                "-D",
                str(self.data_dir),
                "-c",
                "exit_on_error=on",
                "postgres",
            ],
            "create database",
            stdin=f'CREATE DATABASE "{DATABASE}";\n',
        )
        return True

    def start(self, timeout: float = 60.0) -> None:
        """Start the server in the background and wait until it accepts connections."""
        if self.running:
            return
        self.ensure_initialized()
        offset = _process.log_size(self.log_path)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.server_command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                **_process.drop_privileges_kwargs(),
            )
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RuntimeError(
                    f"PostgreSQL exited with code {code} during start-up; log tail:\n"
                    + _process.log_tail(self.log_path)
                )
            # The log line proves the port belongs to this server, not to another one already on it.
            if _process.logged_since(self.log_path, offset, _READY_LINE):
                try:
                    with psycopg.connect(self.admin_url, connect_timeout=2):
                        return
                except psycopg.OperationalError as exc:
                    last_error = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            if not _process.sleep_until(deadline):
                self.stop()
                raise TimeoutError(
                    f"PostgreSQL on port {self.port} did not accept connections within {timeout:.0f}s "
                    f"({last_error}); log tail:\n" + _process.log_tail(self.log_path)
                )

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (roll back open transactions, disconnect clients); a no-op when not running."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # SIGINT is PostgreSQL's "fast" mode; SIGTERM ("smart") would wait for every client to leave.
        if _process.terminate(proc, signal.SIGINT, timeout) < 0:
            raise RuntimeError(f"PostgreSQL on port {self.port} had to be killed; see {self.log_path}")

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _write_settings(self) -> None:
        lines = [
            "# Written by analytics_testing.postgres at every start; edit LocalPostgres, not this file.",
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            # No Unix socket: never collide with a system cluster's /var/run/postgresql.
            "unix_socket_directories = ''",
            "max_connections = 200",
            # TimescaleDB runs a scheduler per database; tests create many databases.
            "max_worker_processes = 32",
            "shared_preload_libraries = 'timescaledb'",
            f"timescaledb.license = '{self.license}'",
            "timescaledb.telemetry_level = off",
        ]
        if self.license == "apache":
            # Every background job TimescaleDB schedules itself is a Timescale License one (job
            # history retention, compression and refresh policies), so under the Apache license
            # each run only logged "functionality not supported" errors; nothing of this project
            # relies on TimescaleDB's job scheduler there, so it is not started at all.
            lines.append("timescaledb.max_background_workers = 0")
        if not self.durable:
            lines += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        conf = self.data_dir / _CONF_NAME
        conf.write_text("\n".join(lines) + "\n")
        _process.hand_over(conf)

    def _run(self, args: list[str], what: str, stdin: str | None = None) -> None:
        result = subprocess.run(
            args,
            input=(stdin or "").encode(),
            capture_output=True,
            cwd=self.data_dir,
            check=False,
            **_process.drop_privileges_kwargs(),
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace").strip()
            tail = "\n".join(output.splitlines()[-30:])
            raise RuntimeError(f"{what} failed for {self.data_dir} (exit {result.returncode}):\n{tail}")
