"""Launches the services as real processes and waits until every one reports SERVING.

Used by the end-to-end tests and by ``make run`` (``python -m analytics_testing.stack wait``).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from analytics.v1 import auth_pb2, auth_pb2_grpc
from analytics_testing.ports import free_ports

# The upstreams the edge's route table (deploy/envoy/edge.toml) names, as SERVICES names them.
EDGE_UPSTREAMS = ("auth", "ingest", "query", "processor", "query_ws")
# Upstreams that are not gRPC services of their own: the query service's WebSocket listener.
EXTRA_ADDRESSES = ("query_ws",)

SERVICES: tuple[tuple[str, str], ...] = (
    ("auth", "auth_service"),
    ("processor", "processor_service"),
    ("ingest", "ingest_service"),
    ("query", "query_service"),
)


def edge_arguments(
    directory: Path, http_port: int, admin_port: int, addresses: Mapping[str, str], table: Path | None = None
) -> list[str]:
    """``python -m analytics_edge`` arguments that render the edge into ``directory`` and run Envoy
    on ``http_port`` (admin on ``admin_port``), calling the upstreams at ``addresses``."""
    args = [
        "run",
        "--dir",
        str(directory),
        "--listen",
        f"127.0.0.1:{http_port}",
        "--admin",
        f"127.0.0.1:{admin_port}",
        *(f"--upstream={name}={addresses[name]}" for name in EDGE_UPSTREAMS),
    ]
    if table is not None:
        args += ["--table", str(table)]
    return args


def grpc_serving(address: str, timeout_s: float = 1.0) -> bool:
    """True when the server at ``address`` answers the stock health check with SERVING."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout_s
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - loopback URL
            return bool(response.status == 200)
    except OSError:
        return False


def wait_until_ready(
    grpc_addresses: Mapping[str, str],
    http_url: str | None,
    *,
    timeout_s: float,
    progress: bool = False,
    check: Callable[[], None] | None = None,
) -> None:
    """Waits until every gRPC service is SERVING and the HTTP edge answers /health with 200;
    ``check`` runs on every round and may raise to stop waiting (a process that exited)."""
    deadline = time.monotonic() + timeout_s
    waiting = dict(grpc_addresses)
    http_pending = http_url is not None
    shown: set[str] = set()
    while waiting or http_pending:
        if check is not None:
            check()
        for name, address in list(waiting.items()):
            if grpc_serving(address):
                del waiting[name]
                if progress:
                    print(f"==> run: {name} is serving on {address}", flush=True)
        if not waiting and http_url is not None and http_pending and http_ok(f"{http_url}/health"):
            http_pending = False
            if progress:
                print(f"==> run: HTTP edge is answering on {http_url}", flush=True)
        if not waiting and not http_pending:
            return
        if time.monotonic() > deadline:
            pending = [*waiting, *(["http edge"] if http_pending else [])]
            raise TimeoutError(f"not ready after {timeout_s:.0f} s: {', '.join(pending)}")
        if progress:
            for name in waiting:
                if name not in shown:
                    shown.add(name)
                    print(f"==> run: waiting for {name}", flush=True)
        time.sleep(0.2)


