"""Issue 16, points 2 and 3, against a real MLflow server and a real service process.

An attacker here holds what the training identity holds: write access to the registry
(register versions, set tags, move the alias, overwrite a version's files). It does not
hold the promotion-signing key. The service must never execute anything a version carries,
and must serve only what the platform's gate signed; each refusal keeps the current model
serving and says why in /model and the metrics.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

from healthrisk.contracts import (
    CHAMPION_ALIAS,
    ENV_MODEL_NAME,
    ENV_MODEL_PROVENANCE,
    ENV_TRACKING_URI,
    TAG_CHAMPION_VAL_AUC,
    TAG_CHAMPION_VERSION,
    TAG_PARAMETERS_SHA256,
    TAG_PROMOTION_HMAC,
    TAG_PROMOTION_KEY_ID,
    TAG_VAL_AUC,
)
from healthrisk.model_parameters import PARAMETERS_ARTIFACT, PARAMETERS_FILE
from healthrisk.processes import ProcessGroup
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


class Payload:
    """Unpickling this writes `marker`: what a pickled model can do in whoever loads it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (eval, (f"__import__('pathlib').Path({str(self.marker)!r}).write_text('model code ran')",))


def register_payload(tracking_uri: str, name: str, marker: Path, document: bytes | None) -> str:
    """A version whose model is the pickle payload, optionally with a (valid) parameters document."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    from healthrisk.registry import MODEL_PIP_REQUIREMENTS

    example = pd.DataFrame([EXAMPLE_RECORD]).astype("float64")
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("tests")
    extra_files = []
    if document is not None:
        path = marker.parent / "payload-files" / PARAMETERS_FILE
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(document)
        extra_files = [str(path)]
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            Payload(marker),
            name="model",
            signature=infer_signature(example, pd.Series([0.5])),
            serialization_format="pickle",
            pip_requirements=list(MODEL_PIP_REQUIREMENTS),
            extra_files=extra_files or None,
            registered_model_name=name,
        )
    version = str(info.registered_model_version)
    mlflow.MlflowClient(tracking_uri).set_model_version_tag(name, version, TAG_VAL_AUC, "0.99")
    return version


def parameters_of(tracking_uri: str, name: str, version: str) -> bytes:
    from healthrisk.registry_rest import parameters_document

    return parameters_document(tracking_uri, name, version, timeout=10)


def overwrite_parameters(tracking_uri: str, name: str, version: str, document: bytes, tmp: Path) -> None:
    """What write access to the training experiment allows: change a version's file in place."""
    from mlflow import MlflowClient
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client = MlflowClient(tracking_uri)
    model_id = client.get_model_version(name, version).source.removeprefix("models:/")
    location = client.get_logged_model(model_id).artifact_location
    path = tmp / "tampered" / PARAMETERS_FILE
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(document)
    get_artifact_repository(location).log_artifact(str(path), PARAMETERS_ARTIFACT.rsplit("/", 1)[0])
    assert parameters_of(tracking_uri, name, version) == document


def refused_with(service: Service, version: str, reason: str) -> Callable[[], bool]:
    def check() -> bool:
        refused = service.model()["refused"].get(f"models:/{service_name(service)}/{version}", "")
        return reason in refused

    return check


def service_name(service: Service) -> str:
    return str(service.model()["name"])


def assert_still_serving(service: Service, version: str) -> None:
    with service.client() as client:
        assert client.get("/ready").json() == {"ready": True, "model_version": version}
        answer = client.post("/predict", json=EXAMPLE_RECORD)
    assert answer.status_code == 200 and answer.json()["model_version"] == version


