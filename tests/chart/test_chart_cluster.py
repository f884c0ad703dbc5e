"""The chart on a real cluster: server-side validation, install, helm test, upgrade,
Prometheus scraping the inference pods, uninstall.

The cluster is KUBECONFIG or the local harness (`make cluster-up`); without one these
tests FAIL. The images are the kit's (`platform_images`, `prometheus_image`: built from the
wheelhouse and loaded into the cluster when missing or stale, see tests/kit/images.py).
Pods use imagePullPolicy Never: nothing is pulled.
"""

from __future__ import annotations

import base64
import re
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from healthrisk.contracts import (
    APP_NAME,
    ENV_TRACKING_PASSWORD,
    ENV_TRACKING_URI,
    ENV_TRACKING_USERNAME,
    INFERENCE_METRICS_PORT,
    INFERENCE_PORT,
    LABEL_APP_NAME,
    LABEL_COMPONENT,
    MLFLOW_PORT,
    REGISTERED_MODEL,
    SECRET_KEY_PASSWORD,
    SECRET_KEY_USERNAME,
    TAG_VAL_AUC,
    TRAINING_EXPERIMENT,
)
from healthrisk.schema import EXAMPLE_RECORD
from tests.chart.values import VALUE_SETS, render, with_namespace
from tests.kit.http import http_json
from tests.kit.images import TAG
from tests.kit.kube import RESTRICTED_CONTAINER, RESTRICTED_POD, Kube
from tests.kit.tools import CHART
from tests.kit.wait import wait_for

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_rendered_manifests_are_accepted_by_the_api_server(
    kube: Kube, namespace: str, value_set: str, tmp_path: Path
) -> None:
    values = with_namespace(VALUE_SETS[value_set], namespace)
    extra = [ns for ns in values.get("operator", {}).get("watchNamespaces", [])]
    for ns in extra:
        kube.create_namespace(ns)
    try:
        docs = render(kube.helm_bin, values, tmp_path, namespace=namespace)
        manifest = yaml.safe_dump_all(docs)
        out = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest)
        assert out.stdout.count("(server dry run)") == len(docs), out.stdout
    finally:
        for ns in extra:
            kube.delete_namespace(ns)


def register_champion(kube: Kube, release: str, flower_image: str) -> str:
    """Register a model version and promote it to champion in the release's MLflow, from
    inside the cluster (a pod of the Flower image, which carries the training code), signed
    with the release's model-signing key as the operator's gate signs."""
    script = f"""
from pathlib import Path
import mlflow, numpy as np
from mlflow import MlflowClient
from healthrisk.provenance import read_signing_key
from healthrisk.registry import build_pipeline, log_and_register, promote
mlflow.set_experiment("{TRAINING_EXPERIMENT}")
n = 11
pipeline = build_pipeline(np.zeros(n), np.ones(n), np.linspace(-0.5, 0.5, n) / 100, -1.0)
tags = {{{TAG_VAL_AUC!r}: "0.5"}}
with mlflow.start_run():
    version = log_and_register(pipeline, registered_name={REGISTERED_MODEL!r}, tags=tags)
key = read_signing_key(Path("/signing/hmac-key"))
assert promote(MlflowClient(), {REGISTERED_MODEL!r}, version.version, signing_key=key).promoted
print("registered", version.version)
"""
    # As the training user (its Secret): the one MLflow user that may log a run and register a
    # version; EDIT on the registered model also lets it move the alias, as the gate does.
    credentials = [
        {"name": env, "valueFrom": {"secretKeyRef": {"name": f"{release}-mlflow-trainer", "key": key}}}
        for env, key in (
            (ENV_TRACKING_USERNAME, SECRET_KEY_USERNAME),
            (ENV_TRACKING_PASSWORD, SECRET_KEY_PASSWORD),
        )
    ]
    registry = f"http://{release}-mlflow:{MLFLOW_PORT}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "register-champion",
            # helm test's labels: the chart's policies let those pods reach MLflow.
            "labels": {
                LABEL_APP_NAME: APP_NAME, "app.kubernetes.io/instance": release, LABEL_COMPONENT: "test",
            },
        },
        "spec": {
            "restartPolicy": "Never",
            "securityContext": RESTRICTED_POD,
            "containers": [{
                "name": "register",
                "securityContext": RESTRICTED_CONTAINER,
                "image": flower_image,
                "imagePullPolicy": "Never",
                "command": ["python3", "-c", script],
                "env": [{"name": ENV_TRACKING_URI, "value": registry}, *credentials],
                "volumeMounts": [{"name": "signing", "mountPath": "/signing", "readOnly": True}],
            }],
            "volumes": [{"name": "signing", "secret": {"secretName": f"{release}-model-signing"}}],
        },
    }  # fmt: skip
    kube.apply(pod)
    phase = wait_for(
        "the registering pod to finish",
        lambda: (
            (p := kube.get("pod", "register-champion")["status"].get("phase")) in ("Succeeded", "Failed")
            and p
        ),
        timeout=300,
        interval=2,
    )
    logs = kube.kubectl("logs", "register-champion", check=False).stdout
    assert phase == "Succeeded", logs
    kube.kubectl("delete", "pod", "register-champion", "--wait=false")
    return logs.strip().split()[-1]


