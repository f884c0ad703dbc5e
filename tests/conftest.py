"""Shared fixtures: a real `mlflow server`, generated site data, registered versions."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from healthrisk.contracts import ENV_MODEL_SIGNING_KEY_FILE, ENV_TRACKING_URI
from healthrisk.data.generator import generate
from healthrisk.data.window import DateWindow
from healthrisk.processes import free_port, mlflow_server
from healthrisk.provenance import ensure_signing_key

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

TRAIN_WINDOW = DateWindow.parse("2024-01-01..2024-01-10")

# kubectl, helm, images and the reproduce line for every suite (tests/kit).
pytest_plugins = ["tests.kit.plugin"]


@pytest.fixture(scope="session", autouse=True)
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[bytes]:
    """The session's promotion-signing key, exported in the environment so that every signer
    (healthrisk.registry.promote, the operator) and every inference service started by a test
    shares it, as the chart's Secret does in a cluster (and no test writes under .state/)."""
    path = tmp_path_factory.mktemp("signing") / "model-signing.key"
    previous = os.environ.get(ENV_MODEL_SIGNING_KEY_FILE)
    os.environ[ENV_MODEL_SIGNING_KEY_FILE] = str(path)
    yield ensure_signing_key(path)
    if previous is None:
        os.environ.pop(ENV_MODEL_SIGNING_KEY_FILE, None)
    else:
        os.environ[ENV_MODEL_SIGNING_KEY_FILE] = previous


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server (sqlite + local artifacts) for the whole session."""
    state = tmp_path_factory.mktemp("mlflow")
    with mlflow_server(state, free_port()) as uri:
        previous = os.environ.get(ENV_TRACKING_URI)
        os.environ[ENV_TRACKING_URI] = uri
        yield uri
        if previous is None:
            os.environ.pop(ENV_TRACKING_URI, None)
        else:
            os.environ[ENV_TRACKING_URI] = previous


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three non-IID sites over TRAIN_WINDOW, seed 42 (read-only: copy before changing)."""
    root = tmp_path_factory.mktemp("data")
    generate(root, n_sites=3, window=TRAIN_WINDOW, seed=42)
    return root


@pytest.fixture(scope="session")
def version_registrar(mlflow_uri: str) -> Callable[..., str]:
    """Register a version of a fresh model name fitted centrally on generated rows.

    Returns a factory `register(name, val_auc=..., scale_coef=1.0, tracking_uri=None,
    compared_with=None) -> version` (tracking_uri: another MLflow server than the session's).
    Like a training run, it tags the version with the champion it was compared with on the
    same rows (SPEC §4), for the promotion gate: `compared_with` (version, that champion's
    AUC), by default the version serving now with its own validation AUC. It is a shortcut
    for tests of consumers of the registry (inference, drift); the federated path that
    produces real versions is tested in tests/integration/test_federated.py. Session
    scoped so that module-scoped fixtures can use it; tests use `register_version`.
    """
    import mlflow
    from sklearn.linear_model import LogisticRegression

    from healthrisk.contracts import (
        TAG_CHAMPION_VAL_AUC,
        TAG_CHAMPION_VERSION,
        TAG_DATA_WINDOWS,
        TAG_SITES,
        TAG_VAL_AUC,
    )
    from healthrisk.data.loader import load_site
    from healthrisk.registry import build_pipeline, current_champion, dumps_tag, log_and_register

    def register(
        name: str,
        *,
        data_root: Path,
        val_auc: float = 0.8,
        scale_coef: float = 1.0,
        tracking_uri: str | None = None,
        compared_with: tuple[str, float] | None = None,
    ) -> str:
        sites = ["hospital_01", "hospital_02", "hospital_03"]
        parts = [load_site(data_root, s, TRAIN_WINDOW) for s in sites]
        x = np.vstack([p.features for p in parts])
        y = np.concatenate([p.labels for p in parts if p.labels is not None])
        mean, scale = x.mean(axis=0), x.std(axis=0)
        fitted = LogisticRegression(max_iter=500).fit((x - mean) / scale, y)
        pipeline = build_pipeline(mean, scale, fitted.coef_[0] * scale_coef, float(fitted.intercept_[0]))
        tags = {
            TAG_VAL_AUC: str(val_auc),
            TAG_SITES: ",".join(sites),
            TAG_DATA_WINDOWS: dumps_tag({s: str(TRAIN_WINDOW) for s in sites}),
        }
        mlflow.set_tracking_uri(tracking_uri or mlflow_uri)
        if compared_with is None and (champion := current_champion(mlflow.MlflowClient(), name)) is not None:
            compared_with = str(champion.version), float(champion.tags[TAG_VAL_AUC])
        if compared_with is not None:
            tags[TAG_CHAMPION_VERSION], tags[TAG_CHAMPION_VAL_AUC] = compared_with[0], str(compared_with[1])
        mlflow.set_experiment("tests")
        with mlflow.start_run():
            version = log_and_register(pipeline, registered_name=name, tags=tags)
        return str(version.version)

    return register


@pytest.fixture
def register_version(version_registrar: Callable[..., str]) -> Callable[..., str]:
    """See `version_registrar`."""
    return version_registrar
