"""Fixtures of the chart's cluster and compose tests: the cluster, the images, a namespace."""

from __future__ import annotations

import os
import shlex
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# chartkit sits beside the tests (like tests/cluster/clusterkit.py)
sys.path.insert(0, str(Path(__file__).parent))

from chartkit import HARNESS_KUBECONFIG, REPO, Cluster, find_tool, run

IMAGE_TAG = "dev"
BASE_IMAGE = os.environ.get("CHART_TEST_BASE_IMAGE", "local/python:3.11-slim")
DEBIAN_BASE_IMAGE = os.environ.get("CHART_TEST_DEBIAN_IMAGE", "local/debian:bookworm")


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    env = os.environ.get("KUBECONFIG")
    kubeconfig = env or str(HARNESS_KUBECONFIG)
    if not Path(kubeconfig).exists():
        pytest.fail(
            f"No cluster: {kubeconfig} does not exist; run `make cluster-up` or set KUBECONFIG", pytrace=False
        )
    c = Cluster(kubeconfig, find_tool("kubectl"), find_tool("helm"))
    ready = c.kubectl_run("get", "--raw", "/readyz", check=False, timeout=30)
    if ready.returncode != 0:
        pytest.fail(f"cluster at {kubeconfig} is not reachable:\n{ready.stderr}", pytrace=False)
    return c


@pytest.fixture(scope="module")
def images(cluster: Cluster) -> dict[str, str]:
    """The platform's images, built from the wheelhouse and loaded into the cluster."""
    refs = {
        name: f"health-risk/{name}:{IMAGE_TAG}"
        for name in ("operator", "flower", "inference", "mlflow", "prometheus")
    }
    if os.environ.get("CHART_TEST_BUILD_IMAGES", "1") != "0":
        make = ["make", "-C", str(REPO), f"IMAGE_TAG={IMAGE_TAG}"]
        run([*make, "images", f"BASE_IMAGE={BASE_IMAGE}"], timeout=3000)
        run([*make, "image-prometheus", f"DEBIAN_BASE_IMAGE={DEBIAN_BASE_IMAGE}"], timeout=900)
        loader = os.environ.get("CLUSTER_LOAD_IMAGE") or str(REPO / "cluster" / "load-image.sh")
        run([*shlex.split(loader), *refs.values()], timeout=1800)
    return refs


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"hr-chart-{uuid.uuid4().hex[:6]}"
    cluster.create_namespace(name)
    yield name
    cluster.kubectl_run("delete", "namespace", name, "--wait=false", check=False)
