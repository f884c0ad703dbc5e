"""Retraining with the real federated runner (Flower SuperLink/SuperNodes) and real MLflow."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from drift_cases import QUIET_WINDOW, REFERENCE, SITES, SMOKE_SHARE_THRESHOLD, SMOKE_WINDOW
from typer.testing import CliRunner

from healthrisk.contracts import (
    CHAMPION_ALIAS,
    DRIFT_EXPERIMENT,
    PROMOTION_PROMOTED,
    PROMOTION_REJECTED,
    TAG_DATA_WINDOWS,
    TAG_DRIFT_RUNS,
    TAG_PROMOTION,
    TAG_PROMOTION_REASON,
    TAG_RETRAIN_MODEL,
    TAG_RETRAIN_VERSION,
    TAG_SITE,
    TAG_TRIGGER,
    TAG_VAL_AUC,
    TRIGGER_DRIFT,
)
from healthrisk.drift.retrain import RETRAIN_ARTIFACT
from healthrisk.federated.runner import TrainingRequest, train_federated
from healthrisk.provenance import ensure_signing_key, signing_key_file
from healthrisk.registry import promote

pytestmark = pytest.mark.integration


def _champion(mlflow_uri: str, register_version: Callable[..., str], data_root: Path, val_auc: float) -> str:
    from mlflow import MlflowClient

    name = f"drift-retrain-{uuid.uuid4().hex[:8]}"
    version = register_version(name, data_root=data_root, val_auc=val_auc)
    key = ensure_signing_key(signing_key_file())
    assert promote(MlflowClient(mlflow_uri), name, version, signing_key=key).promoted
    return name


def _trained_champion(mlflow_uri: str, data_root: Path, work_dir: Path) -> str:
    """A champion made as every champion is: trained federatedly on the reference window
    (with the settings `monitor` retrains with), its AUC the one its validation rows gave."""
    from mlflow import MlflowClient

    name = f"drift-retrain-{uuid.uuid4().hex[:8]}"
    request = TrainingRequest(
        data_root=data_root,
        sites=list(SITES),
        window=REFERENCE,
        tracking_uri=mlflow_uri,
        rounds=2,
        registered_name=name,
        work_dir=work_dir,
        superlink_port=0,
    )
    version = train_federated(request).version
    key = ensure_signing_key(signing_key_file())
    assert promote(MlflowClient(mlflow_uri), name, version, signing_key=key).promoted
    return name


def _invoke(commands: typer.Typer, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(commands, list(args))
    return result.exit_code, result.stderr


def _versions(mlflow_uri: str, name: str) -> dict[str, dict[str, str]]:
    from mlflow import MlflowClient

    return {v.version: v.tags for v in MlflowClient(mlflow_uri).search_model_versions(f"name='{name}'")}


def test_retrain_if_drift_makes_a_version_and_records_the_decision(
    commands: typer.Typer,
    mlflow_uri: str,
    register_version: Callable[..., str],
    data_root: Path,
    drift_root: Path,
    tmp_path: Path,
) -> None:
    from mlflow import MlflowClient

    # A champion no real model beats: the candidate must be kept out, with the reason.
    name = _champion(mlflow_uri, register_version, data_root, val_auc=0.999)
    code, stderr = _invoke(
        commands,
        "retrain",
        "--if-drift",
        "--site",
        "hospital_01",
        "--from",
        str(SMOKE_WINDOW.start),
        "--to",
        str(SMOKE_WINDOW.end),
        "--data-root",
        str(drift_root),
        "--tracking-uri",
        mlflow_uri,
        "--model-name",
        name,
        "--threshold",
        str(SMOKE_SHARE_THRESHOLD),
        "--rounds",
        "2",
        "--report-dir",
        str(tmp_path / "reports"),
        "--work-dir",
        str(tmp_path / "work"),
    )
    assert code == 0, stderr
    versions = _versions(mlflow_uri, name)
    assert sorted(versions) == ["1", "2"]
    new = versions["2"]
    assert new[TAG_TRIGGER] == "drift"
    assert new[TAG_PROMOTION] == PROMOTION_REJECTED
    assert "< champion v1 AUC 0.9990" in new[TAG_PROMOTION_REASON]
    # Trained on every site, from the champion's start through the drifted days.
    assert json.loads(new[TAG_DATA_WINDOWS]) == dict.fromkeys(
        ("hospital_01", "hospital_02", "hospital_03"), "2024-01-01..2024-01-15"
    )
    client = MlflowClient(mlflow_uri)
    assert client.get_model_version_by_alias(name, CHAMPION_ALIAS).version == "1"

    experiment = client.get_experiment_by_name(DRIFT_EXPERIMENT)
    assert experiment is not None
    (record,) = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{TAG_RETRAIN_MODEL}` = '{name}' and tags.`{TAG_RETRAIN_VERSION}` = '2'",
    )
    assert record.data.tags[TAG_TRIGGER] == "drift"
    (drift_run_id,) = record.data.tags[TAG_DRIFT_RUNS].split(",")
    assert client.get_run(drift_run_id).data.tags[TAG_SITE] == "hospital_01"
    retrain_json = Path(client.download_artifacts(record.info.run_id, RETRAIN_ARTIFACT, str(tmp_path)))
    decision = json.loads(retrain_json.read_text())["decision"]
    assert decision["promoted"] is False and decision["champion_version"] == "1"
    assert "not promoted" in stderr


def test_retrain_if_drift_without_drift_trains_nothing(
    commands: typer.Typer,
    mlflow_uri: str,
    register_version: Callable[..., str],
    data_root: Path,
    drift_root: Path,
    tmp_path: Path,
) -> None:
    name = _champion(mlflow_uri, register_version, data_root, val_auc=0.5)
    code, stderr = _invoke(
        commands,
        "retrain",
        "--if-drift",
        "--from",
        str(QUIET_WINDOW.start),
        "--to",
        str(QUIET_WINDOW.end),
        "--data-root",
        str(drift_root),
        "--tracking-uri",
        mlflow_uri,
        "--model-name",
        name,
        "--threshold",
        str(SMOKE_SHARE_THRESHOLD),
        "--report-dir",
        str(tmp_path),
    )
    assert code == 0, stderr
    assert "drift at 0 of 3 sites; policy any: no retrain" in stderr
    assert sorted(_versions(mlflow_uri, name)) == ["1"]


def test_monitor_retrains_on_drift_and_promotes(
    commands: typer.Typer,
    mlflow_uri: str,
    data_root: Path,
    drift_root: Path,
    tmp_path: Path,
) -> None:
    from mlflow import MlflowClient

    name = _trained_champion(mlflow_uri, data_root, tmp_path / "champion")
    champion_auc = float(_versions(mlflow_uri, name)["1"][TAG_VAL_AUC])
    code, stderr = _invoke(
        commands,
        "monitor",
        "--interval",
        "6h",
        "--schedule",
        "0 3 * * 0",
        "--current-days",
        "2",
        "--max-iterations",
        "1",
        "--data-root",
        str(drift_root),
        "--tracking-uri",
        mlflow_uri,
        "--model-name",
        name,
        "--threshold",
        str(SMOKE_SHARE_THRESHOLD),
        "--rounds",
        "2",
        "--report-dir",
        str(tmp_path / "reports"),
        "--work-dir",
        str(tmp_path / "work"),
    )
    assert code == 0, stderr
    assert "drift at 1 of 3 sites (hospital_01); policy any: retrain" in stderr
    versions = _versions(mlflow_uri, name)
    assert sorted(versions) == ["1", "2"]
    assert versions["2"][TAG_TRIGGER] == TRIGGER_DRIFT
    # The gate compared the retrain with the real champion's AUC and let it through.
    assert versions["2"][TAG_PROMOTION] == PROMOTION_PROMOTED, versions["2"]
    assert f"champion v1 AUC {champion_auc:.4f}" in versions["2"][TAG_PROMOTION_REASON]
    assert MlflowClient(mlflow_uri).get_model_version_by_alias(name, CHAMPION_ALIAS).version == "2"
