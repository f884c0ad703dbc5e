"""Model lifecycle under real MLflow: hot swap, registry outage, refusal (see also
test_inference_provenance.py for versions the gate did not sign)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from healthrisk.contracts import (
    CHAMPION_ALIAS,
    ENV_MODEL_NAME,
    ENV_MODEL_VERSION,
    ENV_TRACKING_URI,
    LATEST_VERSION,
)
from healthrisk.processes import MLFLOW_SERVER_ENV, ProcessGroup, free_port, mlflow_server_argv, wait_for_http
from healthrisk.provenance import ensure_signing_key, signing_key_file
from healthrisk.registry import promote
from healthrisk.schema import EXAMPLE_RECORD
from tests.inference.helpers import (
    Service,
    fresh_name,
    metric_samples,
    promote_through_gate,
    sample,
    set_alias,
    start_service,
    wait_ready,
    wait_until,
)

pytestmark = pytest.mark.integration


class Traffic:
    """Predictions fired back to back from a thread; records (status, model_version)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.answers: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.service.client() as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/predict", json=EXAMPLE_RECORD)
                except httpx.HTTPError:
                    self.answers.append((0, None))
                    continue
                version = response.json().get("model_version") if response.status_code == 200 else None
                self.answers.append((response.status_code, version))
                self._stop.wait(0.02)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def serving(service: Service, version: str) -> Callable[[], bool]:
    return lambda: service.model().get("version") == version


def test_hot_swap_to_a_new_champion_without_restart(
    mlflow_uri: str, data_root: Path, register_version: Callable[..., str], tmp_path: Path
) -> None:
    name = fresh_name("inference-swap")
    first = register_version(name, data_root=data_root)
    promote_through_gate(mlflow_uri, name, first)
    with ProcessGroup(tmp_path) as group:
        service = start_service(group, {ENV_TRACKING_URI: mlflow_uri, ENV_MODEL_NAME: name})
        wait_ready(service)
        pid = service.child.pid
        with Traffic(service) as traffic:
            second = register_version(name, data_root=data_root, scale_coef=-1.0)
            promote_through_gate(mlflow_uri, name, second)
            wait_until(serving(service, second), timeout=90, what=f"version {second} to be served")
            wait_until(
                lambda: len(traffic.answers) > 5 and traffic.answers[-1][1] == second,
                timeout=10,
                what="traffic",
            )

            # A champion set by hand is refused; the current one stays.
            unsigned = register_version(name, data_root=data_root)
            set_alias(mlflow_uri, name, CHAMPION_ALIAS, unsigned)
            wait_until(
                lambda: "refused" in (service.model().get("last_load_error") or ""),
                timeout=90,
                what="the bad version to be refused",
            )
        assert service.child.alive() and service.child.pid == pid
        described = service.model()
        assert (described["version"], described["alias"], described["ready"]) == (
            second,
            CHAMPION_ALIAS,
            True,
        )
        assert "promotion gate did not promote it" in described["last_load_error"]

        statuses = {status for status, _ in traffic.answers}
        versions = [version for _, version in traffic.answers]
        assert statuses == {200}, "every prediction during the swaps succeeded"
        switched = versions.index(second)
        assert set(versions[:switched]) == {first} and set(versions[switched:]) == {second}

        samples = metric_samples(service)
        assert sample(samples, "model_reloads_total") == 2
        assert sample(samples, "model_info", name=name, version=second, alias=CHAMPION_ALIAS) == 1
        assert sample(samples, "model_info", name=name, version=first, alias=CHAMPION_ALIAS) == 0
        assert sample(samples, "model_load_failures_total", reason="unsigned") == 1


