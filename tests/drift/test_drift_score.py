"""The drift score on generator data at the default threshold (pure: numpy, no MLflow).

A champion trained as `healthrisk train` trains it (healthrisk.federated.inprocess) on 14
days at three sites; then each scenario's new days at one site are scored against that
site's reference. Rates over many seeds are benchmarks/drift_detection.py's; these are
single cases whose outcome the design guarantees with a wide margin.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from healthrisk.contracts import DEFAULT_DRIFT_THRESHOLD
from healthrisk.data.generator import site_name, site_rows
from healthrisk.data.loader import SiteData
from healthrisk.data.window import DateWindow
from healthrisk.drift.score import PREDICTION_MATERIALITY, Window, _to_score, drift_score
from healthrisk.federated.inprocess import train_in_process
from healthrisk.federated.model import ServedModel

SEED = 7
START = dt.date(2024, 1, 1)
REFERENCE_DAYS = 14


def rows(site: int, days: range, kind: str | None = None) -> SiteData:
    window = DateWindow(START + dt.timedelta(days.start), START + dt.timedelta(days.stop - 1))
    return site_rows(SEED, site, window, [kind] if kind else [])


def window(data: SiteData, labels: bool = True) -> Window:
    return Window(
        data.features, data.days, data.labels.astype(float) if labels and data.labels is not None else None
    )


@pytest.fixture(scope="module")
def world() -> tuple[ServedModel, dict[int, SiteData]]:
    reference = {s: rows(s, range(REFERENCE_DAYS)) for s in range(3)}
    return train_in_process({site_name(s): r for s, r in reference.items()}), reference


def score(world: tuple[ServedModel, dict[int, SiteData]], site: int, kind: str | None, days: int = 3):
    champion, reference = world
    current = rows(site, range(REFERENCE_DAYS, REFERENCE_DAYS + days), kind)
    return drift_score(champion, window(reference[site]), window(current))


@pytest.mark.parametrize("site", [0, 1, 2])
def test_quiet_days_do_not_drift(world, site) -> None:
    assert score(world, site, None).score < DEFAULT_DRIFT_THRESHOLD


@pytest.mark.parametrize("kind", ["smoke", "firmware", "sensor"])
def test_shifts_that_move_the_champions_predictions_drift(world, kind) -> None:
    result = score(world, 0, kind)
    assert result.score >= DEFAULT_DRIFT_THRESHOLD
    assert result.prediction.driver in ("total", "pm25", "pm10", "heart_rate")


def test_a_shift_the_model_ignores_does_not_drift(world) -> None:
    assert score(world, 1, "heatwave").score < DEFAULT_DRIFT_THRESHOLD


def test_corrupted_labels_do_not_drift_but_show_a_collapsed_calibration(world) -> None:
    result = score(world, 1, "label-noise")
    assert result.score < DEFAULT_DRIFT_THRESHOLD
    assert result.current_calibration is not None and result.current_calibration.slope < 0.3
    assert result.reference_calibration is not None and result.reference_calibration.slope > 0.8


def test_a_changed_risk_law_drifts_through_the_refit(world) -> None:
    result = score(world, 1, "concept", days=7)
    assert result.score >= DEFAULT_DRIFT_THRESHOLD
    assert result.refit is not None and result.refit.score >= DEFAULT_DRIFT_THRESHOLD


def test_days_the_champion_was_trained_on_score_zero_on_prediction(world) -> None:
    champion, reference = world
    smoky_day = rows(0, range(REFERENCE_DAYS, REFERENCE_DAYS + 1), "smoke")
    trained_on = SiteData(
        site=smoky_day.site,
        window=smoky_day.window,
        files=(),
        features=np.vstack([reference[0].features, smoky_day.features]),
        labels=np.concatenate([reference[0].labels, smoky_day.labels]),
        days=np.concatenate([reference[0].days, smoky_day.days]),
    )
    result = drift_score(champion, window(trained_on), window(smoky_day, labels=False))
    assert result.prediction.score == 0.0 and result.refit is None


def test_without_labels_the_score_is_the_prediction_component(world) -> None:
    champion, reference = world
    current = rows(0, range(REFERENCE_DAYS, REFERENCE_DAYS + 3), "smoke")
    result = drift_score(champion, window(reference[0]), window(current, labels=False))
    assert result.refit is None and result.score == result.prediction.score >= DEFAULT_DRIFT_THRESHOLD


def test_bad_input_is_refused_with_a_clear_message(world) -> None:
    champion, reference = world
    ref = reference[0]
    first_two = ref.days < ref.days.min() + 2
    with pytest.raises(ValueError, match="at least 3 days"):
        drift_score(
            champion, Window(ref.features[first_two], ref.days[first_two]), Window(ref.features, ref.days)
        )
    with pytest.raises(ValueError, match="at least 30"):
        drift_score(champion, Window(ref.features, ref.days), Window(ref.features[:10], ref.days[:10]))
    with pytest.raises(ValueError, match="one day per row"):
        Window(ref.features, ref.days[:-1])
    with pytest.raises(ValueError, match="schema order"):
        Window(ref.features[:, :5], ref.days)


def test_score_is_half_exactly_at_materiality() -> None:
    assert _to_score(PREDICTION_MATERIALITY, PREDICTION_MATERIALITY) == 0.5
    assert _to_score(0.0, PREDICTION_MATERIALITY) == 0.0
    assert 0 < _to_score(1e9, PREDICTION_MATERIALITY) < 1
    assert np.isclose(_to_score(2 * PREDICTION_MATERIALITY, PREDICTION_MATERIALITY), 2 / 3)
