"""`healthrisk drift check` end to end: the champion from MLflow, new days, exit codes, output."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
import typer
from drift_cases import QUIET_WINDOW, REFERENCE, SMOKE_WINDOW
from typer.testing import CliRunner

from healthrisk.data.loader import write_day
from healthrisk.drift.cli import DRIFT_EXIT_CODE
from healthrisk.provenance import ensure_signing_key, signing_key_file
from healthrisk.registry import promote
from healthrisk.schema import FEATURE_NAMES


@pytest.fixture(scope="module")
def champion_name(mlflow_uri: str, version_registrar: Callable[..., str], data_root: Path) -> str:
    """A model whose champion was trained on the shared training days (REFERENCE)."""
    from mlflow import MlflowClient

    name = f"drift-cli-{uuid.uuid4().hex[:8]}"
    version = version_registrar(name, data_root=data_root)
    key = ensure_signing_key(signing_key_file())
    assert promote(MlflowClient(mlflow_uri), name, version, signing_key=key).promoted
    return name


def _check(commands: typer.Typer, root: Path, name: str, uri: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        commands,
        ["drift", "check", "--data-root", str(root), "--model-name", name, "--tracking-uri", uri, *args],
    )
    return result.exit_code, result.stdout, result.stderr


def test_all_sites_new_days_against_the_champion_fail_on_drift(
    commands: typer.Typer, mlflow_uri: str, champion_name: str, drift_root: Path, tmp_path: Path
) -> None:
    code, stdout, stderr = _check(
        commands,
        drift_root,
        champion_name,
        mlflow_uri,
        "--all-sites",
        "--report-dir",
        str(tmp_path),
        "--fail-on-drift",
        "--json",
    )
    assert code == DRIFT_EXIT_CODE, stderr
    summaries = {s["site"]: s for s in json.loads(stdout)}
    assert [site for site, s in summaries.items() if s["detected"]] == ["hospital_01"]
    for summary in summaries.values():
        # by default: the days after the champion's window, through the newest day all sites have
        assert summary["reference"] == str(REFERENCE)
        assert summary["current"] == "2024-01-11..2024-01-16"
        assert summary["reference_source"].startswith("champion v")
        assert summary["threshold"] == 0.5
        assert summary["mlflow_run_id"]
        assert summary["html_report"] in stderr
        assert summary["performance"]["rows"] == summary["n_current"]
    assert "drift at 1 of 3 sites (hospital_01); policy any: retrain" in stderr


def test_no_drift_exits_zero_even_with_fail_on_drift(
    commands: typer.Typer, mlflow_uri: str, champion_name: str, drift_root: Path, tmp_path: Path
) -> None:
    code, _, stderr = _check(
        commands,
        drift_root,
        champion_name,
        mlflow_uri,
        "--site",
        "hospital_02",
        "--site",
        "hospital_03",
        "--current",
        str(QUIET_WINDOW),
        "--no-publish",
        "--report-dir",
        str(tmp_path),
        "--fail-on-drift",
    )
    assert code == 0, stderr
    assert "no drift" in stderr and "policy any: no retrain" in stderr


def test_days_the_champion_trained_on_are_nothing_new(
    commands: typer.Typer, mlflow_uri: str, champion_name: str, data_root: Path, tmp_path: Path
) -> None:
    code, stdout, stderr = _check(
        commands, data_root, champion_name, mlflow_uri, "--all-sites", "--no-publish", "--json"
    )
    assert code == 0, stderr
    assert [(s["score"], s["detected"], s["current"]) for s in json.loads(stdout)] == [(0.0, False, None)] * 3
    assert "no new days since the champion's training window" in stderr


def test_malformed_file_is_named_and_exits_non_zero(
    commands: typer.Typer, mlflow_uri: str, champion_name: str, site_copy: Path, tmp_path: Path
) -> None:
    bad = site_copy / "hospital_03" / "2024-01-15.csv"
    (site_copy / "hospital_03" / "2024-01-15.parquet").unlink()
    columns = {name: pa.array([50.0]) for name in FEATURE_NAMES if name != "pm25"}
    write_day(bad, pa.table(columns))
    code, _, stderr = _check(
        commands,
        site_copy,
        champion_name,
        mlflow_uri,
        "--site",
        "hospital_03",
        "--current",
        str(SMOKE_WINDOW),
        "--no-publish",
        "--report-dir",
        str(tmp_path),
    )
    assert code == 1
    assert str(bad) in stderr and "'pm25'" in stderr and "required column is missing" in stderr


def test_without_a_champion_says_what_to_do(commands: typer.Typer, mlflow_uri: str, drift_root: Path) -> None:
    code, _, stderr = _check(
        commands, drift_root, f"never-registered-{uuid.uuid4().hex[:8]}", mlflow_uri, "--site", "hospital_01"
    )
    assert code == 1
    assert "has no 'champion' alias yet" in stderr and "train and promote one first" in stderr


def test_help_documents_the_score() -> None:
    from healthrisk.drift.cli import app

    result = CliRunner().invoke(app, ["check", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "drift score" in text and "default 0.5: retraining is worth it" in text
    assert "0.25" in text and "0.0078" in text