def test_registry_outage_keeps_serving_then_picks_up_new_versions(
    data_root: Path, register_version: Callable[..., str], tmp_path: Path
) -> None:
    name = fresh_name("inference-outage")
    port = free_port()
    registry_uri = f"http://127.0.0.1:{port}"
    registry_argv = mlflow_server_argv(tmp_path / "registry", "127.0.0.1", port)
    (tmp_path / "registry").mkdir()
    with ProcessGroup(tmp_path / "logs") as group:
        registry = group.start("registry", registry_argv, env=MLFLOW_SERVER_ENV)
        wait_for_http(f"{registry_uri}/health", timeout=90, child=registry)
        first = register_version(name, data_root=data_root, tracking_uri=registry_uri)
        promote_through_gate(registry_uri, name, first)
        service = start_service(
            group, {ENV_TRACKING_URI: registry_uri, ENV_MODEL_NAME: name, ENV_MODEL_VERSION: LATEST_VERSION}
        )
        wait_ready(service)

        registry.stop()
        wait_until(
            lambda: service.model()["registry"]["reachable"] is False,
            timeout=30,
            what="the outage to be seen",
        )
        with service.client() as client:
            answers = [client.post("/predict", json=EXAMPLE_RECORD) for _ in range(20)]
        assert {a.status_code for a in answers} == {200}
        assert {a.json()["model_version"] for a in answers} == {first}
        described = service.model()
        assert described["ready"] is True and described["version"] == first
        assert described["registry"]["last_error"] and described["registry"]["last_success"]
        assert sample(metric_samples(service), "model_registry_reachable") == 0

        registry = group.start("registry-again", registry_argv, env=MLFLOW_SERVER_ENV)
        wait_for_http(f"{registry_uri}/health", timeout=90, child=registry)
        second = register_version(name, data_root=data_root, tracking_uri=registry_uri, scale_coef=0.5)
        promote_through_gate(registry_uri, name, second)
        wait_until(serving(service, second), timeout=90, what=f"version {second} after the outage")
        assert service.model()["registry"]["reachable"] is True
        assert sample(metric_samples(service), "model_registry_reachable") == 1
        assert "registry unreachable" in service.log()


def test_a_pod_whose_first_load_failed_does_not_wait_a_whole_poll_interval(
    data_root: Path, register_version: Callable[..., str], tmp_path: Path
) -> None:
    """A pod rolled to a pinned version can start before it reaches the registry (its
    network, the registry busy): it asks again within seconds, not after the chart's 30 s
    poll interval, or every such rollout waits that long."""
    name = fresh_name("inference-first-load")
    port = free_port()
    registry_uri = f"http://127.0.0.1:{port}"
    (tmp_path / "registry").mkdir()
    with ProcessGroup(tmp_path / "logs") as group:
        service = start_service(
            group,
            {
                ENV_TRACKING_URI: registry_uri,
                ENV_MODEL_NAME: name,
                ENV_MODEL_VERSION: "1",
                "MODEL_POLL_INTERVAL_SECONDS": "30",  # the chart's default
            },
        )
        unreachable = lambda: service.model()["registry"]["reachable"] is False  # noqa: E731
        wait_until(unreachable, timeout=30, what="the first load to fail")
        registry = group.start(
            "registry", mlflow_server_argv(tmp_path / "registry", "127.0.0.1", port), env=MLFLOW_SERVER_ENV
        )
        wait_for_http(f"{registry_uri}/health", timeout=90, child=registry)
        version = register_version(name, data_root=data_root, tracking_uri=registry_uri)
        promote_through_gate(registry_uri, name, version)
        wait_until(serving(service, version), timeout=10, what=f"version {version} within seconds")


def test_a_version_without_a_parameters_document_is_refused_once(
    mlflow_uri: str, register_version: Callable[..., str], data_root: Path, tmp_path: Path
) -> None:
    """A version logged by other means than the platform's training: nothing serving can read."""
    import mlflow
    import numpy as np

    from healthrisk.registry import MODEL_PIP_REQUIREMENTS, build_pipeline
    from healthrisk.schema import N_FEATURES

    name = fresh_name("inference-nodoc")
    pipeline = build_pipeline(np.zeros(N_FEATURES), np.ones(N_FEATURES), np.full(N_FEATURES, 0.01), 0.0)
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_experiment("tests")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            pipeline, name="model", pip_requirements=list(MODEL_PIP_REQUIREMENTS), registered_model_name=name
        )
    version = str(info.registered_model_version)
    with ProcessGroup(tmp_path) as group:
        service = start_service(
            group, {ENV_TRACKING_URI: mlflow_uri, ENV_MODEL_NAME: name, ENV_MODEL_VERSION: version}
        )
        wait_until(
            lambda: service.model().get("last_load_error") is not None,
            timeout=30,
            what="the load to be refused",
        )
        described = service.model()
        assert described["ready"] is False and described["version"] is None
        assert "healthrisk_parameters.json" in described["last_load_error"]
        with service.client() as client:
            assert client.get("/ready").status_code == 503
            assert client.get("/v2/health/ready").status_code == 503
            not_ready = client.get("/readyz")
            refused = client.post("/predict", json=EXAMPLE_RECORD)
        assert not_ready.status_code == 503, "a version that does not load is broken, not 'no model yet'"
        assert not_ready.json()["state"] == "load-failed"
        assert refused.status_code == 503 and "refused" in refused.json()["error"]
        assert "refusing model" in service.log()
        # Refused once, not retried on every poll.
        checked = described["registry"]["last_check"]
        wait_until(
            lambda: service.model()["registry"]["last_check"] > checked + 1, timeout=10, what="more polls"
        )
        assert sample(metric_samples(service), "model_load_failures_total", reason="refused") == 1


