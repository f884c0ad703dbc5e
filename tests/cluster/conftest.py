"""Fixtures for tests that need a real Kubernetes cluster.

The cluster is whatever ``KUBECONFIG`` points at (kind, k3d, a real one), or else the
local harness's ``.cluster/kubeconfig`` (``make cluster-up``). With no reachable
cluster every test here FAILS with a message saying how to get one; none is skipped.

Images: the smoke tests build a small image locally (``docker build`` FROM
``TEST_BASE_IMAGE``, default ``local/python:3.11-slim`` from ``cluster/build-images.sh``)
and load it into the cluster as the kit loads every image (tests/kit/images.py: the
harness's ``cluster/load-image.sh``, or the command in ``CLUSTER_LOAD_IMAGE`` for another
cluster, e.g. ``kind load docker-image``). Nothing is pulled from a registry: pods use
``imagePullPolicy: Never``.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass

import pytest

from tests.kit.images import PYTHON_BASE_IMAGE, ImageError, load
from tests.kit.kube import Kube
from tests.kit.tools import uses_harness

KIT_PLUGIN = "tests.kit.plugin"


def pytest_configure(config: pytest.Config) -> None:
    # The kit's fixtures (`kube`, `namespace`) come with tests/conftest.py; `make
    # cluster-test` runs this suite alone (--confcutdir), without it.
    if not config.pluginmanager.has_plugin(KIT_PLUGIN):
        config.pluginmanager.import_plugin(KIT_PLUGIN)
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


@dataclass
class SmokeImage:
    ref: str
    marker: str


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
    base = PYTHON_BASE_IMAGE
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
            "or set TEST_BASE_IMAGE",
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
    try:
        load([ref])
    except ImageError as exc:
        pytest.fail(str(exc), pytrace=False)
    return SmokeImage(ref=ref, marker=marker)
