"""One site's drift check: the drift score (healthrisk.drift.score) that decides, the
serving champion's performance on the new labelled days, and Evidently's `Report` +
`DataDriftPreset` per-column detail beside them.

Runs where the data is. What it returns (`SiteDrift`) holds only aggregates (scores,
per-column results, the champion's AUC and loss, row counts), so it is what may leave the
site; the Evidently HTML it writes stays there (it embeds histogram edges and per-row
points that can reveal single patients' values).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from healthrisk.data.loader import SiteData, load_site
from healthrisk.data.window import DateWindow
from healthrisk.drift.policy import site_drifts
from healthrisk.drift.score import DriftScore, Window, drift_score
from healthrisk.federated.model import ServedModel
from healthrisk.schema import FEATURE_NAMES, FEATURES, FeatureGroup

if TYPE_CHECKING:
    import pandas as pd

# PSI thresholds per feature group. Personal features (wearable and bedside measurements)
# are stable for a site's population, so PSI past the usual "significant shift" level of
# 0.25 means the population or a device changed; a one-day window of ~160 rows reaches 0.17
# by chance alone (PSI's 30 bins). Weather and air quality move a whole site from one day
# to the next; a short current window after a few bad-air days reaches PSI 0.3-0.7 at the
# generator's sites without drift, a smoke episode PSI > 2 (tests/drift/test_drift_check.py).
# Only that size counts.
PSI_THRESHOLDS: Mapping[FeatureGroup, float] = {FeatureGroup.PERSONAL: 0.25, FeatureGroup.ENVIRONMENT: 1.0}
# PSI bins the reference into fixed bins, so past a few ten thousand rows more rows do not
# change the score, only the time (benchmarks/drift.py measures both).
CALIBRATED_MAX_ROWS = 20_000


@dataclass(frozen=True)
class DriftOptions:
    """How columns are compared. `None` fields leave the choice to Evidently."""

    per_column_method: Mapping[str, str] | None = None
    per_column_threshold: Mapping[str, float] | None = None
    max_rows: int | None = None  # sample each side down to this many rows
    seed: int = 0

    @classmethod
    def evidently_defaults(cls) -> DriftOptions:
        """Evidently's own choice: Wasserstein (normed, 0.1) past 1000 rows, K-S below."""
        return cls()

    @classmethod
    def calibrated(cls) -> DriftOptions:
        """PSI on every feature with its group's threshold, which tells weather from drift."""
        return cls(
            per_column_method=dict.fromkeys(FEATURE_NAMES, "psi"),
            per_column_threshold={f.name: PSI_THRESHOLDS[f.group] for f in FEATURES},
            max_rows=CALIBRATED_MAX_ROWS,
        )


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class Performance:
    """The serving champion on the site's newest labelled rows: what federated performance
    monitoring reports (SPEC §6), and nothing more."""

    auc: float | None  # None when the rows hold one class only
    loss: float
    rows: int

    @classmethod
    def of(cls, champion: ServedModel, rows: SiteData) -> Performance | None:
        if rows.labels is None:
            return None
        result = champion.evaluate(rows.features, rows.labels.astype(np.float64))
        return cls(None if np.isnan(result.auc) else result.auc, result.loss, result.n)


@dataclass(frozen=True)
class SiteDrift:
    """The summary of one site's check: aggregates only, never rows or values.

    `score` decides (`detected` = score ≥ threshold); `drift` holds its components, the
    per-column moves of the champion's log-odds and the calibrations; `drift_share` and
    `columns` are Evidently's per-column detail, kept for people, no longer the verdict.
    """

    site: str
    reference: str
    current: str
    n_reference: int
    n_current: int
    threshold: float
    drift: DriftScore
    performance: Performance | None
    drift_share: float
    columns: tuple[ColumnDrift, ...]
    reference_source: str = "explicit"  # or "champion vN"
    html_report: str | None = None  # a path at the site; the file itself is not published
    checked_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    @property
    def score(self) -> float:
        return self.drift.score

    @property
    def driver(self) -> str:
        """What moved the score: a column, "total" (the champion's log-odds), "refit", or ""."""
        refit = self.drift.refit
        if refit is not None and refit.score > self.drift.prediction.score:
            return "refit"
        return self.drift.prediction.driver

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    @property
    def n_drifted(self) -> int:
        return len(self.drifted_columns)

    @property
    def detected(self) -> bool:
        return site_drifts(self.score, self.threshold)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            score=self.score,
            driver=self.driver,
            drifted_columns=self.drifted_columns,
            n_drifted=self.n_drifted,
            detected=self.detected,
        )
        return data


def frame(features: np.ndarray) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(features, columns=list(FEATURE_NAMES))


