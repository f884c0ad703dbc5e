"""Fixtures for tests that need a real Kubernetes cluster.

The cluster is whatever ``KUBECONFIG`` points at (kind, k3d, a real one), or else the
local harness's ``.cluster/kubeconfig`` (``make cluster-up``). With no reachable
cluster every test here FAILS with a message saying how to get one; none is skipped.

Images: the smoke tests build a small image locally (``docker build`` FROM
``CLUSTER_TEST_BASE_IMAGE``, default ``local/python:3.11-slim`` from
``cluster/build-images.sh``) and load it into the cluster with the command in
``CLUSTER_LOAD_IMAGE`` (default ``cluster/load-image.sh``; for kind use
``kind load docker-image``, for k3d ``k3d image import``). Nothing is pulled from a
registry: pods use ``imagePullPolicy: Never``.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusterkit import HARNESS_KUBECONFIG, REPO, Kube, SmokeImage, find_tool, uses_harness


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cluster: needs a real Kubernetes cluster (KUBECONFIG or the harness in cluster/)"
    )
    config.addinivalue_line(
        "markers",
        "harness: checks the local harness itself (cluster/up.sh, down.sh); "
        "deselected when KUBECONFIG points at another cluster",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if uses_harness():
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("harness") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def kube() -> Kube:
    env = os.environ.get("KUBECONFIG")
    kubeconfig = env or str(HARNESS_KUBECONFIG)
    where = f"KUBECONFIG={env}" if env else f"the local harness ({HARNESS_KUBECONFIG})"
    if not Path(kubeconfig.split(os.pathsep)[0]).exists():
        pytest.fail(
            f"No Kubernetes cluster: {where} does not exist. Start the local one with "
            "`make cluster-up`, or point KUBECONFIG at a reachable cluster.",
            pytrace=False,
        )
    k = Kube(kubeconfig, find_tool("kubectl"))
    proc = k.run("get", "--raw", "/readyz", check=False, timeout=30)
    if proc.returncode != 0 or "ok" not in proc.stdout:
        pytest.fail(
            f"No reachable Kubernetes cluster at {where}: `kubectl get --raw /readyz` said\n"
            f"{proc.stdout}{proc.stderr}\nStart it with `make cluster-up` or fix KUBECONFIG.",
            pytrace=False,
        )
    nodes = k.json("get", "nodes")["items"]
    ready = [
        n["metadata"]["name"]
        for n in nodes
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
    ]
    if not ready:
        pytest.fail(f"cluster at {where} has no Ready node ({len(nodes)} nodes)", pytrace=False)
    return k


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    name = f"hr-smoke-{uuid.uuid4().hex[:6]}"
    kube.run("create", "namespace", name)
    kube.wait_for(
        f"default serviceaccount in {name}",
        lambda: kube.run("-n", name, "get", "serviceaccount", "default", check=False).returncode == 0,
        timeout=60,
    )
    yield name
    kube.run("delete", "namespace", name, "--wait=false", check=False)


SMOKE_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
RUN mkdir -p /srv && echo "health-risk smoke {marker}" > /srv/index.html
USER 65534
EXPOSE 8080
CMD ["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0", "--directory", "/srv"]
"""


@pytest.fixture(scope="session")
def smoke_image(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> SmokeImage:
    """A locally built HTTP-server image, loaded into the cluster's runtime."""
    base = os.environ.get("CLUSTER_TEST_BASE_IMAGE", "local/python:3.11-slim")
    marker = hashlib.sha1(f"{base}-v1".encode()).hexdigest()[:10]
    ref = f"local/hr-smoke:{marker}"
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "info"], capture_output=True).returncode != 0:
        pytest.fail(
            "docker engine not reachable: the smoke tests build a local image "
            "(start one with `cluster/docker-up.sh`)",
            pytrace=False,
        )
    if subprocess.run([docker, "image", "inspect", base], capture_output=True).returncode != 0:
        pytest.fail(
            f"base image {base} is missing: build it with `cluster/build-images.sh python` "
            "or set CLUSTER_TEST_BASE_IMAGE",
            pytrace=False,
        )
    ctx = tmp_path_factory.mktemp("smoke-image")
    (ctx / "Dockerfile").write_text(SMOKE_DOCKERFILE.replace("{marker}", marker))
    build = subprocess.run(
        [docker, "build", "--network", "host", "--build-arg", f"BASE={base}", "-t", ref, str(ctx)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, f"docker build failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}"
    loader = os.environ.get("CLUSTER_LOAD_IMAGE") or str(REPO / "cluster" / "load-image.sh")
    env = dict(os.environ)
    load = subprocess.run([*shlex.split(loader), ref], capture_output=True, text=True, env=env, timeout=600)
    assert load.returncode == 0, (
        f"loading {ref} into the cluster with `{loader}` failed (set CLUSTER_LOAD_IMAGE for "
        f"other clusters):\n{load.stdout}\n{load.stderr}"
    )
    return SmokeImage(ref=ref, marker=marker)
