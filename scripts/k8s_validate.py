"""Checks deploy/k8s offline (make lint): builds every overlay, then yamllint, the Kubernetes schemas
of every version from 1.27 on (strict), checkov, and Envoy's own check of the configuration each
overlay mounts. Run with the project's virtualenv; the tools come from .tools/k8s (requirements/k8s.txt).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from analytics_edge.launcher import envoy_binary

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
TOOLS = ROOT / ".tools" / "k8s" / "bin"
BUILD = ROOT / "build" / "k8s"
# The Kubernetes versions every object must be valid for (kubernetes-validate ships their schemas).
VERSIONS = [f"1.{minor}.0" for minor in range(27, 38)]
# Custom resources (no schema ships with Kubernetes): the only kinds allowed to go unchecked.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def run(command: list[str], what: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"k8s: {what} failed:\n{done.stdout}{done.stderr}")
    return done.stdout + done.stderr


def build(overlay: Path) -> tuple[Path, list[dict[str, Any]]]:
    out = BUILD / f"{overlay.name}.yaml"
    out.write_text(run([str(TOOLS / "kubectl"), "kustomize", str(overlay)], f"kustomize {overlay.name}"))
    return out, [doc for doc in yaml.safe_load_all(out.read_text()) if doc]


def check_schemas(files: list[Path], objects: list[dict[str, Any]]) -> None:
    custom = {(o["apiVersion"], o["kind"]) for o in objects} & CUSTOM_KINDS
    for version in VERSIONS:
        output = run(
            [str(TOOLS / "kubernetes-validate"), "--strict", "--quiet", "-k", version, *map(str, files)],
            f"kubernetes-validate {version}",
        )
        # Unknown kinds only warn: one that is not a known custom resource is a typo.
        for kind, api in re.findall(r"Couldn't find schema for kind (\S+) with api version (\S+)", output):
            if (api, kind) not in CUSTOM_KINDS:
                sys.exit(f"k8s: no Kubernetes {version} schema for {api} {kind}")
    print(f"k8s: every object valid (strict) for Kubernetes {VERSIONS[0]} to {VERSIONS[-1]}", end="")
    print(f"; not schema-checked (custom resources): {sorted(k for _, k in custom)}" if custom else "")


def check_policies(path: Path, objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        for key, value in (obj["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                check, _, reason = value.partition("=")
                if not re.fullmatch(r"CKV2?_K8S_\d+", check) or len(reason.split()) < 4:
                    sys.exit(
                        f"k8s: {obj['kind']} {obj['metadata']['name']}: {key} needs a check id and a reason"
                    )
    run(
        [
            str(TOOLS / "checkov"),
            "-f",
            str(path),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--compact",
            "--quiet",
        ],
        f"checkov {path.name}",
    )


def check_envoy(overlay: str, objects: list[dict[str, Any]]) -> None:
    """Writes the ConfigMaps the edge mounts into a directory and lets Envoy check the config."""
    config_maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    (edge,) = (o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "edge")
    pod = edge["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    config_path = args[args.index("--config-path") + 1]
    (mount,) = (m for m in container["volumeMounts"] if config_path.startswith(m["mountPath"] + "/"))
    (volume,) = (v for v in pod["volumes"] if v["name"] == mount["name"])
    with tempfile.TemporaryDirectory() as directory:
        for source in volume["projected"]["sources"]:
            config_map = config_maps[source["configMap"]["name"]]
            for name, text in (config_map.get("data") or {}).items():
                (Path(directory) / name).write_text(text)
            for name, data in (config_map.get("binaryData") or {}).items():
                (Path(directory) / name).write_bytes(base64.b64decode(data))
        config = Path(directory) / Path(config_path).name
        # Where the pod mounts the files, this machine has them in the directory.
        config.write_text(config.read_text().replace(f'"{mount["mountPath"]}/', f'"{directory}/'))
        json.loads(config.read_text())
        run(
            [envoy_binary(), "--mode", "validate", "-c", str(config), "--log-level", "error"],
            f"envoy --mode validate ({overlay})",
        )


def main() -> None:
    BUILD.mkdir(parents=True, exist_ok=True)
    run([str(TOOLS / "yamllint"), "--strict", "-c", str(K8S / ".yamllint.yaml"), str(K8S)], "yamllint")
    print("k8s: yamllint clean")
    overlays = sorted(p for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())
    built = {overlay.name: build(overlay) for overlay in overlays}
    print(f"k8s: built {', '.join(f'{n} ({len(o)} objects)' for n, (_, o) in built.items())}")
    check_schemas([path for path, _ in built.values()], [o for _, objs in built.values() for o in objs])
    for name, (path, objects) in built.items():
        check_policies(path, objects)
        check_envoy(name, objects)
        print(f"k8s: {name}: checkov finds nothing; Envoy accepts the configuration it mounts")


if __name__ == "__main__":
    main()