def _sample(data: pd.DataFrame, options: DriftOptions) -> pd.DataFrame:
    if options.max_rows is None or len(data) <= options.max_rows:
        return data
    return data.sample(n=options.max_rows, random_state=options.seed)


def run_report(
    reference: pd.DataFrame, current: pd.DataFrame, *, options: DriftOptions
) -> tuple[float, tuple[ColumnDrift, ...], Any]:
    """Evidently's DataDriftPreset on two frames → (drift share, per-column results, snapshot).

    The share is Evidently's own dataset-drift figure (its default share of 0.5), reported
    as detail: the product's threshold applies to the drift score.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    # Forced numeric: with few distinct values (a short window of integer step counts)
    # Evidently's inference would call a feature categorical and switch its test.
    definition = DataDefinition(numerical_columns=list(FEATURE_NAMES))
    preset = DataDriftPreset(
        columns=list(FEATURE_NAMES),
        per_column_method=dict(options.per_column_method) if options.per_column_method else None,
        per_column_threshold=dict(options.per_column_threshold) if options.per_column_threshold else None,
    )
    # Keyword arguments: positionally `run` takes current first, an easy swap to make.
    snapshot = Report([preset], include_tests=True).run(
        current_data=Dataset.from_pandas(_sample(current, options), data_definition=definition),
        reference_data=Dataset.from_pandas(_sample(reference, options), data_definition=definition),
    )
    share, columns = summarise(snapshot.dict())
    return share, columns, snapshot


def summarise(snapshot: Mapping[str, Any]) -> tuple[float, tuple[ColumnDrift, ...]]:
    """Drift share and per-column results from a snapshot's dict.

    Scores and the resolved method/threshold come from each ValueDrift metric; the
    verdict comes from its test, which is Evidently's own drift decision for the column
    (the direction of the comparison differs between methods: p-values vs distances).
    """
    scores: dict[str, tuple[str, float, float]] = {}
    share: float | None = None
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if config["type"].endswith(":ValueDrift"):
            method, threshold = str(config["method"]), float(config["threshold"])
            scores[config["column"]] = (method, float(metric["value"]), threshold)
        elif config["type"].endswith(":DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    verdicts: dict[str, bool] = {}
    for test in snapshot["tests"]:
        params = test["metric_config"]["params"]
        if params["type"].endswith(":ValueDrift"):
            verdicts[params["column"]] = test["status"] == "FAIL"
    if share is None or set(scores) != set(FEATURE_NAMES) or set(verdicts) != set(FEATURE_NAMES):
        raise RuntimeError("Evidently's report lacks the drift share or a feature's drift test")
    columns = tuple(
        ColumnDrift(name, scores[name][0], scores[name][1], scores[name][2], verdicts[name])
        for name in FEATURE_NAMES
    )
    return share, columns


def _window(rows: SiteData) -> Window:
    labels = rows.labels.astype(np.float64) if rows.labels is not None else None
    return Window(rows.features, rows.days, labels)


def check_site(
    data_root: Path,
    site: str,
    *,
    reference: DateWindow,
    current: DateWindow,
    threshold: float,
    champion: ServedModel,
    options: DriftOptions | None = None,
    report_dir: Path | None = None,
    reference_source: str = "explicit",
) -> SiteDrift:
    """Score `current` against `reference` at one site for the serving `champion`, with
    Evidently's per-column detail; write the HTML under `report_dir`.

    Raises `DataError`/`SchemaError` (naming the file, column and rule) for unusable data,
    ValueError for windows too small to score.
    """
    options = options or DriftOptions.calibrated()
    reference_rows = load_site(data_root, site, reference, require_label=False)
    current_rows = load_site(data_root, site, current, require_label=False)
    score = drift_score(champion, _window(reference_rows), _window(current_rows))
    share, columns, snapshot = run_report(
        frame(reference_rows.features), frame(current_rows.features), options=options
    )
    html: Path | None = None
    if report_dir is not None:
        html = report_dir / site / f"drift_{reference}_vs_{current}.html".replace("..", "_to_")
        html.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html))
    return SiteDrift(
        site=site,
        reference=str(reference),
        current=str(current),
        n_reference=reference_rows.n_rows,
        n_current=current_rows.n_rows,
        threshold=threshold,
        drift=score,
        performance=Performance.of(champion, current_rows),
        drift_share=share,
        columns=columns,
        reference_source=reference_source,
        html_report=str(html.resolve()) if html is not None else None,
    )


@dataclass(frozen=True)
class NothingNew:
    """A site with no day after the champion's training window: nothing to score, no drift."""

    site: str
    reference: str
    threshold: float
    reference_source: str = "explicit"
    score: float = 0.0
    detected: bool = False
    performance: Performance | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"current": None, "n_current": 0}