def test_before_the_first_promotion_the_service_is_ready_and_says_it_has_no_champion(
    mlflow_uri: str, data_root: Path, register_version: Callable[..., str], tmp_path: Path
) -> None:
    """A fresh install: the registered model does not even exist. The pod may take traffic
    (`/readyz` 200) but has no model (`/ready` 503) and every prediction says why; the first
    promotion is served without a restart."""
    name = fresh_name("inference-fresh")
    with ProcessGroup(tmp_path) as group:
        service = start_service(group, {ENV_TRACKING_URI: mlflow_uri, ENV_MODEL_NAME: name})
        with service.client() as client:
            wait_until(lambda: client.get("/readyz").status_code == 200, timeout=30, what="/readyz")
            readiness = client.get("/readyz").json()
            assert readiness["state"] == "no-model-yet" and readiness["model_version"] is None
            assert client.get("/ready").status_code == 503
            batch = {"records": [EXAMPLE_RECORD]}
            for path, body in (("/predict", EXAMPLE_RECORD), ("/predict/batch", batch)):
                refused = client.post(path, json=body)
                assert refused.status_code == 503
                assert refused.json()["error"].startswith(f"no {CHAMPION_ALIAS} yet"), refused.json()
            v2 = client.post(
                f"/v2/models/{name}/infer",
                json={"inputs": [{"name": "x", "shape": [1, 11], "datatype": "FP64", "data": [0.0] * 11}]},
            )
            assert v2.status_code == 503 and f"no {CHAMPION_ALIAS} yet" in v2.json()["error"]

            # Versions registered but none promoted: still nothing to serve.
            version = register_version(name, data_root=data_root)
            checked = service.model()["registry"]["last_check"]
            wait_until(lambda: service.model()["registry"]["last_check"] > checked, timeout=10, what="a poll")
            assert client.get("/readyz").json()["state"] == "no-model-yet"

            promote_through_gate(mlflow_uri, name, version)
            wait_ready(service)
            answer = client.post("/predict", json=EXAMPLE_RECORD)
            assert answer.status_code == 200 and answer.json()["model_version"] == version
            assert client.get("/readyz").json() == {
                "ready": True,
                "state": "serving",
                "detail": f"serving {name} version {version}",
                "model_version": version,
            }


def test_an_unreachable_registry_with_nothing_loaded_is_not_ready(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    with ProcessGroup(tmp_path) as group:
        service = start_service(group, {ENV_TRACKING_URI: nobody})
        with service.client() as client:
            wait_until(
                lambda: client.get("/readyz").json()["state"] == "registry-unreachable",
                timeout=30,
                what="the first poll",
            )
            assert client.get("/readyz").status_code == 503
            refused = client.post("/predict", json=EXAMPLE_RECORD)
        assert refused.status_code == 503 and "unreachable" in refused.json()["error"]


def test_latest_is_the_newest_version_the_gate_accepted(
    mlflow_uri: str, data_root: Path, register_version: Callable[..., str], tmp_path: Path
) -> None:
    name = fresh_name("inference-latest")
    accepted = register_version(name, data_root=data_root, val_auc=0.8)
    promote_through_gate(mlflow_uri, name, accepted)
    rejected = register_version(name, data_root=data_root, val_auc=0.7, scale_coef=0.5)
    key = ensure_signing_key(signing_key_file())
    assert not promote(MlflowClient(mlflow_uri), name, rejected, signing_key=key).promoted
    register_version(name, data_root=data_root, val_auc=0.9, scale_coef=0.5)  # not decided yet
    with ProcessGroup(tmp_path) as group:
        service = start_service(
            group, {ENV_TRACKING_URI: mlflow_uri, ENV_MODEL_NAME: name, ENV_MODEL_VERSION: LATEST_VERSION}
        )
        wait_ready(service)
        assert service.model()["version"] == accepted
