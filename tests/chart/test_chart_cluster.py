"""The chart on a real cluster: server-side validation, install, helm test, upgrade,
Prometheus scraping the inference pods, uninstall.

The cluster is KUBECONFIG or the local harness (`make cluster-up`); without one these
tests FAIL. Images are built from the wheelhouse with `make images` on the base image
CHART_TEST_BASE_IMAGE (default: the harness's local/python:3.11-slim) and loaded with
CLUSTER_LOAD_IMAGE (default cluster/load-image.sh; `kind load docker-image` for kind).
Pods use imagePullPolicy Never: nothing is pulled. CHART_TEST_BUILD_IMAGES=0 uses the
images already loaded.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartkit import CHART, VALUE_SETS, Cluster, render, wait_for, with_namespace

from healthrisk.contracts import (
    APP_NAME,
    ENV_TRACKING_URI,
    INFERENCE_METRICS_PORT,
    INFERENCE_PORT,
    LABEL_COMPONENT,
    MLFLOW_PORT,
    REGISTERED_MODEL,
    TAG_VAL_AUC,
)

pytestmark = pytest.mark.cluster

IMAGE_TAG = "dev"
RECORD = {
    "heart_rate": 75, "steps": 8000, "sleep_hours": 7.5, "respiratory_rate": 16, "body_temp": 98.6,
    "pm25": 15, "pm10": 25, "o3": 0.05, "no2": 0.02, "temperature": 72, "humidity": 50,
}  # fmt: skip


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_rendered_manifests_are_accepted_by_the_api_server(
    cluster: Cluster, namespace: str, value_set: str, tmp_path: Path
) -> None:
    values = with_namespace(VALUE_SETS[value_set], namespace)
    extra = [ns for ns in values.get("operator", {}).get("watchNamespaces", [])]
    for ns in extra:
        cluster.create_namespace(ns)
    try:
        docs = render(cluster.helm, values, tmp_path, namespace=namespace)
        manifest = yaml.safe_dump_all(docs)
        out = cluster.kubectl_run("apply", "--dry-run=server", "-f", "-", input=manifest)
        assert out.stdout.count("(server dry run)") == len(docs), out.stdout
    finally:
        for ns in extra:
            cluster.kubectl_run("delete", "namespace", ns, "--wait=false", check=False)


def register_champion(cluster: Cluster, namespace: str, release: str, flower_image: str) -> str:
    """Register a model version and promote it to champion in the release's MLflow, from
    inside the cluster (a pod of the Flower image, which carries the training code), signed
    with the release's model-signing key as the operator's gate signs."""
    script = f"""
from pathlib import Path
import mlflow, numpy as np
from mlflow import MlflowClient
from healthrisk.provenance import read_signing_key
from healthrisk.registry import build_pipeline, log_and_register, promote
mlflow.set_experiment("chart-test")
n = 11
pipeline = build_pipeline(np.zeros(n), np.ones(n), np.linspace(-0.5, 0.5, n) / 100, -1.0)
tags = {{{TAG_VAL_AUC!r}: "0.5"}}
with mlflow.start_run():
    version = log_and_register(pipeline, registered_name={REGISTERED_MODEL!r}, tags=tags)
