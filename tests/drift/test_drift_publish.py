"""What leaves a site: the summary run in MLflow (real server), never the HTML."""

from __future__ import annotations

import json
from pathlib import Path

from drift_cases import REFERENCE, SMOKE_WINDOW

from healthrisk.contracts import (
    DEFAULT_DRIFT_THRESHOLD,
    DRIFT_EXPERIMENT,
    TAG_CURRENT_WINDOW,
    TAG_DRIFT_DETECTED,
    TAG_DRIFT_DRIVER,
    TAG_REFERENCE_WINDOW,
    TAG_SITE,
)
from healthrisk.drift.check import check_site
from healthrisk.drift.publish import SUMMARY_ARTIFACT, publish_summary
from healthrisk.federated.model import ServedModel
from healthrisk.schema import FEATURE_NAMES


def test_summary_run_has_site_windows_metrics_and_only_the_summary(
    mlflow_uri: str, drift_root: Path, champion_model: ServedModel, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_uri)
    summary = check_site(
        drift_root,
        "hospital_01",
        reference=REFERENCE,
        current=SMOKE_WINDOW,
        threshold=DEFAULT_DRIFT_THRESHOLD,
        champion=champion_model,
        report_dir=tmp_path,
    )
    run_id = publish_summary(client, summary)

    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == DRIFT_EXPERIMENT
    assert run.info.status == "FINISHED"
    assert run.data.tags[TAG_SITE] == "hospital_01"
    assert run.data.tags[TAG_REFERENCE_WINDOW] == str(REFERENCE)
    assert run.data.tags[TAG_CURRENT_WINDOW] == str(SMOKE_WINDOW)
    assert run.data.tags[TAG_DRIFT_DETECTED] == "true"
    assert run.data.tags[TAG_DRIFT_DRIVER] == summary.driver
    metrics = run.data.metrics
    assert metrics["drift_score"] == summary.score >= DEFAULT_DRIFT_THRESHOLD
    assert metrics["drift_threshold"] == DEFAULT_DRIFT_THRESHOLD
    assert summary.performance is not None and summary.performance.auc is not None
    assert (metrics["champion_auc"], metrics["rows"]) == (summary.performance.auc, summary.performance.rows)
    assert {f"shift.{c}" for c in FEATURE_NAMES} <= set(metrics)
    assert {"drift_score.prediction", "drift_score.refit", "calibration_slope"} <= set(metrics)
    assert metrics["drift_share"] == summary.drift_share
    assert metrics["n_drifted"] == 2
    # The HTML stays at the site: it carries individual values (see drift/publish.py).
    assert [a.path for a in client.list_artifacts(run_id)] == [SUMMARY_ARTIFACT]
    published = json.loads(
        Path(client.download_artifacts(run_id, SUMMARY_ARTIFACT, str(tmp_path))).read_text()
    )
    assert published["drifted_columns"] == ["pm25", "pm10"]
    assert [c["column"] for c in published["columns"]] == list(FEATURE_NAMES)
    assert set(published["columns"][0]) == {"column", "method", "score", "threshold", "drifted"}


def test_html_report_holds_individual_values(
    site_copy: Path, champion_model: ServedModel, tmp_path: Path
) -> None:
    """The reason the HTML is not published: one patient's reading shows up in it."""
    import pyarrow as pa

    from healthrisk.data.loader import read_table, write_day

    day = site_copy / "hospital_02" / "2024-01-13.parquet"
    table = read_table(day)
    marker = 187.654321  # an unusual, valid heart rate of one person
    heart_rate = table.column("heart_rate").to_pylist()
    heart_rate[0] = marker
    index = table.column_names.index("heart_rate")
    write_day(day, table.set_column(index, "heart_rate", pa.array(heart_rate)))
    summary = check_site(
        site_copy,
        "hospital_02",
        reference=REFERENCE,
        current=SMOKE_WINDOW.__class__.parse("2024-01-13"),
        threshold=DEFAULT_DRIFT_THRESHOLD,
        champion=champion_model,
        report_dir=tmp_path,
    )
    assert summary.html_report is not None
    assert str(marker) in Path(summary.html_report).read_text()
    assert str(marker) not in json.dumps(summary.as_dict())
