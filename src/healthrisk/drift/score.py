"""A site's drift score in [0, 1]; 0.5 (the default DRIFT_THRESHOLD) = "retraining is worth it".

The score asks what the serving champion does with the site's new days, not how many
columns moved. Two components, each a statement about the champion:

* prediction (no labels needed): the champion's log-odds for this site's patients moved by a
  material amount, beyond chance given the site's own day-to-day spread, and beyond every
  single day of the reference (the champion has been trained on no day like these).
  Per feature j the move is `c_j · (mean_cur_j − mean_ref_j)` with `c_j = coef_j / scale_j`
  (the pipeline's log-odds per raw unit): the column's shift weighted by its importance in
  the champion. The total is the same for the champion's log-odds itself. The champion then
  serves a population it was never validated on; a retrain takes the new days into its
  training and validation window, and the check settles.
* refit (needs the new days' labels): a logistic refit on the new labelled rows would
  re-weight the features, i.e. re-rank patients, beyond re-scaling the champion's log-odds.
  Measured as the log loss per row such a refit would save over the champion recalibrated
  on the same rows (its own intercept and slope there), estimated without fitting by Rao's
  score statistic for adding the 11 features (chi-square, 10 degrees of freedom, when the
  champion's ranking still holds, however far the features moved), less the same gain on
  the reference rows (a pooled champion may misfit a site from day one).
  Changes the product's pooled model cannot fix by retraining are reported, not scored: a
  site-level shift of calibration (intercept) and a collapse of the champion's signal
  (slope → 0: corrupted labels) — see `Calibration`.

Evidence unit of the prediction component: the day. Rows of one day share that day's
weather and air, so the noise of a window's mean comes from the spread of the reference's
daily means (`s_day · sqrt(1/k + 1/K)`, k current and K reference days), not the row count.
Labels are independent given the features, so the refit statistic needs no such care.

Each component is a lower bound L on its effect, beyond chance at 99 % (prediction: the
smaller of |move| − t·SE, Student t with K − 1 degrees of freedom, Bonferroni over total +
11 features, and the distance beyond the range of the reference's daily means;
refit: (statistic − its 99 % chance quantile) / 2n − reference gain), mapped to
`L / (L + m)` (0 when L ≤ 0), m the component's materiality: a component scores 0.5 exactly
when its effect is, beyond chance, m. The site's score is the larger of the two.
Only aggregates are returned: no row or feature value leaves the site.

Design, measurements and the alternatives rejected: the drift-score design note (issue 15);
detection rates: benchmarks/drift_detection.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from healthrisk.federated.model import ServedModel
from healthrisk.schema import FEATURE_NAMES

# Materiality of a move of the champion's mean log-odds: 0.25 = odds ×1.28, ~6 risk points
# at a risk of 0.5. A heatwave (+25 °F, −20 % humidity) moves it by ~0.1; a firmware change
# of +12 beats/min by ~0.9; smoke by 1.5-4.
PREDICTION_MATERIALITY = 0.25
# Materiality of a refit's gain, in nats of log loss per row: the cost (KL divergence,
# p(1−p)·δ²/2) of a log-odds error δ = PREDICTION_MATERIALITY on every patient at a risk
# of 0.5, so both components call the same size of error material.
REFIT_MATERIALITY = 0.5 * 0.5 * PREDICTION_MATERIALITY**2 / 2  # 0.0078
CONFIDENCE = 0.99
MIN_REFERENCE_DAYS = 3
# A window's mean over very few rows is close to one patient's values: refused, not published.
MIN_CURRENT_ROWS = 30


@dataclass(frozen=True)
class Window:
    """One side of a check at a site: rows (schema order), the day of each row, labels if held."""

    x: np.ndarray
    day: np.ndarray
    y: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.x.shape[1] != len(FEATURE_NAMES):
            raise ValueError(f"rows must be (n, {len(FEATURE_NAMES)}) in schema order, got {self.x.shape}")
        if self.x.shape[0] == 0:
            raise ValueError("a window needs at least one row")
        if self.day.shape != (self.x.shape[0],):
            raise ValueError(f"need one day per row: {self.day.shape[0]} days for {self.x.shape[0]} rows")
        if self.y is not None and self.y.shape != (self.x.shape[0],):
            raise ValueError(f"need one label per row: {self.y.shape[0]} labels for {self.x.shape[0]} rows")

    @property
    def n_days(self) -> int:
        return len(np.unique(self.day))


@dataclass(frozen=True)
class Component:
    effect: float  # prediction: log-odds (signed); refit: nats per row
    noise: float  # prediction: standard error; refit: chance-level SD of the gain
    lower: float  # the effect beyond chance (99 %); what the score maps
    materiality: float
    score: float
    driver: str  # prediction: "total" or the feature giving a positive bound, else ""


@dataclass(frozen=True)
class Calibration:
    """The champion's log-odds z recalibrated on a window's labels: y ~ logistic(a + b·z).

    Reported, not scored. An intercept that moves between reference and current is a
    site-level shift of risk the pooled model cannot represent (retraining spreads it over
    every site); a slope near 0 means the labels no longer follow the champion's log-odds
    at all: corrupted labels, or a world the features no longer describe — a person looks.
    """

    intercept: float
    slope: float
    auc: float | None


@dataclass(frozen=True)
class DriftScore:
    score: float
    prediction: Component
    refit: Component | None  # None when either window lacks labels
    feature_shift: dict[str, float]  # per feature: log-odds the champion moved by that column
    reference_days: int
    current_days: int
    reference_calibration: Calibration | None
    current_calibration: Calibration | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _to_score(lower: float, materiality: float) -> float:
    return 0.0 if lower <= 0 else lower / (lower + materiality)


def _daily_means(values: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Per-day means of each column of `values` (n, p) → (days, p)."""
    _, index = np.unique(day, return_inverse=True)
    counts = np.bincount(index)
    return np.stack(
        [np.bincount(index, weights=values[:, j]) / counts for j in range(values.shape[1])], axis=1
    )


