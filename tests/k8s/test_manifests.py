"""Every deploy/k8s overlay, built by kustomize, holds together: what one object names, another defines.

Schemas, checkov and Envoy's own check run in `make lint` (scripts/k8s_validate.py); these tests
check what no schema can: Services select pods, probes and ports exist, every ConfigMap and Secret
key a pod reads is defined, Envoy's clusters are the Services' DNS names and ports.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from analytics_edge.envoy import RouteTable
from analytics_edge.launcher import DEFAULT_TABLE

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBECTL = ROOT / ".tools" / "k8s" / "bin" / "kubectl"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())
SERVICES = ("auth", "ingest", "query", "processor")
POD_KINDS = ("Deployment", "StatefulSet")
# Secrets are created by the operator (README), never by the manifests: their names and keys.
SECRETS = {
    "analytics-secrets": {"admin-token", "internal-token", "database-url", "nats-url"},
    "timescaledb-secrets": {"password"},
}

Obj = dict[str, Any]


@pytest.fixture(scope="module", autouse=True)
def rendered_edge() -> None:
    """The Envoy files the base mounts, rendered as `make k8s-render` does (never committed)."""
    subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "k8s-render"], check=True, capture_output=True
    )


def build(overlay: str) -> list[Obj]:
    assert KUBECTL.exists(), "kubectl is missing: make setup installs it into .tools/k8s"
    done = subprocess.run(
        [str(KUBECTL), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request: pytest.FixtureRequest) -> list[Obj]:
    return build(request.param)


def of_kind(objects: list[Obj], *kinds: str) -> list[Obj]:
    return [o for o in objects if o["kind"] in kinds]


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def pods(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, pod template) of every Deployment and StatefulSet."""
    for workload in of_kind(objects, *POD_KINDS):
        yield workload, workload["spec"]["template"]


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """Whether a label selector (or a Service's plain selector) matches ``labels``."""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        value = labels.get(expression["key"])
        if expression["operator"] == "In" and value not in expression["values"]:
            return False
        if expression["operator"] == "Exists" and value is None:
            return False
    return True


def container_ports(template: Obj) -> dict[str | int, int]:
    """Port names and numbers of a pod template's containers → the port number."""
    found: dict[str | int, int] = {}
    for container in template["spec"]["containers"]:
        for port in container.get("ports") or []:
            found[port["containerPort"]] = port["containerPort"]
            if "name" in port:
                found[port["name"]] = port["containerPort"]
    return found


def test_every_overlay_builds_and_sets_one_namespace(objects: list[Obj]) -> None:
    namespaced = [o for o in objects if o["kind"] != "Namespace"]
    assert {o["metadata"].get("namespace") for o in namespaced} == {"analytics"}
    assert [o["metadata"]["name"] for o in of_kind(objects, "Namespace")] == ["analytics"]
    assert {w["metadata"]["name"] for w in of_kind(objects, "Deployment")} == {*SERVICES, "edge"}


def test_every_service_selects_pods_that_have_its_target_ports(objects: list[Obj]) -> None:
    for service in of_kind(objects, "Service"):
        selected = [
            t for _, t in pods(objects) if selects(service["spec"]["selector"], t["metadata"]["labels"])
        ]
        assert selected, f"Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            for template in selected:
                assert port["targetPort"] in container_ports(template), (service["metadata"]["name"], port)


def test_every_probe_asks_a_port_its_container_has(objects: list[Obj]) -> None:
    for workload, template in pods(objects):
        for container in template["spec"]["containers"]:
            ports = {p.get("name") for p in container.get("ports") or []} | {
                p["containerPort"] for p in container.get("ports") or []
            }
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = container.get(kind)
                if workload["metadata"]["name"] in (*SERVICES, "edge"):
                    assert probe is not None or kind == "startupProbe", (workload["metadata"]["name"], kind)
                if probe is None or "exec" in probe:
                    continue
                (action,) = [probe[k] for k in ("grpc", "httpGet", "tcpSocket") if k in probe]
                assert action["port"] in ports, (workload["metadata"]["name"], kind, action)


