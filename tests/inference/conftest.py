"""The inference service under real uvicorn (`healthrisk serve`), against real MLflow."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from healthrisk.contracts import ENV_MODEL_NAME, ENV_MODEL_VERSION, ENV_TRACKING_URI
from healthrisk.processes import ProcessGroup
from tests.inference.helpers import (
    BasicDeployment,
    fresh_name,
    promote_through_gate,
    start_service,
    wait_ready,
)


@pytest.fixture(scope="module")
def basic(
    mlflow_uri: str,
    data_root: Path,
    version_registrar: Callable[..., str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BasicDeployment]:
    """One promoted version served by number, shared by the read-only tests of a module."""
    name = fresh_name("inference-basic")
    version = version_registrar(name, data_root=data_root)
    promote_through_gate(mlflow_uri, name, version)
    with ProcessGroup(tmp_path_factory.mktemp("basic-service")) as group:
        service = start_service(
            group, {ENV_TRACKING_URI: mlflow_uri, ENV_MODEL_NAME: name, ENV_MODEL_VERSION: version}
        )
        wait_ready(service)
        yield BasicDeployment(name, version, service)
