"""Fixtures for the operator's cluster tests (unit tests use none of these)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.kit.trainings import FAKE_SCHEDULER, KubeAPI, NoCluster, OperatorProcess, running_operator


@pytest.fixture(scope="session")
def kube() -> KubeAPI:
    """The real cluster; a cluster test without one FAILS (it must not pass by skipping)."""
    try:
        cluster = KubeAPI()
    except NoCluster as exc:
        pytest.fail(f"cluster test needs a reachable Kubernetes cluster: {exc}", pytrace=False)
    cluster.apply_crd()
    return cluster


@pytest.fixture
def namespace(kube: KubeAPI) -> Iterator[str]:
    name = kube.create_namespace("ft-test")
    yield name
    kube.delete_namespace(name)


@pytest.fixture
def start_operator(
    kube: KubeAPI, namespace: str, mlflow_uri: str, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start `healthrisk operator run` for the test's namespace, with extra env settings."""
    stack = contextlib.ExitStack()
    started: list[OperatorProcess] = []

    def start(**env: str) -> OperatorProcess:
        settings = {
            "HEALTHRISK_OPERATOR_TRACKING_URI": mlflow_uri,
            "HEALTHRISK_OPERATOR_RECONCILE_INTERVAL_S": "1",
            "HEALTHRISK_OPERATOR_POD_SCHEDULER_NAME": FAKE_SCHEDULER,
            "HEALTHRISK_OPERATOR_MODEL_VERSION_GRACE_S": "60",
            **env,
        }
        operator = stack.enter_context(running_operator(kube, namespace, tmp_path / "operator.log", settings))
        started.append(operator)
        return operator

    yield start
    for operator in started:
        print(f"---- operator log ({namespace}) ----\n{operator.log_tail(200)}")
    stack.close()


@pytest.fixture
def operator(start_operator: Callable[..., OperatorProcess]) -> OperatorProcess:
    return start_operator()
