"""Every service starts from the built image and turns SERVING against real PostgreSQL and NATS.

Runs under `make image-smoke`, which builds the image (ANALYTICS_TEST_IMAGE names it); without an
image the tests are skipped, saying so. Containers run with buildah's chroot isolation as the
image's user: this machine's OCI runtime cannot start containers (no cgroup or rlimit control),
which is also why they share the host's network, and so the fixtures' loopback servers.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from analytics_testing.ports import free_ports
from analytics_testing.stack import grpc_serving

IMAGE = os.environ.get("ANALYTICS_TEST_IMAGE", "")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not IMAGE, reason="no image to test: `make image-smoke` builds one and runs these"),
]

# In start-up order: auth first (the others call it), the processor before query (its schema).
SERVICES = ("auth", "processor", "ingest", "query")


def descendants(pid: int) -> Iterator[int]:
    # Children are listed per thread that forked them (buildah's runtime forks from several).
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            yield int(child)
            yield from descendants(int(child))


def service_pid(runner: subprocess.Popen[bytes], module: str) -> int:
    """The service's own process under buildah run (SIGTERM to buildah would make it kill it)."""
    for pid in descendants(runner.pid):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if module.encode() in argv and argv[0].endswith(b"python"):
                return pid
    raise AssertionError(f"no process of {module} under buildah run")


def buildah(*args: str) -> str:
    done = subprocess.run(["buildah", *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    """A working container of the image; each service runs in it as its own process."""
    name = buildah("from", IMAGE)
    yield name
    buildah("rm", name)


def test_the_image_runs_as_its_numeric_user_with_the_entrypoint(container: str) -> None:
    config = buildah(
        "inspect", "--type", "image", "--format", "{{.OCIv1.Config.User}} {{.OCIv1.Config.Entrypoint}}", IMAGE
    )
    assert config == "10001:10001 [/opt/analytics/bin/python -m]"
    # Nothing to compile with, and the services' code only as installed packages.
    probe = "import shutil, sys; print(shutil.which('gcc'), shutil.which('cc'), sys.prefix)"
    assert buildah(
        "run", "--isolation", "chroot", container, "--", "/opt/analytics/bin/python", "-c", probe
    ) == ("None None /opt/analytics")


def test_every_service_starts_from_the_image_and_serves(
    container: str, postgres_server: object, nats_url: str, tmp_path: Path
) -> None:
    database_url = postgres_server.create_database("image_smoke")  # type: ignore[attr-defined]
    ports = iter(free_ports(2 * len(SERVICES)))
    grpc = {name: f"127.0.0.1:{next(ports)}" for name in SERVICES}
    metrics = {name: f"127.0.0.1:{next(ports)}" for name in SERVICES}
    env = {
        "ANALYTICS_DATABASE_URL": database_url,
        "ANALYTICS_NATS_URL": nats_url,
        "ANALYTICS_ADMIN_TOKEN": secrets.token_urlsafe(32),
        "ANALYTICS_INTERNAL_TOKEN": secrets.token_urlsafe(32),
        "ANALYTICS_AUTH_ADDR": grpc["auth"],
    }
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in SERVICES:
            settings = {**env, "ANALYTICS_GRPC_LISTEN": grpc[name], "ANALYTICS_METRICS_LISTEN": metrics[name]}
            command = [
                "buildah",
                "run",
                "--isolation",
                "chroot",
                "--network",
                "host",
                "--user",
                "10001:10001",
            ]
            command += [f"--env={key}={value}" for key, value in settings.items()]
            command += [container, "--", "/opt/analytics/bin/python", "-m", f"{name}_service"]
            with (tmp_path / f"{name}.log").open("wb") as log:
                processes[name] = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            deadline = time.monotonic() + 120
            while not grpc_serving(grpc[name]):
                log_text = (tmp_path / f"{name}.log").read_text(errors="replace")
                assert processes[name].poll() is None, f"{name} exited:\n{log_text[-3000:]}"
                assert time.monotonic() < deadline, f"{name} never served:\n{log_text[-3000:]}"
                time.sleep(0.5)
            with urllib.request.urlopen(f"http://{metrics[name]}/metrics", timeout=10) as answer:
                assert b"process_resident_memory_bytes" in answer.read()
        # SIGTERM as Kubernetes sends it, to the service's process: it drains and exits 0, and
        # buildah with it (SIGTERM to buildah would make it kill the service).
        for name in reversed(SERVICES):
            os.kill(service_pid(processes[name], f"{name}_service"), signal.SIGTERM)
            log_text = (tmp_path / f"{name}.log").read_text(errors="replace")
            assert processes[name].wait(timeout=60) == 0, log_text
        for name in SERVICES:
            assert '"event":"stopped"' in (tmp_path / f"{name}.log").read_text(errors="replace"), name
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
