"""The per-site check on generated data: smoke at one site, weather everywhere, at the
default threshold; Evidently's per-column detail beside the score."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from drift_cases import QUIET_WINDOW, REFERENCE, SITES, SMOKE_WINDOW

from healthrisk.contracts import DEFAULT_DRIFT_THRESHOLD
from healthrisk.data.loader import SchemaError, write_day
from healthrisk.data.window import DateWindow
from healthrisk.drift.check import DriftOptions, SiteDrift, check_site
from healthrisk.drift.policy import RetrainPolicy, decide
from healthrisk.federated.model import ServedModel
from healthrisk.schema import FEATURE_NAMES


def _check_all(
    root: Path,
    current: DateWindow,
    champion: ServedModel,
    options: DriftOptions | None = None,
    report_dir: Path | None = None,
) -> list[SiteDrift]:
    return [
        check_site(
            root,
            site,
            reference=REFERENCE,
            current=current,
            threshold=DEFAULT_DRIFT_THRESHOLD,
            champion=champion,
            options=options,
            report_dir=report_dir,
        )
        for site in SITES
    ]


def test_smoke_is_detected_at_the_drifted_site_only(
    drift_root: Path, champion_model: ServedModel, tmp_path: Path
) -> None:
    summaries = _check_all(drift_root, SMOKE_WINDOW, champion_model, report_dir=tmp_path)
    by_site = {s.site: s for s in summaries}
    smoky = by_site["hospital_01"]
    assert smoky.detected and smoky.score >= DEFAULT_DRIFT_THRESHOLD
    assert smoky.driver in ("total", "pm25", "pm10", "refit")
    # what moved: the champion's log-odds through the two smoke columns, nothing else much
    moves = smoky.drift.feature_shift
    assert moves["pm25"] + moves["pm10"] > 1.0
    assert all(abs(moves[c]) < 0.25 for c in FEATURE_NAMES if c not in ("pm25", "pm10"))
    # Evidently's per-column detail stays in the summary
    assert smoky.drifted_columns == ["pm25", "pm10"]
    for site in ("hospital_02", "hospital_03"):
        assert not by_site[site].detected and by_site[site].score < DEFAULT_DRIFT_THRESHOLD
        assert by_site[site].drifted_columns == []
    decision = decide(summaries, RetrainPolicy.ANY)
    assert decision.retrain and decision.drifted_sites == ("hospital_01",)
    assert not decide(summaries, RetrainPolicy.MAJORITY).retrain


def test_summary_has_the_score_the_champions_performance_and_every_column(
    drift_root: Path, champion_model: ServedModel, tmp_path: Path
) -> None:
    summary = check_site(
        drift_root,
        "hospital_01",
        reference=REFERENCE,
        current=SMOKE_WINDOW,
        threshold=DEFAULT_DRIFT_THRESHOLD,
        champion=champion_model,
        report_dir=tmp_path,
    )
    assert [c.column for c in summary.columns] == list(FEATURE_NAMES)
    assert {c.method for c in summary.columns} == {"psi"}
    for column in summary.columns:
        assert column.drifted == (column.score >= column.threshold)
    # Evidently's own share (DriftedColumnsCount) agrees with its per-column tests.
    assert summary.drift_share == pytest.approx(summary.n_drifted / len(FEATURE_NAMES))
    assert summary.n_current > 0 and summary.n_reference > summary.n_current
    assert summary.html_report is not None and Path(summary.html_report).is_file()
    assert Path(summary.html_report).is_relative_to(tmp_path / "hospital_01")
    # the champion on the labelled new days: AUC, loss and the row count, nothing more
    performance = summary.performance
    assert performance is not None and performance.rows == summary.n_current
    assert performance.auc is not None and 0.5 < performance.auc < 1 and performance.loss > 0
    printed = summary.as_dict()
    assert printed["score"] == summary.score and printed["detected"] is True
    assert set(printed["performance"]) == {"auc", "loss", "rows"}


def test_new_days_without_drift_do_not_trigger(drift_root: Path, champion_model: ServedModel) -> None:
    summaries = _check_all(drift_root, QUIET_WINDOW, champion_model)
    assert [s.detected for s in summaries] == [False, False, False]
    assert max(s.score for s in summaries) < DEFAULT_DRIFT_THRESHOLD
    assert not decide(summaries, RetrainPolicy.ANY).retrain


def test_evidently_defaults_mistake_weather_for_drift(drift_root: Path, champion_model: ServedModel) -> None:
    """Why Evidently's detail uses calibrated options: with its defaults (normed Wasserstein,
    0.1), a few days of different air at a site without drift already flag columns that
    smoke flags, so its verdicts could not tell smoke from weather. The score is unmoved."""
    summaries = _check_all(
        drift_root, QUIET_WINDOW, champion_model, options=DriftOptions.evidently_defaults()
    )
    assert any(s.drifted_columns for s in summaries)
    assert {c.method for s in summaries for c in s.columns} == {"Wasserstein distance (normed)"}
    assert not decide(summaries, RetrainPolicy.ANY).retrain


def test_malformed_file_is_refused_with_its_name(site_copy: Path, champion_model: ServedModel) -> None:
    bad = site_copy / "hospital_02" / "2024-01-17.csv"
    columns = {name: pa.array([50.0, 60.0]) for name in FEATURE_NAMES}
    columns["heart_rate"] = pa.array([70.0, 400.0])  # outside 20-250
    write_day(bad, pa.table(columns))
    with pytest.raises(SchemaError) as refused:
        check_site(
            site_copy,
            "hospital_02",
            reference=REFERENCE,
            current=DateWindow.parse("2024-01-16..2024-01-17"),
            threshold=DEFAULT_DRIFT_THRESHOLD,
            champion=champion_model,
        )
    message = str(refused.value)
    assert str(bad) in message and "heart_rate" in message and "20, 250" in message
