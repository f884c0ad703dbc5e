"""The kit's pytest side: cluster fixtures, images on demand, and how to reproduce a failure.

Registered by tests/conftest.py (and by tests/cluster/conftest.py when the harness's own
suite runs alone with --confcutdir).
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Generator, Iterator, Mapping

import pytest

from tests.kit import images
from tests.kit.kube import Kube
from tests.kit.tools import HARNESS_KUBECONFIG, kubeconfig, uses_harness

# Fixture name → the images it provides.
IMAGE_FIXTURES = {"platform_images": images.PLATFORM, "prometheus_image": images.PROMETHEUS}


class ImageSession:
    """Each image set is made current at most once per session; a failure is kept and
    reported by every test that needs the set, without trying again."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results: dict[tuple[str, ...], dict[str, str] | str] = {}

    def say(self, line: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"[images] {line}")

    def prepare(self, image_set: images.ImageSet) -> None:
        if image_set.names in self.results:
            return
        try:
            self.results[image_set.names] = images.ensure(image_set, self.say)
        except images.ImageError as exc:
            self.results[image_set.names] = str(exc)

    def get(self, image_set: images.ImageSet) -> dict[str, str]:
        self.prepare(image_set)
        result = self.results[image_set.names]
        if isinstance(result, str):
            pytest.fail(result, pytrace=False)
        return result


_SESSION_KEY = pytest.StashKey[ImageSession]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_SESSION_KEY] = ImageSession(config)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """Build and load a test's images before its timeout starts (pytest-timeout times the
    whole protocol, fixtures included): a cold build takes longer than any test may."""
    if kubeconfig().exists():
        session = item.config.stash[_SESSION_KEY]
        for fixture, image_set in IMAGE_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()):
                session.prepare(image_set)
    return (yield)


# ---- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kube() -> Kube:
    """kubectl and helm against the cluster; without a reachable one the test FAILS."""
    where = (
        f"KUBECONFIG={kubeconfig()}" if not uses_harness() else f"the local harness ({HARNESS_KUBECONFIG})"
    )
    if not kubeconfig().exists():
        pytest.fail(
            f"No Kubernetes cluster: {where} does not exist. Start the local one with "
            "`make cluster-up`, or point KUBECONFIG at a reachable cluster.",
            pytrace=False,
        )
    cluster = Kube.from_environment()
    ready = cluster.kubectl("get", "--raw", "/readyz", check=False, timeout=30)
    if ready.returncode != 0 or "ok" not in ready.stdout:
        pytest.fail(
            f"No reachable Kubernetes cluster at {where}: `kubectl get --raw /readyz` said\n"
            f"{ready.stdout}{ready.stderr}\nStart it with `make cluster-up` or fix KUBECONFIG.",
            pytrace=False,
        )
    nodes = cluster.get("nodes")["items"]
    if not any(
        c["type"] == "Ready" and c["status"] == "True"
        for node in nodes
        for c in node["status"].get("conditions", [])
    ):
        pytest.fail(f"the cluster at {where} has no Ready node ({len(nodes)} nodes)", pytrace=False)
    return cluster


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the suite, deleted (without waiting) afterwards."""
    name = f"hr-{request.node.path.parent.name}-{uuid.uuid4().hex[:6]}"
    kube.create_namespace(name)
    yield name
    kube.delete_namespace(name)


@pytest.fixture(scope="session")
def platform_images(kube: Kube, pytestconfig: pytest.Config) -> dict[str, str]:
    """operator, flower, drift, inference and mlflow images, current and loaded into the cluster."""
    return pytestconfig.stash[_SESSION_KEY].get(images.PLATFORM)


@pytest.fixture(scope="session")
def prometheus_image(kube: Kube, pytestconfig: pytest.Config) -> str:
    """The Prometheus image of the chart's tests and compose, current and loaded."""
    return pytestconfig.stash[_SESSION_KEY].get(images.PROMETHEUS)["prometheus"]


# ---- how to reproduce a failure ------------------------------------------------------


def reproduce_command(nodeid: str, keywords: Mapping[str, object]) -> str:
    """The command that runs a failed test again, from the repository root.

    End-to-end modules are one story in file order (each test needs the ones before it
    on the module's install): their failures reproduce with the whole module.
    """
    target = nodeid.split("::", 1)[0] if "e2e" in keywords else nodeid
    command = f".venv/bin/pytest {shlex.quote(target)}"
    if "cluster" not in keywords:
        return command
    if uses_harness():
        return (
            f"make cluster-up && KUBECONFIG=$PWD/.cluster/kubeconfig PATH=$PWD/.cluster/bin:$PATH {command}"
        )
    return f"KUBECONFIG={shlex.quote(str(kubeconfig()))} {command}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    reports = [*terminalreporter.stats.get("failed", []), *terminalreporter.stats.get("error", [])]
    commands = dict.fromkeys(
        reproduce_command(r.nodeid, getattr(r, "keywords", {})) for r in reports if getattr(r, "nodeid", "")
    )
    if commands:
        terminalreporter.section("reproduce (from the repository root)")
        for command in commands:
            terminalreporter.write_line(command)