@dataclass
class ServiceProcess:
    """One service running as ``python -m <module> [args]`` with its own environment and log file."""

    name: str
    module: str
    env: dict[str, str]
    log_path: Path
    args: Sequence[str] = ()
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.running and self.process is not None:
            self.process.send_signal(sig)

    def wait(self, timeout_s: float) -> int | None:
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (graceful), then SIGKILL if it does not exit in time."""
        if not self.running:
            return
        self.signal(signal.SIGTERM)
        if self.wait(timeout_s) is None:
            self.signal(signal.SIGKILL)
            self.wait(5)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Edge:
    """Envoy alone, rendered for the given upstreams, on free loopback ports: for tests of the edge."""

    directory: Path
    upstreams: Mapping[str, str]
    table: Path | None = None
    process: ServiceProcess | None = None
    http_port: int = 0
    admin_port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self, timeout_s: float = 30.0) -> Edge:
        self.http_port, self.admin_port = free_ports(2)
        self.directory.mkdir(parents=True, exist_ok=True)
        args = edge_arguments(self.directory, self.http_port, self.admin_port, self.upstreams, self.table)
        self.process = ServiceProcess(
            "edge", "analytics_edge", dict(os.environ), self.directory / "edge.log", args
        )
        self.process.start()
        deadline = time.monotonic() + timeout_s
        while not http_ok(f"{self.admin_url}/ready"):
            if not self.process.running or time.monotonic() > deadline:
                tail = self.process.log_tail()
                self.process.kill()
                raise TimeoutError(f"Envoy did not become ready in {timeout_s:.0f} s:\n{tail}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def log_lines(self) -> list[str]:
        return [] if self.process is None else self.process.log_path.read_text(errors="replace").splitlines()


@dataclass
class ServiceStack:
    """auth, processor, ingest, query and (optionally) the Envoy edge on free loopback ports."""

    database_url: str
    nats_url: str
    log_dir: Path
    admin_token: str
    internal_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    extra_env: Mapping[str, str] = field(default_factory=dict)
    with_edge: bool = True
    # Extra processes per service sharing its port (SO_REUSEPORT), e.g. {"ingest": 2}.
    replicas: Mapping[str, int] = field(default_factory=dict)
    # Envoy worker threads; None: one per core (Envoy's default).
    edge_concurrency: int | None = None
    addresses: dict[str, str] = field(default_factory=dict)
    # Each process's Prometheus endpoint (host:port), by instance name ("ingest", "ingest.2", …).
    metrics_addresses: dict[str, str] = field(default_factory=dict)
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    http_port: int = 0
    edge_admin_port: int = 0

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def metrics_urls(self) -> dict[str, str]:
        """Every ``/metrics`` URL of the stack by instance name, Envoy's (``edge``) included."""
        urls = {name: f"http://{address}/metrics" for name, address in self.metrics_addresses.items()}
        if self.with_edge:
            urls["edge"] = f"http://127.0.0.1:{self.edge_admin_port}/stats/prometheus"
        return urls

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
        env.update(
            {
                "ANALYTICS_DATABASE_URL": self.database_url,
                "ANALYTICS_NATS_URL": self.nats_url,
                "ANALYTICS_ADMIN_TOKEN": self.admin_token,
                "ANALYTICS_INTERNAL_TOKEN": self.internal_token,
                "ANALYTICS_AUTH_ADDR": self.addresses["auth"],
                "ANALYTICS_INGEST_ADDR": self.addresses["ingest"],
                "ANALYTICS_QUERY_ADDR": self.addresses["query"],
                "ANALYTICS_PROCESSOR_ADDR": self.addresses["processor"],
                "ANALYTICS_QUERY_WS_ADDR": self.addresses["query_ws"],
                "ANALYTICS_LOG_LEVEL": "INFO",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout_s: float = 60.0) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # Distinct ports, all held at once while the kernel picks them: replicas bind with
        # SO_REUSEPORT, and two services given the same port would silently share it.
        names = [*(n for n, _ in SERVICES), *EXTRA_ADDRESSES]
        instances = sum(max(1, self.replicas.get(name, 1)) for name, _ in SERVICES)
        ports = free_ports(len(names) + 2 + instances)
        grpc_ports, (http_port, admin_port), metrics_ports = (
            ports[: len(names)],
            ports[len(names) : len(names) + 2],
            iter(ports[len(names) + 2 :]),
        )
        for name, port in zip(names, grpc_ports, strict=True):
            self.addresses[name] = f"127.0.0.1:{port}"
        base = self._base_env()
        for name, module in SERVICES:
            shared = dict(base)
            shared["ANALYTICS_GRPC_LISTEN"] = self.addresses[name]
            if self.replicas.get(name, 1) > 1:
                shared["ANALYTICS_GRPC_REUSE_PORT"] = "true"
            for index in range(1, max(1, self.replicas.get(name, 1)) + 1):
                instance = name if index == 1 else f"{name}.{index}"
                self.metrics_addresses[instance] = f"127.0.0.1:{next(metrics_ports)}"
                env = {**shared, "ANALYTICS_METRICS_LISTEN": self.metrics_addresses[instance]}
                process = ServiceProcess(instance, module, env, self.log_dir / f"{instance}.log")
                process.start()
                self.processes[instance] = process
        if self.with_edge:
            self.http_port, self.edge_admin_port = http_port, admin_port
            args = edge_arguments(self.log_dir / "edge", http_port, admin_port, self.addresses)
            if self.edge_concurrency:
                args += ["--concurrency", str(self.edge_concurrency)]
            edge = ServiceProcess("edge", "analytics_edge", base, self.log_dir / "edge.log", args)
            edge.start()
            self.processes["edge"] = edge
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout_s: float = 60.0, names: Sequence[str] | None = None) -> None:
        wanted = {
            n: a
            for n, a in self.addresses.items()
            if (names is None or n in names) and n not in EXTRA_ADDRESSES
        }
        http = self.http_url if self.with_edge and (names is None or "edge" in names) else None
        try:
            wait_until_ready(wanted, http, timeout_s=timeout_s, check=lambda: self._running(names))
        except (TimeoutError, RuntimeError) as error:
            tails = "\n".join(f"--- {p.name} ---\n{p.log_tail()}" for p in self.processes.values())
            raise type(error)(f"{error}\n{tails}") from None

    def _running(self, names: Sequence[str] | None) -> None:
        exited = [
            name
            for name, process in self.processes.items()
            if (names is None or name.split(".")[0] in names) and not process.running
        ]
        if exited:
            raise RuntimeError(f"exited while starting: {', '.join(exited)}")

    def create_site(self, name: str) -> tuple[str, str]:
        """(site_id, api_key) of a new site whose key may ingest and read, with a rate limit
        (1,000,000/s) that never gets in the way of a test or a benchmark."""
        admin = (("authorization", f"Bearer {self.admin_token}"),)
        with grpc.insecure_channel(self.addresses["auth"]) as channel:
            auth = auth_pb2_grpc.AuthServiceStub(channel)  # type: ignore[no-untyped-call]
            site = auth.CreateSite(auth_pb2.CreateSiteRequest(name=name), metadata=admin, timeout=10)
            key = auth.CreateApiKey(
                auth_pb2.CreateApiKeyRequest(
                    site_id=site.site_id,
                    scopes=[auth_pb2.SCOPE_INGEST, auth_pb2.SCOPE_READ],
                    rate_limit_per_second=1_000_000,
                    rate_limit_burst=1_000_000,
                ),
                metadata=admin,
                timeout=10,
            )
        return site.site_id, key.api_key

    def restart(self, name: str, timeout_s: float = 60.0) -> None:
        process = self.processes[name]
        process.stop()
        process.start()
        self.wait_ready(timeout_s, [name])

    def stop(self) -> None:
        # Edge first, then producers, then the consumer, so nothing is left half-done.
        order = ("edge", "ingest", "query", "processor", "auth")
        for name in order:
            for instance, process in self.processes.items():
                if instance.split(".")[0] == name:
                    process.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analytics_testing.stack")
    sub = parser.add_subparsers(dest="command", required=True)
    wait = sub.add_parser("wait", help="wait until the given services are SERVING")
    wait.add_argument("--grpc", action="append", default=[], metavar="NAME=HOST:PORT")
    wait.add_argument("--http", metavar="URL", help="HTTP edge base URL; /health must answer 200")
    wait.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    addresses = dict(item.split("=", 1) for item in args.grpc)
    try:
        wait_until_ready(addresses, args.http, timeout_s=args.timeout, progress=True)
    except TimeoutError as error:
        print(f"==> run: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
