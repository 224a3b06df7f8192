"""A private stack for one benchmark run: its own data directory, ports, cluster, NATS and services."""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from analytics_testing.nats import LocalNats
from analytics_testing.ports import free_port
from analytics_testing.postgres import LocalPostgres
from analytics_testing.stack import ServiceStack


@dataclass(frozen=True)
class Site:
    """A site and an ingest key whose rate limit never throttles the benchmark."""

    name: str
    site_id: str
    api_key: str


@dataclass
class Environment:
    work_dir: Path
    postgres: LocalPostgres
    nats: LocalNats
    stack: ServiceStack

    @property
    def database_url(self) -> str:
        return self.postgres.url

    def pids(self) -> dict[str, list[int]]:
        """Root processes of every component (several when a service runs replicas)."""
        pids: dict[str, list[int]] = {}
        for instance, process in self.stack.processes.items():
            if process.process is not None:
                pids.setdefault(instance.split(".")[0], []).append(process.process.pid)
        pid_file = self.postgres.data_dir / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            pids["postgres"] = [int(pid_file.read_text().splitlines()[0])]
        nats_proc = getattr(self.nats, "_proc", None)
        if nats_proc is not None:
            pids["nats-server"] = [nats_proc.pid]
        return pids

    def check_alive(self) -> None:
        """Raises when a service, PostgreSQL or nats-server has exited: waiting on would be pointless."""
        dead = [
            f"{name} (exit {process.process.returncode})"
            for name, process in self.stack.processes.items()
            if process.process is not None and process.process.poll() is not None
        ]
        dead += [
            name
            for name, server in (("PostgreSQL", self.postgres), ("nats-server", self.nats))
            if not server.running
        ]
        if dead:
            raise RuntimeError(f"component exited during the benchmark: {', '.join(dead)}")

    def create_site(self, name: str) -> Site:
        return Site(name, *self.stack.create_site(name))

    def log_tails(self, lines: int = 40) -> dict[str, str]:
        tails = {name: process.log_tail(lines) for name, process in self.stack.processes.items()}
        for name, path in (("postgres", self.postgres.log_path), ("nats-server", self.nats.log_path)):
            with contextlib.suppress(OSError):
                tails[name] = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return tails


@contextlib.contextmanager
def environment(
    service_env: dict[str, str],
    replicas: dict[str, int],
    *,
    edge_concurrency: int = 0,
    keep: bool,
    log: Callable[[str], None],
    postgres_dir: Path | None = None,
    with_edge: bool = True,
) -> Iterator[Environment]:
    """Starts PostgreSQL (durable, as in production), NATS and all services; always tears them down.

    postgres_dir keeps the cluster in a directory of the caller's (reused, never deleted) instead of
    the run's temporary one.
    """
    work_dir = Path(tempfile.mkdtemp(prefix="analytics-bench-"))
    postgres = LocalPostgres(postgres_dir or work_dir / "postgres", free_port(), durable=True)
    nats = LocalNats(work_dir / "nats", free_port())
    stack: ServiceStack | None = None
    try:
        log(f"starting PostgreSQL (durable) on port {postgres.port} in {work_dir}")
        postgres.start(timeout=120)
        log(f"starting nats-server on port {nats.port}")
        nats.start(timeout=60)
        options: dict[str, object] = {}
        if replicas:
            if "replicas" not in {f.name for f in dataclasses.fields(ServiceStack)}:
                raise RuntimeError("BENCH_REPLICAS needs a ServiceStack with replica support")
            options["replicas"] = replicas
        stack = ServiceStack(
            database_url=postgres.url,
            nats_url=nats.url,
            log_dir=work_dir / "logs",
            admin_token=secrets.token_urlsafe(32),
            extra_env=service_env,
            with_edge=with_edge,
            edge_concurrency=edge_concurrency or None,
            **options,  # type: ignore[arg-type]
        )
        log("starting auth, processor, ingest, query" + (" and the Envoy edge" if with_edge else ""))
        stack.start(timeout_s=120)
        yield Environment(work_dir, postgres, nats, stack)
    finally:
        log("tearing down the stack")
        errors: list[str] = []
        if stack is not None:
            # Signal every service at once; stack.stop() then waits for each (in edge-first order).
            for process in stack.processes.values():
                with contextlib.suppress(Exception):
                    process.signal(signal.SIGTERM)
        for what, stop in (
            ("services", stack.stop if stack is not None else None),
            ("nats-server", nats.stop),
            ("PostgreSQL", postgres.stop),
        ):
            if stop is None:
                continue
            try:
                stop()
            except Exception as error:  # keep tearing down the rest
                errors.append(f"{what}: {error}")
        if stack is not None:
            # A service that ignored SIGTERM and SIGKILL would be a leak; make sure none is left.
            for process in stack.processes.values():
                with contextlib.suppress(Exception):
                    process.kill()
        if keep:
            log(f"kept {work_dir} (BENCH_KEEP)")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
        for problem in errors:
            log(f"teardown problem: {problem}")
