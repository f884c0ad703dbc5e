"""The operator's MLflow edge: read a run's progress and version, promote, roll back.

Runs and versions are found by their `healthrisk.training` / `healthrisk.run_number`
tags, never remembered in memory, so an operator restarted mid-run finds them again.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import healthrisk.provenance as provenance
import healthrisk.registry as registry
from healthrisk.contracts import (
    METRIC_DP_EPSILON,
    METRIC_ROUND,
    METRIC_VAL_ACCURACY,
    METRIC_VAL_AUC,
    METRIC_VAL_LOSS,
    TAG_CHAMPION_VAL_AUC,
    TAG_DECLINED_SITES,
    TAG_PREVIOUS_CHAMPION,
    TAG_PROMOTION,
    TAG_PROMOTION_REASON,
    TAG_RUN_NUMBER,
    TAG_TRAINING,
    TAG_VAL_AUC,
    TRAINING_EXPERIMENT,
)
from healthrisk_operator.views import RunProgress, VersionView

if TYPE_CHECKING:
    from mlflow import MlflowClient


def limit_client_retries(timeout_s: int) -> None:
    """MLflow's HTTP client retries for minutes by default; the operator retries itself."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))


@lru_cache(maxsize=8)
def client(tracking_uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def _run_filter(training_ref: str, run: int) -> str:
    return f"tags.`{TAG_TRAINING}` = '{_quote(training_ref)}' and tags.`{TAG_RUN_NUMBER}` = '{run}'"


def run_progress(tracking_uri: str, training_ref: str, run: int) -> RunProgress | None:
    mlflow_client = client(tracking_uri)
    experiment = mlflow_client.get_experiment_by_name(TRAINING_EXPERIMENT)
    if experiment is None:
        return None
    runs = mlflow_client.search_runs(
        [experiment.experiment_id],
        _run_filter(training_ref, run),
        max_results=1,
        order_by=["start_time DESC"],
    )
    if not runs:
        return None
    metrics = runs[0].data.metrics  # the latest value of each, i.e. the last round's
    round_value = metrics.get(METRIC_ROUND)
    declined = runs[0].data.tags.get(TAG_DECLINED_SITES)
    return RunProgress(
        round=int(round_value) if round_value is not None else None,
        auc=metrics.get(METRIC_VAL_AUC),
        loss=metrics.get(METRIC_VAL_LOSS),
        accuracy=metrics.get(METRIC_VAL_ACCURACY),
        epsilon=metrics.get(METRIC_DP_EPSILON),
        declined=json.loads(declined) if declined else {},
    )


def find_version(tracking_uri: str, registered_name: str, training_ref: str, run: int) -> VersionView | None:
    versions = client(tracking_uri).search_model_versions(
        f"name = '{_quote(registered_name)}' and {_run_filter(training_ref, run)}"
    )
    if not versions:
        return None
    # One run registers one version; should a retried submission have registered two,
    # the newest is the one its run finished with.
    newest = max(versions, key=lambda v: int(v.version))
    tags = newest.tags or {}
    return VersionView(
        version=str(newest.version),
        auc=_number(tags.get(TAG_VAL_AUC)),
        champion_auc=_number(tags.get(TAG_CHAMPION_VAL_AUC)),
        promotion=tags.get(TAG_PROMOTION),
        promotion_reason=tags.get(TAG_PROMOTION_REASON),
        previous_champion=tags.get(TAG_PREVIOUS_CHAMPION) or None,
    )


def _number(tag: str | None) -> float | None:
    try:
        return float(tag) if tag is not None else None
    except ValueError:
        return None


def promote(
    tracking_uri: str, name: str, version: str, alias: str, max_auc_drop: float, signing_key_file: Path
) -> registry.PromotionDecision:
    key = provenance.ensure_signing_key(signing_key_file)
    return registry.promote(
        client(tracking_uri), name, version, signing_key=key, alias=alias, max_auc_drop=max_auc_drop
    )


def rollback(
    tracking_uri: str, name: str, alias: str, version: str, to_version: str | None, reason: str
) -> None:
    registry.rollback(client(tracking_uri), name, alias, version, to_version, reason)
