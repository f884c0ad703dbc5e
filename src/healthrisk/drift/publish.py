"""What leaves a site after a drift check: one MLflow run per site with the summary only
(drift score and its components, per-column moves and Evidently scores, the champion's AUC
and loss on the new labelled days: aggregates).

The Evidently HTML is deliberately not uploaded. It embeds histogram bin edges (the
first and last are the smallest and largest value seen, i.e. one patient's reading) and
index-bucketed line plots that, for a current window of a few hundred rows, carry
individual rows' values verbatim. It stays at the site; the run records where.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from healthrisk.contracts import (
    DRIFT_EXPERIMENT,
    TAG_CURRENT_WINDOW,
    TAG_DRIFT_DETECTED,
    TAG_DRIFT_DRIVER,
    TAG_DRIFTED_COLUMNS,
    TAG_REFERENCE_SOURCE,
    TAG_REFERENCE_WINDOW,
    TAG_SITE,
)
from healthrisk.drift.check import SiteDrift

if TYPE_CHECKING:
    from mlflow import MlflowClient

SUMMARY_ARTIFACT = "drift_summary.json"


def experiment_id(client: MlflowClient, name: str = DRIFT_EXPERIMENT) -> str:
    from mlflow.exceptions import MlflowException

    existing = client.get_experiment_by_name(name)
    if existing is not None:
        return str(existing.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:
        # Another site created it between our lookup and our create.
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def publish_summary(client: MlflowClient, summary: SiteDrift, *, experiment: str = DRIFT_EXPERIMENT) -> str:
    """Record `summary` as a finished run in `experiment`; return the run id."""
    run = client.create_run(
        experiment_id(client, experiment),
        run_name=f"drift-{summary.site}-{summary.current}",
        tags={
            TAG_SITE: summary.site,
            TAG_REFERENCE_WINDOW: summary.reference,
            TAG_CURRENT_WINDOW: summary.current,
            TAG_REFERENCE_SOURCE: summary.reference_source,
            TAG_DRIFT_DETECTED: str(summary.detected).lower(),
            TAG_DRIFTED_COLUMNS: ",".join(summary.drifted_columns),
            TAG_DRIFT_DRIVER: summary.driver,
        },
    )
    run_id = str(run.info.run_id)
    try:
        from mlflow.entities import Metric

        timestamp = int(run.info.start_time)
        values = {
            "drift_score": summary.score,
            "drift_score.prediction": summary.drift.prediction.score,
            "prediction_shift": summary.drift.prediction.effect,
            "drift_threshold": summary.threshold,
            "drift_share": summary.drift_share,
            "n_drifted": float(summary.n_drifted),
            **{f"shift.{column}": move for column, move in summary.drift.feature_shift.items()},
            **{f"score.{c.column}": c.score for c in summary.columns},
        }
        if summary.drift.refit is not None:
            values["drift_score.refit"] = summary.drift.refit.score
            values["refit_gain"] = summary.drift.refit.effect
        if summary.drift.current_calibration is not None:
            values["calibration_slope"] = summary.drift.current_calibration.slope
        if summary.performance is not None:
            values["champion_loss"] = summary.performance.loss
            values["rows"] = float(summary.performance.rows)
            if summary.performance.auc is not None:
                values["champion_auc"] = summary.performance.auc
        metrics = [Metric(key, float(value), timestamp, 0) for key, value in values.items()]
        client.log_batch(run_id, metrics=metrics)
        client.log_dict(run_id, summary.as_dict(), SUMMARY_ARTIFACT)
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id
