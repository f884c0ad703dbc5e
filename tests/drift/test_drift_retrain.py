"""Retraining with the real federated runner (Flower SuperLink/SuperNodes) and real MLflow:
the rolling window, the like-with-like decision, RetrainSkipped and the monitor."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from drift_cases import QUIET_WINDOW, REFERENCE, SITES
from typer.testing import CliRunner

from healthrisk.contracts import (
    CHAMPION_ALIAS,
    DRIFT_EXPERIMENT,
    PROMOTION_PROMOTED,
    PROMOTION_REJECTED,
    TAG_CHAMPION_VAL_AUC,
    TAG_CHAMPION_VERSION,
    TAG_DATA_FINGERPRINT,
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
    TRIGGER_MANUAL,
)
from healthrisk.data.generator import generate
from healthrisk.data.window import DateWindow
from healthrisk.drift.retrain import RETRAIN_ARTIFACT
from healthrisk.federated.runner import TrainingRequest, train_federated
from healthrisk.provenance import ensure_signing_key, signing_key_file
from healthrisk.registry import promote

pytestmark = pytest.mark.integration


def _champion(mlflow_uri: str, register_version: Callable[..., str], data_root: Path) -> str:
    from mlflow import MlflowClient

    name = f"drift-retrain-{uuid.uuid4().hex[:8]}"
    version = register_version(name, data_root=data_root)
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


def _decided_like_with_like(tags: dict[str, str], champion: str) -> None:
    """Both numbers on the version, from the same validation rows, and the verdict they give."""
    assert tags[TAG_CHAMPION_VERSION] == champion
    auc, champion_auc = float(tags[TAG_VAL_AUC]), float(tags[TAG_CHAMPION_VAL_AUC])
    expected = PROMOTION_PROMOTED if auc >= champion_auc else PROMOTION_REJECTED
    assert tags[TAG_PROMOTION] == expected, tags
    assert "on the same validation rows" in tags[TAG_PROMOTION_REASON]


def test_retrain_if_drift_trains_through_the_drifted_days_and_records_the_decision(
    commands: typer.Typer,
    mlflow_uri: str,
    register_version: Callable[..., str],
    data_root: Path,
    drift_root: Path,
    tmp_path: Path,
) -> None:
    from mlflow import MlflowClient

    name = _champion(mlflow_uri, register_version, data_root)
    code, stderr = _invoke(
        commands,
        "retrain",
        "--if-drift",
        "--data-root",
        str(drift_root),
        "--tracking-uri",
        mlflow_uri,
        "--model-name",
        name,
        "--window",
        "28d",
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
    new = versions["2"]
    assert new[TAG_TRIGGER] == TRIGGER_DRIFT and new[TAG_DATA_FINGERPRINT]
    # every site, the last 28 days up to the newest day they all have: the smoke is in it
    assert json.loads(new[TAG_DATA_WINDOWS]) == dict.fromkeys(SITES, "2023-12-20..2024-01-16")
    _decided_like_with_like(new, champion="1")

    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name(DRIFT_EXPERIMENT)
    assert experiment is not None
    (record,) = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{TAG_RETRAIN_MODEL}` = '{name}' and tags.`{TAG_RETRAIN_VERSION}` = '2'",
    )
    assert record.data.tags[TAG_TRIGGER] == "drift"
    drift_run_ids = record.data.tags[TAG_DRIFT_RUNS].split(",")
    assert sorted(client.get_run(r).data.tags[TAG_SITE] for r in drift_run_ids) == list(SITES)
    retrain_json = Path(client.download_artifacts(record.info.run_id, RETRAIN_ARTIFACT, str(tmp_path)))
    decision = json.loads(retrain_json.read_text())["decision"]
    assert decision["champion_version"] == "1" and decision["champion_auc"] is not None


def test_the_same_data_is_not_retrained_until_a_new_day_arrives(
    commands: typer.Typer,
    mlflow_uri: str,
    register_version: Callable[..., str],
    data_root: Path,
    site_copy: Path,
    tmp_path: Path,
) -> None:
    name = _champion(mlflow_uri, register_version, data_root)
    retrain = [
        "retrain", "--data-root", str(site_copy), "--tracking-uri", mlflow_uri, "--model-name", name,
        "--window", "28d", "--rounds", "1", "--work-dir", str(tmp_path / "work"),
    ]  # fmt: skip
    code, stderr = _invoke(commands, *retrain)
    assert code == 0, stderr
    assert sorted(_versions(mlflow_uri, name)) == ["1", "2"]
    code, stderr = _invoke(commands, *retrain)
    assert code == 0, stderr
    assert "RetrainSkipped: no new data since version 2" in stderr
    assert sorted(_versions(mlflow_uri, name)) == ["1", "2"]
    generate(site_copy, n_sites=len(SITES), window=DateWindow.parse("2024-01-17..2024-01-17"), seed=42)
    code, stderr = _invoke(commands, *retrain)
    assert code == 0, stderr
    versions = _versions(mlflow_uri, name)
    assert sorted(versions) == ["1", "2", "3"] and versions["3"][TAG_TRIGGER] == TRIGGER_MANUAL
    assert json.loads(versions["3"][TAG_DATA_WINDOWS])["hospital_01"] == "2023-12-21..2024-01-17"


def test_retrain_if_drift_without_drift_trains_nothing(
    commands: typer.Typer,
    mlflow_uri: str,
    register_version: Callable[..., str],
    data_root: Path,
    drift_root: Path,
    tmp_path: Path,
) -> None:
    name = _champion(mlflow_uri, register_version, data_root)
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
        "--report-dir",
        str(tmp_path),
    )
    assert code == 0, stderr
    assert "drift at 0 of 3 sites; policy any: no retrain" in stderr
    assert sorted(_versions(mlflow_uri, name)) == ["1"]


def test_monitor_retrains_on_drift_at_the_default_threshold(
    commands: typer.Typer,
    mlflow_uri: str,
    data_root: Path,
    drift_root: Path,
    tmp_path: Path,
) -> None:
    from mlflow import MlflowClient

    name = _trained_champion(mlflow_uri, data_root, tmp_path / "champion")
    code, stderr = _invoke(
        commands,
        "monitor",
        "--interval",
        "6h",
        "--schedule",
        "0 3 * * 0",
        "--max-iterations",
        "1",
        "--data-root",
        str(drift_root),
        "--tracking-uri",
        mlflow_uri,
        "--model-name",
        name,
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
    assert sorted(versions) == ["1", "2"] and versions["2"][TAG_TRIGGER] == TRIGGER_DRIFT
    _decided_like_with_like(versions["2"], champion="1")
    promoted = versions["2"][TAG_PROMOTION] == PROMOTION_PROMOTED
    assert MlflowClient(mlflow_uri).get_model_version_by_alias(name, CHAMPION_ALIAS).version == (
        "2" if promoted else "1"
    )