key = read_signing_key(Path("/signing/hmac-key"))
assert promote(MlflowClient(), {REGISTERED_MODEL!r}, version.version, signing_key=key).promoted
print("registered", version.version)
"""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "register-champion",
            "namespace": namespace,
            "labels": {"app.kubernetes.io/instance": release, LABEL_COMPONENT: "test"},
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "register",
                "image": flower_image,
                "imagePullPolicy": "Never",
                "command": ["python3", "-c", script],
                "env": [{"name": ENV_TRACKING_URI, "value": f"http://{release}-mlflow:{MLFLOW_PORT}"}],
                "volumeMounts": [{"name": "signing", "mountPath": "/signing", "readOnly": True}],
            }],
            "volumes": [{"name": "signing", "secret": {"secretName": f"{release}-model-signing"}}],
        },
    }  # fmt: skip
    cluster.kubectl_run("apply", "-f", "-", input=json.dumps(pod))
    phase = wait_for(
        "the registering pod to finish",
        lambda: (
            (p := cluster.json("-n", namespace, "get", "pod", "register-champion")["status"].get("phase"))
            in ("Succeeded", "Failed")
            and p
        ),
        timeout=300,
    )
    logs = cluster.kubectl_run("-n", namespace, "logs", "register-champion", check=False).stdout
    assert phase == "Succeeded", logs
    cluster.kubectl_run("-n", namespace, "delete", "pod", "register-champion", "--wait=false")
    return logs.strip().split()[-1]


def http_json(url: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def release_leftovers(cluster: Cluster, namespace: str, release: str) -> dict[str, list[str]]:
    selector = f"app.kubernetes.io/instance={release}"
    kinds = (
        "deployments,replicasets,pods,services,secrets,configmaps,serviceaccounts,"
        "roles,rolebindings,networkpolicies,hpa,pvc"
    )
    items = cluster.json("-n", namespace, "get", kinds, "-l", selector)["items"]
    cluster_items = cluster.json("get", "clusterroles,clusterrolebindings", "-l", selector)["items"]
    left: dict[str, list[str]] = {}
    for item in items + [i for i in cluster_items if namespace in i["metadata"]["name"]]:
        left.setdefault(item["kind"], []).append(item["metadata"]["name"])
    return left


# What outlives `helm uninstall` by default: MLflow's data, and the key its promoted versions
# were signed with (a new key would make every one of them unservable).
KEPT = {"PersistentVolumeClaim": ["health-risk-mlflow"], "Secret": ["health-risk-model-signing"]}


@pytest.mark.timeout(3600)
def test_install_test_upgrade_metrics_uninstall(
    cluster: Cluster, images: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    release = APP_NAME
    image = lambda name: {"repository": f"health-risk/{name}", "tag": IMAGE_TAG}  # noqa: E731
    values = {
        "global": {"imagePullPolicy": "Never"},
        "operator": {
            "image": image("operator"),
            "runPods": {"image": image("flower"), "driftImage": image("flower")},
        },
        "mlflow": {"image": image("mlflow"), "persistence": {"size": "1Gi"}},
        # No model is registered yet on a fresh install: inference starts at zero replicas
        # and the upgrade below scales it up once the test has registered a champion.
        "inference": {"image": image("inference"), "replicaCount": 0},
        # Debian's Prometheus (the local image) is built without Kubernetes discovery.
        "metrics": {
            "prometheus": {
                "enabled": True,
                "image": image("prometheus"),
                "scrapeInterval": "5s",
                "discovery": "dns",
            }
        },
    }
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))

    started = time.monotonic()
    cluster.helm_run("install", release, str(CHART), "-n", namespace, "-f", str(values_file),
                     "--wait", "--timeout", "10m", timeout=900)  # fmt: skip
    installed = time.monotonic() - started
    print(f"helm install --wait: ready in {installed:.0f}s")

    deployments = cluster.json("-n", namespace, "get", "deployments")["items"]
    names = {d["metadata"]["name"]: d for d in deployments}
    assert {
        "health-risk-operator",
        "health-risk-mlflow",
        "health-risk-inference",
        "health-risk-prometheus",
    } <= set(names)
    for name in ("health-risk-operator", "health-risk-mlflow", "health-risk-prometheus"):
        assert names[name]["status"].get("availableReplicas") == 1, name

    version = register_champion(cluster, namespace, release, images["flower"])

    started = time.monotonic()
    cluster.helm_run("upgrade", release, str(CHART), "-n", namespace, "-f", str(values_file), "--wait",
                     "--timeout", "10m", "--set", "inference.replicaCount=1",
                     "--set", "inference.modelPollIntervalSeconds=5", timeout=900)  # fmt: skip
    print(f"helm upgrade --wait (inference serving v{version}): ready in {time.monotonic() - started:.0f}s")
    inference = cluster.json("-n", namespace, "get", "deployment", "health-risk-inference")
    assert inference["status"].get("readyReplicas") == 1
    env = {e["name"]: e.get("value") for e in inference["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODEL_POLL_INTERVAL_SECONDS"] == "5", "the upgrade's changed value reached the pods"

    test = cluster.helm_run("test", release, "-n", namespace, "--timeout", "5m", timeout=400)
    assert "Phase:          Succeeded" in test.stdout or "Succeeded" in test.stdout, test.stdout

    # The API key is on by default: the chart generated it (NOTES.txt says how to read it).
    secret = cluster.json("-n", namespace, "get", "secret", f"{release}-inference-api-key")
    key = {"X-API-Key": base64.b64decode(secret["data"]["api-key"]).decode()}
    with cluster.port_forward(namespace, f"svc/{release}-inference", INFERENCE_PORT) as api:
        for _ in range(5):
            answer = http_json(f"{api}/predict", RECORD, headers=key)
            assert 0.0 <= answer["risk_score"] <= 1.0
            assert answer["model_version"] == version
    selector = f"{LABEL_COMPONENT}=inference"
    pod = cluster.json("-n", namespace, "get", "pods", "-l", selector)["items"][0]
    # DNS discovery labels each target with its pod's address and the metrics port
    pod_target = f"{pod['status']['podIP']}:{INFERENCE_METRICS_PORT}"

    with cluster.port_forward(namespace, "svc/health-risk-prometheus", 9090) as prometheus:
        query = f'sum by (instance) (predictions_total{{namespace="{namespace}",endpoint="predict"}})'

        def scraped() -> float:
            url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query})
            result = http_json(url)["data"]["result"]
            values = {r["metric"].get("instance"): float(r["value"][1]) for r in result}
            return values.get(pod_target, 0.0) >= 5 and values[pod_target]

        total = wait_for("predictions_total of the inference pod in Prometheus", scraped, timeout=120)
        print(f"Prometheus: predictions_total of pod {pod['metadata']['name']} ({pod_target}) = {total}")

    cluster.helm_run("uninstall", release, "-n", namespace, "--wait", "--timeout", "5m", timeout=400)
    left = wait_for(
        "the release's objects to be deleted",
        lambda: (left := release_leftovers(cluster, namespace, release)) == KEPT and left,
        timeout=180,
    )
    assert left == KEPT, "only the kept PVC, and the key its signed versions need, stay"
    crd = cluster.kubectl_run("get", "crd", "federatedtrainings.healthrisk.io", check=False)
    assert crd.returncode == 0, "the CRD (from crds/) outlives the release"
