"""The platform as a user installs it: one Helm release in a namespace of its own, three
hospital volumes with generated data. Module-scoped: the tests of a module are the acts of
one story on that install, in file order.

Needs a running cluster (KUBECONFIG, else the harness's `.cluster/kubeconfig`; without one
the tests FAIL saying so). The images are the kit's `platform_images`: built from the
wheelhouse and loaded into the cluster when missing or stale, whatever ran before.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from healthrisk.contracts import LABEL_SITE
from tests.e2e.platform import RELEASE, SITES, TRAIN_WINDOW, Platform, pvc_name
from tests.kit.images import TAG
from tests.kit.kube import Kube
from tests.kit.tools import CHART


def _values() -> dict[str, Any]:
    image = lambda name: {"repository": f"health-risk/{name}", "tag": TAG}  # noqa: E731
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
def platform(
    kube: Kube, platform_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    namespace = f"hr-e2e-{uuid.uuid4().hex[:6]}"
    kube.create_namespace(namespace)
    kube = kube.in_namespace(namespace)
    platform = Platform(kube, namespace, platform_images)
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