def test_versions_the_gate_did_not_sign_are_refused_and_no_model_code_ever_runs(
    mlflow_uri: str, data_root: Path, register_version: Callable[..., str], tmp_path: Path
) -> None:
    name = fresh_name("inference-attack")
    marker = tmp_path / "marker"
    # The payload is live: whoever unpickles it runs it.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Payload(probe)))
    assert probe.read_text() == "model code ran"

    good = register_version(name, data_root=data_root)
    promote_through_gate(mlflow_uri, name, good)
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_uri)
    with ProcessGroup(tmp_path / "logs") as group:
        service = start_service(group, {ENV_TRACKING_URI: mlflow_uri, ENV_MODEL_NAME: name})
        wait_ready(service)
        assert service.model()["provenance"]["verified"] is True

        # 1. A pickled model without the parameters document, moved to the alias by hand.
        bare = register_payload(mlflow_uri, name, marker, document=None)
        set_alias(mlflow_uri, name, CHAMPION_ALIAS, bare)
        wait_until(refused_with(service, bare, f"has no {PARAMETERS_ARTIFACT}"), timeout=30, what="refusal")
        assert_still_serving(service, good)

        # 2. The payload beside a valid document (the good one's), moved by hand: not signed.
        dressed = register_payload(mlflow_uri, name, marker, document=parameters_of(mlflow_uri, name, good))
        set_alias(mlflow_uri, name, CHAMPION_ALIAS, dressed)
        wait_until(refused_with(service, dressed, "carries no"), timeout=30, what="unsigned refusal")
        assert_still_serving(service, good)

        # 3. The good version's signature copied onto it: bound to another version, refused.
        signed = client.get_model_version(name, good).tags
        for tag in (TAG_PARAMETERS_SHA256, TAG_PROMOTION_HMAC, TAG_PROMOTION_KEY_ID):
            client.set_model_version_tag(name, dressed, tag, signed[tag])
        wait_until(refused_with(service, dressed, "does not match"), timeout=30, what="forgery refusal")
        assert_still_serving(service, good)

        # 4. A signed version whose file is changed after promotion, then moved back to by hand.
        # (The gate compares with the alias holder, here the forgery's claimed AUC.)
        newer = register_version(name, data_root=data_root, scale_coef=0.5, val_auc=0.995)
        promote_through_gate(mlflow_uri, name, newer)
        wait_until(lambda: service.model()["version"] == newer, timeout=30, what=f"v{newer}")
        overwrite_parameters(mlflow_uri, name, good, parameters_of(mlflow_uri, name, newer), tmp_path)
        set_alias(mlflow_uri, name, CHAMPION_ALIAS, good)
        wait_until(refused_with(service, good, "does not match"), timeout=30, what="tampered refusal")
        assert_still_serving(service, newer)

        described = service.model()
        assert described["last_load_error"].startswith(f"refused models:/{name}/{good}")
        samples = metric_samples(service)
        assert sample(samples, "model_load_failures_total", reason="refused") == 1
        assert sample(samples, "model_load_failures_total", reason="unsigned") == 1
        assert sample(samples, "model_load_failures_total", reason="bad_signature") == 2
        assert sample(samples, "model_info", name=name, version=newer, alias=CHAMPION_ALIAS) == 1

        # 5. Even the gate's signature never makes the service unpickle: it serves the document.
        # (Tagged as a run that compared it with the version serving now on the same rows.)
        client.set_model_version_tag(name, dressed, TAG_CHAMPION_VERSION, good)
        client.set_model_version_tag(name, dressed, TAG_CHAMPION_VAL_AUC, signed[TAG_VAL_AUC])
        promote_through_gate(mlflow_uri, name, dressed)
        wait_until(lambda: service.model()["version"] == dressed, timeout=30, what=f"v{dressed}")
        assert_still_serving(service, dressed)
        assert "refusing model" in service.log()
    assert not marker.exists(), "a model's pickled code ran"


def test_provenance_off_serves_unsigned_versions_but_still_never_unpickles(
    mlflow_uri: str, data_root: Path, register_version: Callable[..., str], tmp_path: Path
) -> None:
    """The documented opt-out, for registries without the platform's gate."""
    name = fresh_name("inference-unsigned")
    marker = tmp_path / "marker"
    version = register_version(name, data_root=data_root)
    set_alias(mlflow_uri, name, CHAMPION_ALIAS, version)
    with ProcessGroup(tmp_path / "logs") as group:
        service = start_service(
            group, {ENV_TRACKING_URI: mlflow_uri, ENV_MODEL_NAME: name, ENV_MODEL_PROVENANCE: "off"}
        )
        wait_ready(service)
        provenance = service.model()["provenance"]
        assert provenance["verified"] is False and provenance["key_id"] is None
        assert provenance["parameters_sha256"]

        bare = register_payload(mlflow_uri, name, marker, document=None)
        set_alias(mlflow_uri, name, CHAMPION_ALIAS, bare)
        wait_until(refused_with(service, bare, f"has no {PARAMETERS_ARTIFACT}"), timeout=30, what="refusal")
        assert_still_serving(service, version)
    assert not marker.exists()
