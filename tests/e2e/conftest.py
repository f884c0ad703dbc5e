"""The platform as a user installs it: one Helm release in a namespace of its own, three
hospital volumes with generated data. Module-scoped: the tests of a module are the acts of
one story on that install, in file order.

Needs a running cluster (KUBECONFIG, else the harness's `.cluster/kubeconfig`) whose node
already holds the project's images (`make images BASE_IMAGE=local/python:3.11-slim
images-load` for the harness). Without either the tests FAIL with what is missing.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from healthrisk.contracts import LABEL_SITE

sys.path.insert(0, str(Path(__file__).parent))

from e2ekit import (
    CHART,
    HARNESS_KUBECONFIG,
    IMAGE_TAG,
    IMAGES,
    RELEASE,
    SITES,
    TRAIN_WINDOW,
    Kube,
    Platform,
    find_tool,
    pvc_name,
)


def _cluster() -> Kube:
    kubeconfig = os.environ.get("KUBECONFIG") or str(HARNESS_KUBECONFIG)
    if not Path(kubeconfig).exists():
        pytest.fail(
            f"no cluster: {kubeconfig} does not exist; run `make cluster-up` or set KUBECONFIG", pytrace=False
        )
    kubectl, helm = find_tool("kubectl"), find_tool("helm")
    if kubectl is None or helm is None:
        pytest.fail("kubectl and helm are needed: `make cluster-up` pins them in .cluster/bin", pytrace=False)
    kube = Kube(kubeconfig, kubectl, helm)
    ready = kube.kubectl("get", "--raw", "/readyz", check=False, timeout=30)
    if ready.returncode != 0:
        pytest.fail(f"cluster at {kubeconfig} is not reachable:\n{ready.stderr}", pytrace=False)
    return kube


def _missing_images(kube: Kube) -> list[str]:
    """Images nobody can pull here: they must already be on every node."""
    nodes = kube.get("nodes")["items"]
    missing = []
    for node in nodes:
        present = {
            n.split("/", 1)[-1] if n.startswith("docker.io/") else n
            for i in node["status"].get("images") or []
            for n in i.get("names") or []
        }
        missing += [
            f"{ref} on {node['metadata']['name']}"
            for ref in IMAGES.values()
            if ref not in present and f"library/{ref}" not in present
        ]
    return missing


def _values() -> dict[str, Any]:
    image = lambda name: {"repository": f"health-risk/{name}", "tag": IMAGE_TAG}  # noqa: E731
    return {
        # Nothing may be pulled: the images were imported into the node.
        "global": {"imagePullPolicy": "Never"},
        "operator": {
            "image": image("operator"),
            "runPods": {"image": image("flower"), "driftImage": image("flower")},
            "reconcileIntervalSeconds": 5,
        },
        # keep=false: the uninstall test checks that nothing at all is left behind.
        "mlflow": {"image": image("mlflow"), "persistence": {"size": "1Gi", "keep": False}},
        # A fresh install has no model yet: the inference pod could not become ready, so
        # `helm install --wait` would never return. It starts at zero replicas and the
        # first test scales it up once the install is done (see test_first_run).
        "inference": {"image": image("inference"), "replicaCount": 0, "modelPollIntervalSeconds": 5},
    }


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    kube = _cluster()
    missing = _missing_images(kube)
    if missing:
        pytest.fail(
            "images not loaded into the cluster: " + ", ".join(missing)
            + "; run `make images BASE_IMAGE=local/python:3.11-slim images-load` first",
            pytrace=False,
        )  # fmt: skip
    namespace = f"hr-e2e-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", namespace)
    kube.namespace = namespace
    platform = Platform(kube, namespace)
    try:
        values = tmp_path_factory.mktemp("helm") / "values.yaml"
        values.write_text(json.dumps(_values()))
        started = time.monotonic()
        kube.helm(
            "install", RELEASE, str(CHART), "-f", str(values), "--wait", "--timeout", "10m", timeout=700
        )
        platform.timings["helm install --wait"] = time.monotonic() - started
        print(f"helm install --wait: {platform.timings['helm install --wait']:.0f}s in {namespace}")

        for site in SITES:
            kube.apply({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": pvc_name(site), "labels": {LABEL_SITE: site}},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "256Mi"}}},
            })  # fmt: skip
        started = time.monotonic()
        platform.write_site_data(TRAIN_WINDOW)
        platform.timings["site data"] = time.monotonic() - started
        yield platform
    finally:
        # The uninstall test normally did all of this already and checked it; this is for
        # a module that stopped half-way.
        if kube.get_or_none("namespace", namespace) is not None:
            kube.kubectl("delete", "federatedtrainings", "--all", "--wait=true", timeout=180, check=False)
            kube.helm("uninstall", RELEASE, "--wait", "--timeout", "3m", timeout=240, check=False)
            kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        print("timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in platform.timings.items()))
