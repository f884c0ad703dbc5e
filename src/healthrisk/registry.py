"""MLflow side of a model's life: build the sklearn pipeline, log, register, promote.

Promotion (SPEC §4): a new version takes the serving alias only if its federated
validation AUC is at least the champion's minus `max_auc_drop`; otherwise it stays
registered with tags saying why. Aliases and tags only — stages are deprecated.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from healthrisk.contracts import (
    CHAMPION_ALIAS,
    PROMOTION_PROMOTED,
    PROMOTION_REJECTED,
    PROMOTION_ROLLED_BACK,
    TAG_PROMOTION,
    TAG_PROMOTION_REASON,
    TAG_VAL_AUC,
)
from healthrisk.schema import EXAMPLE_RECORD, FEATURE_NAMES, LABEL

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from sklearn.pipeline import Pipeline

# Explicit requirements: inferring them costs ~5 s per log_model and pulls in the
# whole training environment. The serving side needs only these.
MODEL_PIP_REQUIREMENTS = ("scikit-learn>=1.6,<1.10", "numpy>=2,<2.5", "skops>=0.11")


def build_pipeline(mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept: float) -> Pipeline:
    """An sklearn Pipeline(StandardScaler → LogisticRegression) from federated parameters."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler()
    scaler.mean_ = np.asarray(mean, dtype=np.float64)
    scaler.scale_ = np.asarray(scale, dtype=np.float64)
    scaler.var_ = scaler.scale_**2
    scaler.n_features_in_ = len(FEATURE_NAMES)
    scaler.feature_names_in_ = np.array(FEATURE_NAMES, dtype=object)
    scaler.n_samples_seen_ = 0
    classifier = LogisticRegression()
    classifier.coef_ = np.asarray(coef, dtype=np.float64).reshape(1, -1)
    classifier.intercept_ = np.array([float(intercept)])
    classifier.classes_ = np.array([0, 1])
    classifier.n_features_in_ = len(FEATURE_NAMES)
    classifier.n_iter_ = np.array([0])
    return Pipeline([("scaler", scaler), ("classifier", classifier)])


def log_and_register(
    pipeline: Pipeline,
    *,
    registered_name: str,
    tags: Mapping[str, str],
) -> ModelVersion:
    """Log `pipeline` into the active MLflow run and register it as a new version."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    example = pd.DataFrame([EXAMPLE_RECORD], columns=list(FEATURE_NAMES)).astype("float64")
    signature = infer_signature(example, pd.Series([0.5], name=LABEL))
    info = mlflow.sklearn.log_model(
        pipeline,
        name="model",
        signature=signature,
        input_example=example,
        pip_requirements=list(MODEL_PIP_REQUIREMENTS),
        registered_model_name=registered_name,
    )
    client = mlflow.MlflowClient()
    version = client.get_model_version(registered_name, str(info.registered_model_version))
    for key, value in tags.items():
        client.set_model_version_tag(registered_name, version.version, key, value)
    return client.get_model_version(registered_name, version.version)


@dataclass(frozen=True)
class PromotionDecision:
    version: str
    promoted: bool
    reason: str
    auc: float
    champion_version: str | None
    champion_auc: float | None

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def version_auc(version: ModelVersion) -> float:
    try:
        return float(version.tags[TAG_VAL_AUC])
    except (KeyError, ValueError) as exc:
        raise ValueError(
            f"model version {version.version} has no numeric {TAG_VAL_AUC} tag; "
            "it was not registered by a federated run"
        ) from exc


def current_champion(client: MlflowClient, name: str, alias: str = CHAMPION_ALIAS) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def promote(
    client: MlflowClient,
    name: str,
    version: str,
    *,
    alias: str = CHAMPION_ALIAS,
    max_auc_drop: float = 0.0,
) -> PromotionDecision:
    """Decide, record (tags) and apply (alias) the promotion of `version`."""
    if max_auc_drop < 0:
        raise ValueError(f"max_auc_drop must be >= 0, got {max_auc_drop}")
    candidate = client.get_model_version(name, version)
    auc = version_auc(candidate)
    champion = current_champion(client, name, alias)
    if champion is not None and champion.version == candidate.version:
        decision = PromotionDecision(version, True, f"already {alias}", auc, champion.version, auc)
    elif champion is None:
        decision = PromotionDecision(version, True, f"no {alias} yet", auc, None, None)
    else:
        champion_auc = version_auc(champion)
        floor = champion_auc - max_auc_drop
        promoted = auc >= floor
        comparison = ">=" if promoted else "<"
        reason = (
            f"val AUC {auc:.4f} {comparison} {alias} v{champion.version} AUC {champion_auc:.4f}"
            f" - maxAucDrop {max_auc_drop:g}"
        )
        decision = PromotionDecision(version, promoted, reason, auc, champion.version, champion_auc)
    client.set_model_version_tag(
        name, version, TAG_PROMOTION, PROMOTION_PROMOTED if decision.promoted else PROMOTION_REJECTED
    )
    client.set_model_version_tag(name, version, TAG_PROMOTION_REASON, decision.reason)
    if decision.promoted:
        client.set_registered_model_alias(name, alias, version)
    return decision


def rollback(client: MlflowClient, name: str, alias: str, to_version: str | None, reason: str) -> None:
    """Point `alias` back at `to_version` (or remove it) after a failed rollout."""
    current = current_champion(client, name, alias)
    if current is not None:
        client.set_model_version_tag(name, current.version, TAG_PROMOTION, PROMOTION_ROLLED_BACK)
        client.set_model_version_tag(name, current.version, TAG_PROMOTION_REASON, reason)
    if to_version is None:
        client.delete_registered_model_alias(name, alias)
    else:
        client.set_registered_model_alias(name, alias, to_version)


def dumps_tag(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