def chart_test_hooks(docs: list[dict[str, Any]]) -> set[str]:
    """Names of the pods the chart runs on `helm test`."""
    return {
        d["metadata"]["name"]
        for d in docs
        if (d["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test"
    }


def helm_test_phases(output: str) -> dict[str, str]:
    """`helm test` output → {test suite: its Phase}."""
    suites = re.findall(r"^TEST SUITE:\s+(\S+)\s*$", output, flags=re.MULTILINE)
    phases = re.findall(r"^Phase:\s+(\S+)\s*$", output, flags=re.MULTILINE)
    assert len(suites) == len(phases), output
    return dict(zip(suites, phases, strict=True))


def release_leftovers(kube: Kube, release: str) -> dict[str, list[str]]:
    selector = f"app.kubernetes.io/instance={release}"
    kinds = (
        "deployments,replicasets,pods,services,secrets,configmaps,serviceaccounts,"
        "roles,rolebindings,networkpolicies,hpa,pvc"
    )
    items = kube.get(kinds, "-l", selector)["items"]
    cluster_items = kube.get("clusterroles,clusterrolebindings", "-l", selector)["items"]
    left: dict[str, list[str]] = {}
    for item in items + [i for i in cluster_items if str(kube.namespace) in i["metadata"]["name"]]:
        left.setdefault(item["kind"], []).append(item["metadata"]["name"])
    return left


# What outlives `helm uninstall` by default: MLflow's data with its user database (whose
# admin password MLflow would not accept again if it were regenerated), and the key its
# promoted versions were signed with (a new key would make every one of them unservable).
KEPT = {
    "PersistentVolumeClaim": ["health-risk-mlflow"],
    "Secret": ["health-risk-mlflow-admin", "health-risk-model-signing"],
}


@pytest.mark.timeout(3600)
def test_install_test_upgrade_metrics_uninstall(
    kube: Kube, platform_images: dict[str, str], prometheus_image: str, namespace: str, tmp_path: Path
) -> None:
    release = APP_NAME
    kube = kube.in_namespace(namespace)
    image = lambda name: {"repository": f"health-risk/{name}", "tag": TAG}  # noqa: E731
    values = {
        "global": {"imagePullPolicy": "Never"},
        "operator": {
            "image": image("operator"),
            "runPods": {"image": image("flower"), "driftImage": image("drift")},
        },
        "mlflow": {"image": image("mlflow"), "persistence": {"size": "1Gi"}},
        "inference": {"image": image("inference")},
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
    kube.helm(
        "install", release, str(CHART), "-f", str(values_file), "--wait", "--timeout", "10m", timeout=900
    )
    installed = time.monotonic() - started
    print(f"helm install --wait: ready in {installed:.0f}s")

    deployments = kube.get("deployments")["items"]
    names = {d["metadata"]["name"]: d for d in deployments}
    assert {
        "health-risk-operator",
        "health-risk-mlflow",
        "health-risk-inference",
        "health-risk-prometheus",
    } <= set(names)
    for name in (
        "health-risk-operator",
        "health-risk-mlflow",
        "health-risk-inference",
        "health-risk-prometheus",
    ):
        assert names[name]["status"].get("availableReplicas") == 1, name

    version = register_champion(kube, release, platform_images["flower"])

    started = time.monotonic()
    kube.helm("upgrade", release, str(CHART), "-f", str(values_file), "--wait", "--timeout", "10m",
              "--set", "inference.modelPollIntervalSeconds=5", timeout=900)  # fmt: skip
    print(f"helm upgrade --wait (inference serving v{version}): ready in {time.monotonic() - started:.0f}s")
    inference = kube.get("deployment", "health-risk-inference")
    assert inference["status"].get("readyReplicas") == 1
    (source,) = inference["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    settings = kube.get("configmap", source["configMapRef"]["name"])["data"]
    assert settings["MODEL_POLL_INTERVAL_SECONDS"] == "5", "the upgrade's changed value reached the pods"

    # Every test hook of the chart ran and succeeded (helm exits 0 also when there is none).
    test = kube.helm("test", release, "--timeout", "5m", timeout=400)
    hooks = chart_test_hooks(render(kube.helm_bin, values, tmp_path, namespace=namespace, release=release))
    assert hooks, "the chart defines `helm test` hooks"
    assert helm_test_phases(test.stdout) == dict.fromkeys(hooks, "Succeeded"), test.stdout

    # The API key is on by default: the chart generated it (NOTES.txt says how to read it).
    secret = kube.get("secret", f"{release}-inference-api-key")
    key = {"X-API-Key": base64.b64decode(secret["data"]["api-key"]).decode()}
    with kube.port_forward(f"svc/{release}-inference", INFERENCE_PORT) as api:
        for _ in range(5):
            answer = http_json(f"{api}/predict", dict(EXAMPLE_RECORD), headers=key)
            assert 0.0 <= answer["risk_score"] <= 1.0
            assert answer["model_version"] == version
    selector = f"{LABEL_COMPONENT}=inference"
    pod = kube.get("pods", "-l", selector)["items"][0]
    # DNS discovery labels each target with its pod's address and the metrics port
    pod_target = f"{pod['status']['podIP']}:{INFERENCE_METRICS_PORT}"

    with kube.port_forward("svc/health-risk-prometheus", 9090) as prometheus:
        query = f'sum by (instance) (predictions_total{{namespace="{namespace}",endpoint="predict"}})'

        def scraped() -> float:
            url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query})
            result = http_json(url)["data"]["result"]
            values = {r["metric"].get("instance"): float(r["value"][1]) for r in result}
            return values.get(pod_target, 0.0) >= 5 and values[pod_target]

        total = wait_for(
            "predictions_total of the inference pod in Prometheus", scraped, timeout=120, interval=2
        )
        print(f"Prometheus: predictions_total of pod {pod['metadata']['name']} ({pod_target}) = {total}")

    kube.helm("uninstall", release, "--wait", "--timeout", "5m", timeout=400)
    left = wait_for(
        "the release's objects to be deleted",
        lambda: (left := release_leftovers(kube, release)) == KEPT and left,
        timeout=180,
        interval=2,
    )
    assert left == KEPT, "only the kept PVC, the key its signed versions need and the admin Secret stay"
    crd = kube.kubectl("get", "crd", "federatedtrainings.healthrisk.io", check=False)
    assert crd.returncode == 0, "the CRD outlives the release (crds.keep)"
