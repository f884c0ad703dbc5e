"""The platform as a user installs it: one Helm release in a namespace of its own, three
hospital volumes with generated data. Module-scoped: the tests of a module are the acts of
one story on that install, in file order.

Needs a running cluster (KUBECONFIG, else the harness's `.cluster/kubeconfig`; without one
the tests FAIL saying so). The images are the kit's `platform_images`: built from the
wheelhouse and loaded into the cluster when missing or stale, whatever ran before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.platform import Platform, image_values, installed
from tests.kit.kube import Kube


def _values() -> dict[str, Any]:
    values = image_values()
    values["operator"]["reconcileIntervalSeconds"] = 5
    # keep=false: the uninstall test checks that nothing at all is left behind.
    values["mlflow"]["persistence"] = {"size": "1Gi", "keep": False}
    # The SuperNode fault test and the federation tests train models of their own, apart
    # from the others' champion: MLflow's users need grants on them (the operator refuses a
    # name without).
    values["mlflow"]["auth"] = {
        "registeredModels": [f"health-risk-e2e-{name}" for name in ("sitefail", "guarded", "secured")]
    }
    # The first test scales the inference Deployment up once the install is done (see
    # test_first_run), pinned to the exact version it then serves.
    values["inference"] |= {"replicaCount": 0, "modelPollIntervalSeconds": 5}
    return values


@pytest.fixture(scope="module")
def platform(kube: Kube, platform_images: dict[str, str]) -> Iterator[Platform]:
    with installed(kube, platform_images, _values()) as platform:
        yield platform