def test_the_services_probe_the_stock_health_service(objects: list[Obj]) -> None:
    for name in SERVICES:
        (container,) = named(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        grpc = dict(next(p for p in container["ports"] if p["name"] == "grpc"))
        # Readiness asks the overall entry (dependencies up); liveness the process-only entry.
        assert container["readinessProbe"]["grpc"] == {"port": grpc["containerPort"]}
        assert container["livenessProbe"]["grpc"] == {"port": grpc["containerPort"], "service": "liveness"}
        assert container["args"] == [f"{name}_service"]


def test_every_config_map_and_secret_key_a_pod_reads_is_defined(objects: list[Obj]) -> None:
    config_maps = {
        c["metadata"]["name"]: {**(c.get("data") or {}), **(c.get("binaryData") or {})}
        for c in of_kind(objects, "ConfigMap")
    }
    assert not of_kind(objects, "Secret"), "secret values never live in the manifests"
    for workload, template in pods(objects):
        where = workload["metadata"]["name"]
        spec = template["spec"]
        for container in spec["containers"]:
            for source in container.get("envFrom") or []:
                assert source["configMapRef"]["name"] in config_maps, (where, source)
            for variable in container.get("env") or []:
                ref = variable.get("valueFrom") or {}
                if "configMapKeyRef" in ref:
                    key = ref["configMapKeyRef"]
                    assert key["key"] in config_maps[key["name"]], (where, variable)
                if "secretKeyRef" in ref:
                    key = ref["secretKeyRef"]
                    assert key["key"] in SECRETS[key["name"]], (where, variable)
        for volume in spec.get("volumes") or []:
            sources = [s["configMap"] for s in (volume.get("projected") or {}).get("sources", [])]
            sources += [volume["configMap"]] if "configMap" in volume else []
            for source in sources:
                assert source["name"] in config_maps, (where, volume)
                for item in source.get("items") or []:
                    assert item["key"] in config_maps[source["name"]], (where, item)


def test_the_guide_tells_how_to_create_every_secret_a_pod_reads() -> None:
    guide = (K8S / "README.md").read_text()
    for name, keys in SECRETS.items():
        assert name in guide
        for key in keys:
            assert f"--from-literal={key}=" in guide, key


def test_every_address_setting_names_a_service_and_its_grpc_port(objects: list[Obj]) -> None:
    (config,) = [
        c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"].startswith("analytics-config")
    ]
    services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
    addresses = {k: v for k, v in config["data"].items() if k.endswith("_ADDR")}
    assert addresses, config["data"]
    for variable, address in addresses.items():
        host, _, port = address.rpartition(":")
        ports = {p["name"]: p["port"] for p in services[host]["spec"]["ports"]}
        assert ports["grpc"] == int(port), (variable, address)


def mounted_edge_files(objects: list[Obj]) -> tuple[str, dict[str, bytes]]:
    """The edge's mount path and the files its ConfigMaps put there."""
    pod = named(objects, "Deployment", "edge")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
    files: dict[str, bytes] = {}
    for source in volume["projected"]["sources"]:
        config_map = named(objects, "ConfigMap", source["configMap"]["name"])
        files.update({k: v.encode() for k, v in (config_map.get("data") or {}).items()})
        files.update({k: base64.b64decode(v) for k, v in (config_map.get("binaryData") or {}).items()})
    return mount["mountPath"], files


def test_envoys_clusters_are_the_services_dns_names_and_grpc_ports(objects: list[Obj]) -> None:
    mount_path, files = mounted_edge_files(objects)
    (container,) = named(objects, "Deployment", "edge")["spec"]["template"]["spec"]["containers"]
    config_path = container["args"][container["args"].index("--config-path") + 1]
    assert config_path.startswith(mount_path + "/")
    config = json.loads(files[config_path.removeprefix(mount_path + "/")])
    services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
    clusters = config["static_resources"]["clusters"]
    table = RouteTable.load(DEFAULT_TABLE)
    assert sorted(c["name"] for c in clusters) == table.upstreams
    for cluster in clusters:
        # Resolved to every pod (headless Service), balanced by Envoy per endpoint.
        assert cluster["type"] == "STRICT_DNS"
        (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        address = endpoint["endpoint"]["address"]["socket_address"]
        service = services[address["address"]]
        assert service["spec"].get("clusterIP") == "None", service["metadata"]["name"]
        ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
        # gRPC upstreams on the Service's grpc port; WebSocket ones ([websockets]) on its ws port.
        port = "grpc" if cluster["name"] in table.grpc_upstreams else "ws"
        assert ports[port] == address["port_value"], cluster["name"]
    # Every file the configuration names is in the mount, and the listener is the container's port.
    for path in re.findall(rf'"({re.escape(mount_path)}/[^"]+)"', json.dumps(config)):
        assert path.removeprefix(mount_path + "/") in files, path
    listener = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    admin = config["admin"]["address"]["socket_address"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (listener["port_value"], admin["port_value"]) == (ports["http"], ports["admin"])


def test_network_policies_select_pods_and_name_their_ports(objects: list[Obj]) -> None:
    templates = [t for _, t in pods(objects)]
    for policy in of_kind(objects, "NetworkPolicy"):
        selected = [t for t in templates if selects(policy["spec"]["podSelector"], t["metadata"]["labels"])]
        assert selected, policy["metadata"]["name"]
        for rule in policy["spec"].get("ingress") or []:
            for port in rule.get("ports") or []:
                for template in selected:
                    assert port["port"] in container_ports(template), (policy["metadata"]["name"], port)
    # Only the edge takes traffic from anywhere (an ingress rule without "from").
    open_to_all = [
        p["metadata"]["name"]
        for p in of_kind(objects, "NetworkPolicy")
        if any("from" not in rule for rule in p["spec"].get("ingress") or [])
    ]
    assert open_to_all == ["edge"]


def test_autoscalers_budgets_and_monitors_find_their_targets(objects: list[Obj]) -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind(objects, "Deployment")}
    scaled = set()
    for hpa in of_kind(objects, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments
        scaled.add(target["name"])
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert scaled == {"ingest", "query", "edge"}
    for budget in of_kind(objects, "PodDisruptionBudget"):
        assert any(selects(budget["spec"]["selector"], t["metadata"]["labels"]) for _, t in pods(objects))
    services = of_kind(objects, "Service")
    for monitor in of_kind(objects, "ServiceMonitor"):
        matched = [s for s in services if selects(monitor["spec"]["selector"], s["metadata"]["labels"])]
        assert matched, monitor["metadata"]["name"]
        for endpoint in monitor["spec"]["endpoints"]:
            for service in matched:
                assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_every_container_is_locked_down_and_pinned(objects: list[Obj]) -> None:
    for workload, template in pods(objects):
        spec = template["spec"]
        where = workload["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        account = named(objects, "ServiceAccount", spec["serviceAccountName"])
        assert account["automountServiceAccountToken"] is False, where
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert set(container["resources"]) == {"requests", "limits"}, where
            image = container["image"]
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), image
