"""The platform's images for the cluster suites: built and loaded when missing or stale.

Each image carries a label with a digest of what it is built from (the wheelhouse inputs:
pins, pyproject, the project's sources, the Dockerfiles and their recipe, and the base
image's id). An image whose label matches is current and is not rebuilt; the loader
(cluster/load-image.sh for the harness, CLUSTER_LOAD_IMAGE for another cluster) skips an
image the node already holds. So a suite can always ask for its images: the first ask
of a session after a change builds and loads them, every other costs a few seconds.

    TEST_IMAGE_TAG          tag of the images (default test-<hash of the checkout's path>)
    TEST_BASE_IMAGE         base of the Python images (default the harness's local/python:3.11-slim)
    TEST_DEBIAN_BASE_IMAGE  base of the Prometheus image (default the harness's local/debian:bookworm)
    CLUSTER_LOAD_IMAGE      command that loads docker images into another cluster's nodes
                            (e.g. `kind load docker-image`)
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from healthrisk.contracts import APP_NAME
from tests.kit.commands import CommandFailed, run
from tests.kit.tools import REPO, uses_harness

LABEL = "io.healthrisk.inputs-digest"
# One tag per checkout: `make images` (tag dev) or another checkout building on the same
# docker engine never replaces the images a test run is using.
TAG = os.environ.get("TEST_IMAGE_TAG") or "test-" + hashlib.sha1(str(REPO).encode()).hexdigest()[:8]
PREFIX = APP_NAME  # images/images.mk's IMAGE_PREFIX
IMAGES_DIR = REPO / "images"
# Never part of an image: caches and build leftovers beside the sources.
IGNORED_PARTS = ("__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache")


class ImageError(RuntimeError):
    """Images could not be had; the message says what to run."""


@dataclass(frozen=True)
class ImageSet:
    """Images built together by one `make` call from the same inputs."""

    names: tuple[str, ...]
    base: str
    make_args: tuple[str, ...]
    inputs: tuple[Path, ...]
    how_to_get_base: str

    @property
    def refs(self) -> dict[str, str]:
        return {name: f"{PREFIX}/{name}:{TAG}" for name in self.names}


def _platform_inputs() -> tuple[Path, ...]:
    recipes = [p for p in sorted(IMAGES_DIR.iterdir()) if not p.name.startswith("prometheus.")]
    sources = ("constraints.txt", "pyproject.toml", "src", "services", "operator")
    return (*recipes, *(REPO / s for s in sources))


PYTHON_BASE_IMAGE = os.environ.get("TEST_BASE_IMAGE", "local/python:3.11-slim")
DEBIAN_BASE_IMAGE = os.environ.get("TEST_DEBIAN_BASE_IMAGE", "local/debian:bookworm")
PLATFORM = ImageSet(
    names=("operator", "flower", "drift", "inference", "mlflow"),
    base=PYTHON_BASE_IMAGE,
    make_args=("wheels", "images", f"BASE_IMAGE={PYTHON_BASE_IMAGE}"),
    inputs=_platform_inputs(),
    how_to_get_base="`make cluster-up` builds it (cluster/build-images.sh python), or set TEST_BASE_IMAGE",
)
PROMETHEUS = ImageSet(
    names=("prometheus",),
    base=DEBIAN_BASE_IMAGE,
    make_args=("image-prometheus", f"DEBIAN_BASE_IMAGE={DEBIAN_BASE_IMAGE}"),
    inputs=tuple(sorted(IMAGES_DIR.glob("prometheus.*"))),
    how_to_get_base="`make cluster-up` builds it (build-images.sh base), or set TEST_DEBIAN_BASE_IMAGE",
)


def _files(paths: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        found += [
            f
            for f in candidates
            if f.is_file()
            and not any(part in IGNORED_PARTS or part.endswith(".egg-info") for part in f.parts)
            and f.suffix != ".pyc"
        ]
    return found


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)


def inputs_digest(image_set: ImageSet) -> str:
    """sha256 over the base image's id and every input file's path and content."""
    base = _docker("image", "inspect", "-f", "{{.Id}}", image_set.base)
    if base.returncode != 0:
        raise ImageError(f"base image {image_set.base} is missing: {image_set.how_to_get_base}")
    digest = hashlib.sha256(base.stdout.strip().encode())
    for path in _files(image_set.inputs):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:32]


def _label(ref: str) -> str | None:
    proc = _docker("image", "inspect", "-f", f'{{{{index .Config.Labels "{LABEL}"}}}}', ref)
    return proc.stdout.strip() if proc.returncode == 0 else None


def stale(image_set: ImageSet, digest: str) -> list[str]:
    """The images of the set that are missing or were built from other inputs."""
    return [ref for ref in image_set.refs.values() if _label(ref) != digest]


def build(image_set: ImageSet, digest: str) -> None:
    flags = os.environ.get("DOCKER_BUILD_FLAGS", "--network host")
    command = [
        "make", "-C", str(REPO), *image_set.make_args, f"IMAGE_TAG={TAG}",
        f"DOCKER_BUILD_FLAGS={flags} --label {LABEL}={digest}",
    ]  # fmt: skip
    try:
        run(command, timeout=3600)
    except CommandFailed as exc:
        raise ImageError(f"building the images failed:\n{exc}") from exc
    if left := stale(image_set, digest):
        raise ImageError(f"{shlex.join(command)} left these images without the new label: {left}")


def load(refs: Iterable[str]) -> None:
    """Into the cluster's nodes; the loader skips what a node already holds."""
    loader = os.environ.get("CLUSTER_LOAD_IMAGE") or (
        str(REPO / "cluster" / "load-image.sh") if uses_harness() else None
    )
    if loader is None:
        raise ImageError(
            "KUBECONFIG names a cluster other than the harness: set CLUSTER_LOAD_IMAGE to the "
            "command that loads docker images into its nodes (e.g. `kind load docker-image`)"
        )
    try:
        run([*shlex.split(loader), *refs], timeout=1800)
    except CommandFailed as exc:
        raise ImageError(f"loading the images into the cluster failed:\n{exc}") from exc


def ensure(image_set: ImageSet, say: Callable[[str], None]) -> dict[str, str]:
    """Build the set if stale, load it; the image refs by name."""
    if shutil.which("docker") is None or _docker("info").returncode != 0:
        raise ImageError("no docker engine answers: start one with `cluster/docker-up.sh`")
    digest = inputs_digest(image_set)
    if missing := stale(image_set, digest):
        say(f"building {', '.join(missing)} (missing, or built from other inputs than {digest})")
        build(image_set, digest)
    load(image_set.refs.values())
    return image_set.refs
