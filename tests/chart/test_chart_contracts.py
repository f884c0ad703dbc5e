"""The chart's, compose's and the images' copies of the contract agree with healthrisk.contracts.

YAML and Dockerfiles cannot import the Python module, so their copies of label keys, role
values, ports and environment variable names are checked here against it: in every
rendering of the chart (`helm template`, the pinned helm), in compose.yaml and in images/.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

import healthrisk.contracts as contracts
from healthrisk.contracts import (
    ENV_INFERENCE_API_KEY,
    ENV_MODEL_NAME,
    ENV_MODEL_PROVENANCE,
    ENV_MODEL_SIGNING_KEY_FILE,
    ENV_MODEL_VERSION,
    ENV_OPERATOR_PREFIX,
    ENV_TRACKING_PASSWORD,
    ENV_TRACKING_URI,
    ENV_TRACKING_USERNAME,
    GROUP,
    INFERENCE_METRICS_PORT,
    INFERENCE_PORT,
    LABEL_COMPONENT,
    LABEL_ROLE,
    MLFLOW_PORT,
    OPERATOR_HEALTH_PORT,
    OPERATOR_METRICS,
    OPERATOR_METRICS_PORT,
    ROLE_DRIFT,
    ROLE_SUBMIT,
    ROLE_SUPERLINK,
    ROLE_SUPERNODE,
    SUPERLINK_CONTROL_PORT,
    SUPERLINK_FLEET_PORT,
    SUPERLINK_PORT,
)
from tests.chart.values import pod_specs
from tests.kit.tools import CHART, REPO

ROLES = {ROLE_SUPERLINK, ROLE_SUPERNODE, ROLE_SUBMIT, ROLE_DRIFT}
CONTRACT_KEYS = {
    value
    for name, value in vars(contracts).items()
    if name.startswith(("LABEL_", "ANNOTATION_")) or name == "FINALIZER"
}
GROUP_KEY = re.compile(rf"(?<![\w.-]){re.escape(GROUP)}/[\w.-]+")
# host:port wherever a component's address is written (URLs, scrape targets, allowed hosts).
ADDRESSES = {
    "mlflow": (re.compile(r"(?<![\w./-])[\w.-]*mlflow[\w.-]*:(\d+)"), {MLFLOW_PORT}),
    "inference": (
        re.compile(r"(?<![\w./-])[\w.-]*inference[\w.-]*:(\d+)"),
        {INFERENCE_PORT, INFERENCE_METRICS_PORT},
    ),
    "superlink": (re.compile(r"(?<![\w./-])[\w.-]*superlink[\w.-]*:(\d+)"), {SUPERLINK_PORT}),
    "operator": (re.compile(r"(?<![\w./-])[\w.-]*operator[\w.-]*:(\d+)"), {OPERATOR_METRICS_PORT}),
}
# Each image (a target of images/Dockerfile) serves one component's port: EXPOSE, its
# health check and its own --port.
IMAGE_PORTS = {
    "inference": {INFERENCE_PORT, INFERENCE_METRICS_PORT},
    "flower": {SUPERLINK_PORT},
    "drift": set(),  # a run-to-completion pod
    "mlflow": {MLFLOW_PORT},
    "operator": {OPERATOR_HEALTH_PORT},
}
DOCKERFILE_PORTS = re.compile(r'EXPOSE (\d+)|127\.0\.0\.1:(\d+)|"--port", "(\d+)"')


def component_pod(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    (spec,) = [
        doc["spec"]["template"]
        for doc in docs
        if doc["kind"] == "Deployment"
        and doc["spec"]["template"]["metadata"]["labels"][LABEL_COMPONENT] == component
    ]
    return dict(spec)


def container(pod: dict[str, Any]) -> dict[str, Any]:
    return dict(pod["spec"]["containers"][0])


def role_selections(node: Any) -> list[set[str]]:
    """Every set of roles a selector picks: matchLabels values and matchExpressions values."""
    found: list[set[str]] = []
    if isinstance(node, dict):
        if LABEL_ROLE in (node.get("matchLabels") or {}):
            found.append({node["matchLabels"][LABEL_ROLE]})
        found += [set(e["values"]) for e in node.get("matchExpressions") or [] if e["key"] == LABEL_ROLE]
        for value in node.values():
            found += role_selections(value)
    elif isinstance(node, list):
        for item in node:
            found += role_selections(item)
    return found


def test_every_key_under_the_api_group_is_a_contract_key(rendered: list[dict[str, Any]]) -> None:
    text = json.dumps(rendered)
    keys = set(GROUP_KEY.findall(text)) - {f"{GROUP}/v1alpha1"}  # the CRD's apiVersion
    assert keys <= CONTRACT_KEYS, keys - CONTRACT_KEYS


def test_network_policies_select_the_operators_roles(rendered: list[dict[str, Any]]) -> None:
    policies = [d for d in rendered if d["kind"] == "NetworkPolicy"]
    selections = role_selections(policies)
    if not policies:
        return  # a value set with networkPolicy.enabled=false
    assert selections and set().union(*selections) <= ROLES, selections
    superlink = next(
        p for p in policies if p["spec"]["podSelector"].get("matchLabels") == {LABEL_ROLE: ROLE_SUPERLINK}
    )
    ports = [p["port"] for rule in superlink["spec"]["ingress"] for p in rule["ports"]]
    assert ports == [SUPERLINK_FLEET_PORT, SUPERLINK_CONTROL_PORT]


def test_component_addresses_use_the_contract_ports(rendered: list[dict[str, Any]]) -> None:
    text = json.dumps(rendered)
    for component, (pattern, ports) in ADDRESSES.items():
        assert {int(p) for p in pattern.findall(text)} <= ports, component


def test_inference_pods_serve_and_are_scraped_on_the_contract_ports(rendered: list[dict[str, Any]]) -> None:
    pod = component_pod(rendered, "inference")
    ports = {p["name"]: p["containerPort"] for p in container(pod)["ports"]}
    assert ports == {"http": INFERENCE_PORT, "metrics": INFERENCE_METRICS_PORT}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(INFERENCE_METRICS_PORT)
    env = {e["name"] for e in container(pod).get("env") or []}
    (settings,) = [
        d
        for d in rendered
        if d["kind"] == "ConfigMap"
        and d["metadata"]["name"] == container(pod)["envFrom"][0]["configMapRef"]["name"]
    ]
    assert {ENV_TRACKING_URI, ENV_MODEL_NAME, ENV_MODEL_VERSION} <= set(settings["data"])
    from_secrets = {
        e["name"] for e in container(pod).get("env") or [] if e.get("valueFrom", {}).get("secretKeyRef")
    }
    # The API key and the MLflow credential come from Secrets, never as values.
    assert from_secrets <= {ENV_INFERENCE_API_KEY, ENV_TRACKING_USERNAME, ENV_TRACKING_PASSWORD}
    assert env & {ENV_INFERENCE_API_KEY, ENV_TRACKING_USERNAME, ENV_TRACKING_PASSWORD} == from_secrets
    services = [
        d
        for d in rendered
        if d["kind"] == "Service" and d["spec"]["selector"].get(LABEL_COMPONENT) == "inference"
    ]
    served = {(p["name"], p["port"]) for s in services for p in s["spec"]["ports"]}
    assert ("http", INFERENCE_PORT) in served and served <= {
        ("http", INFERENCE_PORT),
        ("metrics", INFERENCE_METRICS_PORT),
    }
    # Only Prometheus (the bundled one, metricsFrom) reaches the metrics port.
    policies = [d for d in rendered if d["kind"] == "NetworkPolicy" and "inference" in d["metadata"]["name"]]
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            if {"port": "metrics", "protocol": "TCP"} in rule["ports"]:
                assert rule["from"], "the metrics port open to any peer"
    prometheus = [d for d in rendered if d["kind"] == "ConfigMap" and "prometheus.yml" in d.get("data", {})]
    for config in prometheus:
        text = config["data"]["prometheus.yml"]
        assert f"port: {INFERENCE_METRICS_PORT}" in text or "regex: metrics" in text


def test_the_operator_signs_with_the_key_the_inference_pods_verify_with(
    rendered: list[dict[str, Any]],
) -> None:
    def key_file(pod: dict[str, Any], variable: str) -> tuple[str, str]:
        """(Secret name, file path) of the key file a container's `variable` names."""
        path = environment(rendered, container(pod))[variable]
        (mount,) = [m for m in container(pod)["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
        (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
        items = {i["path"]: i["key"] for i in volume["secret"]["items"]}
        return volume["secret"]["secretName"], items[path.removeprefix(mount["mountPath"] + "/")]

    signer = key_file(
        component_pod(rendered, "operator"), f"{ENV_OPERATOR_PREFIX}{ENV_MODEL_SIGNING_KEY_FILE}"
    )
    inference = component_pod(rendered, "inference")
    env = environment(rendered, container(inference))
    if env[ENV_MODEL_PROVENANCE] == "required":
        assert key_file(inference, ENV_MODEL_SIGNING_KEY_FILE) == signer
    else:
        assert env[ENV_MODEL_PROVENANCE] == "off" and ENV_MODEL_SIGNING_KEY_FILE not in env
    generated = [d for d in rendered if d["kind"] == "Secret" and d["metadata"]["name"] == signer[0]]
    mlflow_kept = [
        d for d in rendered if d["kind"] == "PersistentVolumeClaim" and "mlflow" in d["metadata"]["name"]
    ]
    for secret in generated:  # kept exactly as long as the registry data it signed
        kept = (secret["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") == "keep"
        if mlflow_kept:
            assert kept == (
                mlflow_kept[0]["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep"
            )


def environment(rendered: list[dict[str, Any]], spec: dict[str, Any]) -> dict[str, str | None]:
    """A container's variables as the kubelet sets them: its ConfigMaps', then its env."""
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in rendered if d["kind"] == "ConfigMap"}
    found: dict[str, str | None] = {}
    for source in spec.get("envFrom") or []:
        found.update(configmaps[source["configMapRef"]["name"]])
    found.update({e["name"]: e.get("value") for e in spec.get("env") or []})
    return found


def test_mlflow_and_the_operator_listen_on_the_contract_ports(rendered: list[dict[str, Any]]) -> None:
    workloads = dict(pod_specs(rendered))
    operator = container(component_pod(rendered, "operator"))
    assert [p["containerPort"] for p in operator["ports"]] == [OPERATOR_HEALTH_PORT, OPERATOR_METRICS_PORT]
    assert f"--liveness=http://0.0.0.0:{OPERATOR_HEALTH_PORT}/healthz" in operator["args"]
    assert {"name": f"{ENV_OPERATOR_PREFIX}METRICS_PORT", "value": str(OPERATOR_METRICS_PORT)} in operator[
        "env"
    ]
    (service,) = [
        d
        for d in rendered
        if d["kind"] == "Service" and d["spec"]["selector"].get(LABEL_COMPONENT) == "operator"
    ]
    assert [p["port"] for p in service["spec"]["ports"]] == [OPERATOR_METRICS_PORT]
    mlflow_client = {"HOME", ENV_TRACKING_USERNAME, ENV_TRACKING_PASSWORD}  # MLflow's own client variables
    assert all(
        e["name"].startswith(ENV_OPERATOR_PREFIX) for e in operator["env"] if e["name"] not in mlflow_client
    )
    if any(name.endswith("-mlflow") for name in workloads):
        mlflow = container(component_pod(rendered, "mlflow"))
        assert [p["containerPort"] for p in mlflow["ports"]] == [MLFLOW_PORT]
        assert f"--port={MLFLOW_PORT}" in mlflow["args"]


def dockerfile_stages() -> dict[str, tuple[str, str]]:
    """images/Dockerfile's stages: name → (the stage it starts FROM, its text)."""
    parts = re.split(r"^FROM (\S+) AS (\S+)$", (REPO / "images" / "Dockerfile").read_text(), flags=re.M)
    return {
        name: (base, text) for base, name, text in zip(parts[1::3], parts[2::3], parts[3::3], strict=True)
    }


@pytest.mark.parametrize("target", sorted(IMAGE_PORTS))
def test_images_expose_the_contract_ports(target: str) -> None:
    text = dockerfile_stages()[target][1]
    ports = {int(p) for match in DOCKERFILE_PORTS.findall(text) for p in match if p}
    assert ports == IMAGE_PORTS[target], ports


@pytest.mark.parametrize("target", sorted(IMAGE_PORTS))
def test_no_image_lets_mlflow_unpickle_a_model(target: str) -> None:
    """MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false in the image or a stage it is built FROM."""
    stages = dockerfile_stages()
    inherited, stage = "", target
    while stage in stages:
        base, text = stages[stage]
        inherited += text
        stage = base
    assert re.search(r"^ENV .*\bMLFLOW_ALLOW_PICKLE_DESERIALIZATION=false\b", inherited, flags=re.M), target


def image_targets() -> set[str]:
    """The images images/Dockerfile builds: its stages but the shared ones."""
    return set(dockerfile_stages()) - {"deps", "app", "runtime"}


def test_every_image_is_built_released_and_named_alike() -> None:
    """One list of images: the Dockerfile's targets, what `make images` builds, what each
    image's requirements are resolved for, what a release pushes and the ports above."""
    targets = image_targets()
    (built,) = re.findall(r"^IMAGES\s*:=(.*)$", (REPO / "images" / "images.mk").read_text(), flags=re.M)
    resolved = re.findall(r"^\s*\[(\w+)\]=", (REPO / "images" / "image-requirements.sh").read_text(), re.M)
    released = yaml.safe_load((REPO / ".github" / "workflows" / "release.yaml").read_text())
    matrix = released["jobs"]["images"]["strategy"]["matrix"]["image"]
    assert set(built.split()) == set(resolved) == set(matrix) == set(IMAGE_PORTS) == targets


def test_the_chart_and_the_operator_name_the_same_images() -> None:
    """Each of the chart's own image repositories is a Dockerfile target, and the operator's
    defaults (used without the chart) are the chart's run-pod images."""
    from healthrisk_operator.config import OperatorConfig

    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def repositories(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("repository"), str):
                yield node["repository"]
            for child in node.values():
                yield from repositories(child)

    ours = {r.removeprefix("health-risk/") for r in repositories(values) if r.startswith("health-risk/")}
    assert ours == image_targets()
    run_pods = values["operator"]["runPods"]
    config = OperatorConfig()
    assert config.flower_image.rsplit(":", 1)[0] == run_pods["image"]["repository"]
    assert config.drift_image.rsplit(":", 1)[0] == run_pods["driftImage"]["repository"]
    assert run_pods["image"]["repository"] != run_pods["driftImage"]["repository"]


@pytest.mark.parametrize("path", ["compose.yaml", "images/prometheus.yml"])
def test_compose_addresses_use_the_contract_ports(path: str) -> None:
    text = (REPO / path).read_text()
    for component, (pattern, ports) in ADDRESSES.items():
        assert {int(p) for p in pattern.findall(text)} <= ports, component


def test_the_training_dashboard_reads_only_what_the_operator_exports() -> None:
    dashboard = json.loads((REPO / "charts/health-risk/dashboards/training.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    queried = {name for expr in expressions for name in re.findall(r"healthrisk_\w+", expr)}
    assert queried == set(OPERATOR_METRICS), queried


def test_the_dashboards_ship_in_the_configmap(rendered: list[dict[str, Any]]) -> None:
    maps = [d for d in rendered if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    for configmap in maps:
        assert set(configmap["data"]) == {"health-risk-inference.json", "health-risk-training.json"}
        assert json.loads(configmap["data"]["health-risk-training.json"])["uid"] == "health-risk-training"