def _mean_shift(
    ref: np.ndarray, cur: np.ndarray, ref_day: np.ndarray, n_cur_days: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column: mean shift current − reference, its standard error with days as the unit,
    and how far the current mean lies outside the range of the reference's daily means."""
    ref_daily = _daily_means(ref, ref_day)
    n_ref_days = ref_daily.shape[0]
    se = ref_daily.std(axis=0, ddof=1) * np.sqrt(1 / n_cur_days + 1 / n_ref_days)
    cur_mean = cur.mean(axis=0)
    outside = np.maximum(0.0, np.maximum(cur_mean - ref_daily.max(axis=0), ref_daily.min(axis=0) - cur_mean))
    return cur_mean - ref.mean(axis=0), se, outside


def _recalibrate(z: np.ndarray, y: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """Intercept a and slope b of `y ~ logistic(a + b·z)`, Newton's method with step halving.

    Starts from the constant model (b = 0), where the concave log-likelihood makes Newton safe.
    """
    design = np.column_stack([np.ones_like(z), z])
    rate = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    beta = np.array([np.log(rate / (1 - rate)), 0.0])

    def loglik(b: np.ndarray) -> float:
        eta = design @ b
        return float(np.sum(y * eta - np.logaddexp(0, eta)))

    current = loglik(beta)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-(design @ beta)))
        hessian = (design * (p * (1 - p))[:, None]).T @ design + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, design.T @ (y - p))
        while (candidate := loglik(beta + step)) < current and np.abs(step).max() > 1e-10:
            step = step / 2
        beta, improvement, current = beta + step, candidate - current, candidate
        if improvement < 1e-10:
            break
    return float(beta[0]), float(beta[1])


def _auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """Mann-Whitney AUC with average ranks for ties (vectorised); None with one class only."""
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = stats.rankdata(score)
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _refit_gain(standardised: np.ndarray, z: np.ndarray, y: np.ndarray) -> tuple[float, int, Calibration]:
    """Rao's score statistic for adding every feature to the recalibrated champion.

    `standardised` are a window's rows as the champion's scaler sees them, `z` its log-odds.
    Twice the log-likelihood a logistic refit would gain on these rows beyond recalibration,
    to second order; chi-square with (rank − 2) degrees of freedom when the rows follow the
    champion's ranking. Returns (statistic, degrees of freedom, the recalibration).
    """
    a, b = _recalibrate(z, y)
    p = 1 / (1 + np.exp(-(a + b * z)))
    # [1, z, x]: z is itself a combination of 1 and x, so one direction is redundant.
    design = np.column_stack([np.ones_like(z), z, standardised])
    gradient = design.T @ (y - p)
    information = (design * (p * (1 - p))[:, None]).T @ design
    solution, _, rank, _ = np.linalg.lstsq(information, gradient, rcond=None)
    return float(gradient @ solution), int(rank) - 2, Calibration(a, b, _auc(y, z))


