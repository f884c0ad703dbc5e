"""`healthrisk drift check` end to end: champion reference from MLflow, exit codes, output."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import typer
from drift_cases import QUIET_WINDOW, REFERENCE, SMOKE_SHARE_THRESHOLD, SMOKE_WINDOW
from typer.testing import CliRunner

from healthrisk.data.loader import write_day
from healthrisk.drift.cli import DRIFT_EXIT_CODE
from healthrisk.provenance import ensure_signing_key, signing_key_file
from healthrisk.registry import promote
from healthrisk.schema import FEATURE_NAMES


def _champion(mlflow_uri: str, register_version: Callable[..., str], data_root: Path) -> str:
    from mlflow import MlflowClient

    name = f"drift-cli-{uuid.uuid4().hex[:8]}"
    version = register_version(name, data_root=data_root)
    key = ensure_signing_key(signing_key_file())
    assert promote(MlflowClient(mlflow_uri), name, version, signing_key=key).promoted
    return name


def _check(commands: typer.Typer, root: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        commands,
        ["drift", "check", "--data-root", str(root), "--threshold", str(SMOKE_SHARE_THRESHOLD), *args],
    )
    return result.exit_code, result.stdout, result.stderr


def test_all_sites_against_the_champion_window_fails_on_drift(
    commands: typer.Typer,
    mlflow_uri: str,
    register_version: Callable[..., str],
    data_root: Path,
    drift_root: Path,
    tmp_path: Path,
) -> None:
    name = _champion(mlflow_uri, register_version, data_root)
    code, stdout, stderr = _check(
        commands,
        drift_root,
        "--all-sites",
        "--current",
        str(SMOKE_WINDOW),
        "--model-name",
        name,
        "--tracking-uri",
        mlflow_uri,
        "--report-dir",
        str(tmp_path),
        "--fail-on-drift",
        "--json",
    )
    assert code == DRIFT_EXIT_CODE, stderr
    summaries = {s["site"]: s for s in json.loads(stdout)}
    assert [site for site, s in summaries.items() if s["detected"]] == ["hospital_01"]
    for summary in summaries.values():
        assert summary["reference"] == str(REFERENCE)
        assert summary["reference_source"].startswith("champion v")
        assert summary["mlflow_run_id"]
        assert summary["html_report"] in stderr
    assert "drift at 1 of 3 sites (hospital_01); policy any: retrain" in stderr


def test_no_drift_exits_zero_even_with_fail_on_drift(
    commands: typer.Typer, drift_root: Path, tmp_path: Path
) -> None:
    code, _, stderr = _check(
        commands,
        drift_root,
        "--site",
        "hospital_02",
        "--site",
        "hospital_03",
        "--reference",
        str(REFERENCE),
        "--current",
        str(QUIET_WINDOW),
        "--no-publish",
        "--report-dir",
        str(tmp_path),
        "--fail-on-drift",
    )
    assert code == 0, stderr
    assert "no drift" in stderr and "policy any: no retrain" in stderr


def test_malformed_file_is_named_and_exits_non_zero(
    commands: typer.Typer, site_copy: Path, tmp_path: Path
) -> None:
    bad = site_copy / "hospital_03" / "2024-01-15.csv"
    (site_copy / "hospital_03" / "2024-01-15.parquet").unlink()
    columns = {name: pa.array([50.0]) for name in FEATURE_NAMES if name != "pm25"}
    write_day(bad, pa.table(columns))
    code, _, stderr = _check(
        commands,
        site_copy,
        "--site",
        "hospital_03",
        "--reference",
        str(REFERENCE),
        "--current",
        str(SMOKE_WINDOW),
        "--no-publish",
        "--report-dir",
        str(tmp_path),
    )
    assert code == 1
    assert str(bad) in stderr and "'pm25'" in stderr and "required column is missing" in stderr


def test_without_reference_or_champion_says_what_to_pass(
    commands: typer.Typer, mlflow_uri: str, drift_root: Path
) -> None:
    code, _, stderr = _check(
        commands,
        drift_root,
        "--site",
        "hospital_01",
        "--current",
        str(SMOKE_WINDOW),
        "--model-name",
        f"never-registered-{uuid.uuid4().hex[:8]}",
        "--tracking-uri",
        mlflow_uri,
    )
    assert code == 1
    assert "has no 'champion' alias yet; pass --reference FROM..TO" in stderr
