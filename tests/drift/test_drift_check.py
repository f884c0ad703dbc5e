"""The per-site check on generated data: smoke at one site, weather everywhere."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from drift_cases import QUIET_WINDOW, REFERENCE, SITES, SMOKE_SHARE_THRESHOLD, SMOKE_WINDOW

from healthrisk.data.loader import SchemaError, write_day
from healthrisk.drift.check import DriftOptions, check_site
from healthrisk.drift.policy import RetrainPolicy, decide
from healthrisk.schema import FEATURE_NAMES


def _check_all(root: Path, current, options: DriftOptions | None = None, report_dir: Path | None = None):
    return [
        check_site(
            root,
            site,
            reference=REFERENCE,
            current=current,
            threshold=SMOKE_SHARE_THRESHOLD,
            options=options,
            report_dir=report_dir,
        )
        for site in SITES
    ]


def test_smoke_is_detected_at_the_drifted_site_only(drift_root: Path, tmp_path: Path) -> None:
    summaries = _check_all(drift_root, SMOKE_WINDOW, report_dir=tmp_path)
    by_site = {s.site: s for s in summaries}
    assert by_site["hospital_01"].detected
    assert by_site["hospital_01"].drifted_columns == ["pm25", "pm10"]
    for site in ("hospital_02", "hospital_03"):
        assert not by_site[site].detected
        assert by_site[site].drifted_columns == []
    decision = decide(summaries, RetrainPolicy.ANY)
    assert decision.retrain and decision.drifted_sites == ("hospital_01",)
    assert not decide(summaries, RetrainPolicy.MAJORITY).retrain


def test_summary_has_every_column_with_method_score_and_verdict(drift_root: Path, tmp_path: Path) -> None:
    summary = check_site(
        drift_root,
        "hospital_01",
        reference=REFERENCE,
        current=SMOKE_WINDOW,
        threshold=SMOKE_SHARE_THRESHOLD,
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


def test_new_days_without_drift_do_not_trigger(drift_root: Path) -> None:
    summaries = _check_all(drift_root, QUIET_WINDOW)
    assert [s.drifted_columns for s in summaries] == [[], [], []]
    assert not decide(summaries, RetrainPolicy.ANY).retrain


def test_evidently_defaults_mistake_weather_for_drift(drift_root: Path) -> None:
    """Why the calibrated options exist: with Evidently's defaults (normed Wasserstein,
    0.1), a few days of different air at a site without drift already cross the share
    that smoke reaches, so smoke could not be told apart from weather."""
    summaries = _check_all(drift_root, QUIET_WINDOW, options=DriftOptions.evidently_defaults())
    assert decide(summaries, RetrainPolicy.ANY).retrain
    assert {c.method for s in summaries for c in s.columns} == {"Wasserstein distance (normed)"}


def test_malformed_file_is_refused_with_its_name(site_copy: Path) -> None:
    bad = site_copy / "hospital_02" / "2024-01-17.csv"
    columns = {name: pa.array([50.0, 60.0]) for name in FEATURE_NAMES}
    columns["heart_rate"] = pa.array([70.0, 400.0])  # outside 20-250
    write_day(bad, pa.table(columns))
    with pytest.raises(SchemaError) as refused:
        check_site(
            site_copy,
            "hospital_02",
            reference=REFERENCE,
            current=SMOKE_WINDOW.__class__.parse("2024-01-16..2024-01-17"),
            threshold=SMOKE_SHARE_THRESHOLD,
        )
    message = str(refused.value)
    assert str(bad) in message and "heart_rate" in message and "20, 250" in message