def drift_score(
    champion: ServedModel,
    reference: Window,
    current: Window,
    *,
    prediction_materiality: float = PREDICTION_MATERIALITY,
    refit_materiality: float = REFIT_MATERIALITY,
    confidence: float = CONFIDENCE,
    feature_names: Sequence[str] = FEATURE_NAMES,
) -> DriftScore:
    """Score `current` against `reference` at one site for `champion` (see the module doc)."""
    n_ref_days, n_cur_days = reference.n_days, current.n_days
    if current.x.shape[0] < MIN_CURRENT_ROWS:
        raise ValueError(
            f"the current window has {current.x.shape[0]} rows; a drift score needs at least "
            f"{MIN_CURRENT_ROWS} (its means would be close to single patients' values)"
        )
    if n_ref_days < MIN_REFERENCE_DAYS:
        raise ValueError(
            f"the reference needs at least {MIN_REFERENCE_DAYS} days to show its day-to-day spread, "
            f"got {n_ref_days}"
        )

    x_ref, x_cur = champion.standardise(reference.x), champion.standardise(current.x)
    z_ref = x_ref @ champion.coef + champion.intercept
    z_cur = x_cur @ champion.coef + champion.intercept

    # prediction: the champion's log-odds, in total and per feature (importance-weighted shift)
    shift, se, outside = _mean_shift(
        np.column_stack([z_ref, reference.x]), np.column_stack([z_cur, current.x]), reference.day, n_cur_days
    )
    slope = np.concatenate([[1.0], champion.slope])
    moves, moves_se = slope * shift, np.abs(slope) * se  # log-odds, [total, feature 1..11]
    t = float(stats.t.ppf(1 - (1 - confidence) / len(moves), df=n_ref_days - 1))
    # Both: beyond chance away from the reference's average, and beyond every single day the
    # champion was trained on (so a retrain that took such days in settles the check).
    bounds = np.minimum(np.abs(moves) - t * moves_se, np.abs(slope) * outside)
    best = int(np.argmax(bounds))
    # which quantity gives the bound; none when nothing moved beyond chance
    driver = "" if bounds[best] <= 0 else "total" if best == 0 else feature_names[best - 1]
    prediction = Component(
        float(moves[best]),
        float(moves_se[best]),
        float(bounds[best]),
        prediction_materiality,
        _to_score(float(bounds[best]), prediction_materiality),
        driver,
    )

    refit = reference_calibration = current_calibration = None
    if current.y is not None and reference.y is not None:
        statistic, dof, current_calibration = _refit_gain(x_cur, z_cur, current.y)
        ref_statistic, ref_dof, reference_calibration = _refit_gain(x_ref, z_ref, reference.y)
        # the reference's own gain, unbiased (chance subtracted), never negative
        baseline = max(0.0, (ref_statistic - ref_dof) / (2 * reference.y.size))
        n = current.y.size
        lower = (statistic - float(stats.chi2.ppf(confidence, dof))) / (2 * n) - baseline
        refit = Component(
            statistic / (2 * n) - baseline,
            float(np.sqrt(2 * dof)) / (2 * n),
            lower,
            refit_materiality,
            _to_score(lower, refit_materiality),
            "",
        )

    return DriftScore(
        score=max(prediction.score, refit.score if refit else 0.0),
        prediction=prediction,
        refit=refit,
        feature_shift={name: float(v) for name, v in zip(feature_names, moves[1:], strict=True)},
        reference_days=n_ref_days,
        current_days=n_cur_days,
        reference_calibration=reference_calibration,
        current_calibration=current_calibration,
    )
