"""MLflow side of a model's life: build the sklearn pipeline, log, register, promote.

Registration logs the sklearn pipeline and, beside it, the parameters document that
serving reads (healthrisk.model_parameters), refusing a pipeline the document does not
reproduce exactly. Promotion (SPEC §4): a new version takes the serving alias only if its
federated validation AUC is at least the champion's minus `max_auc_drop`, both measured on
the same federated validation rows of the new run (its final evaluate carried the
champion: like with like); otherwise it stays registered with tags saying why. A promoted
version is signed (healthrisk.provenance) before the alias moves. Aliases and tags only —
stages are deprecated. Promotions of one registered model happen one at a time
(healthrisk.promotion_lock).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from healthrisk.contracts import (
    CHAMPION_ALIAS,
    METRIC_ROUND,
    METRIC_TRAIN_LOSS,
    PROMOTION_PROMOTED,
    PROMOTION_REJECTED,
    PROMOTION_ROLLED_BACK,
    TAG_CHAMPION_VAL_AUC,
    TAG_CHAMPION_VERSION,
    TAG_METRICS,
    TAG_PREVIOUS_CHAMPION,
    TAG_PROMOTION,
    TAG_PROMOTION_REASON,
    TAG_VAL_AUC,
    VAL_METRICS,
)
from healthrisk.federated.model import ServedModel
from healthrisk.model_parameters import (
    PARAMETERS_FILE,
    ModelIntegrityError,
    ModelParameters,
    parse_parameters,
)
from healthrisk.promotion_lock import promotion_lock
from healthrisk.provenance import sign_promotion
from healthrisk.registry_rest import parameters_document
from healthrisk.schema import EXAMPLE_RECORD, FEATURE_NAMES, FEATURES, LABEL

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from sklearn.pipeline import Pipeline

# Explicit requirements: inferring them costs ~5 s per log_model and pulls in the
# whole training environment. The serving side needs only these.
MODEL_PIP_REQUIREMENTS = ("scikit-learn>=1.6,<1.10", "numpy>=2,<2.5", "skops>=0.11")
# The served formula and the pipeline's predict_proba must agree to this on the check rows.
AGREEMENT_TOLERANCE = 1e-9
_CHECK_ROWS = 64
_FETCH_TIMEOUT_S = 30.0
# The run's metrics that /model shows (TAG_METRICS); per-site metrics stay in the run.
_SHOWN_METRICS = (*VAL_METRICS, METRIC_TRAIN_LOSS, METRIC_ROUND)


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


def served_parameters(pipeline: Any) -> ModelParameters:
    """The parameters serving will read for `pipeline`, refused unless they reproduce it exactly.

    Only StandardScaler → binary LogisticRegression over the schema's features can be
    served as data; the check runs the document through the same parser serving uses.
    """
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        raise ModelIntegrityError(f"expected a 2-step sklearn Pipeline, got {type(pipeline).__name__}")
    scaler, classifier = pipeline.steps[0][1], pipeline.steps[1][1]
    if not isinstance(scaler, StandardScaler) or not isinstance(classifier, LogisticRegression):
        raise ModelIntegrityError(
            "expected StandardScaler → LogisticRegression, got "
            f"{type(scaler).__name__} → {type(classifier).__name__}"
        )
    feature_names = getattr(scaler, "feature_names_in_", None)
    if feature_names is not None and tuple(feature_names) != FEATURE_NAMES:
        raise ModelIntegrityError(f"the scaler was fitted on {list(feature_names)}, not the feature schema")
    if list(classifier.classes_) != [0, 1] or classifier.coef_.shape != (1, len(FEATURE_NAMES)):
        raise ModelIntegrityError(
            f"expected a binary classifier over {len(FEATURE_NAMES)} features, got classes "
            f"{list(classifier.classes_)} and coef shape {classifier.coef_.shape}"
        )
    n = len(FEATURE_NAMES)
    extracted = ModelParameters(
        mean=np.asarray(scaler.mean_ if scaler.with_mean else np.zeros(n), dtype=np.float64),
        scale=np.asarray(scaler.scale_ if scaler.with_std else np.ones(n), dtype=np.float64),
        coef=np.asarray(classifier.coef_[0], dtype=np.float64),
        intercept=float(classifier.intercept_[0]),
    )
    served = parse_parameters(extracted.document())
    rng = np.random.default_rng(0)
    low = np.array([f.minimum for f in FEATURES])
    high = np.array([f.maximum for f in FEATURES])
    rows = np.vstack(
        [[EXAMPLE_RECORD[name] for name in FEATURE_NAMES], rng.uniform(low, high, (_CHECK_ROWS, n))]
    )
    expected = pipeline.predict_proba(pd.DataFrame(rows, columns=list(FEATURE_NAMES)))[:, 1]
    worst = float(np.max(np.abs(expected - served.scores(rows))))
    if worst > AGREEMENT_TOLERANCE:
        raise ModelIntegrityError(f"{PARAMETERS_FILE} disagrees with the pipeline by {worst:.3g}")
    return served


def log_and_register(
    pipeline: Pipeline,
    *,
    registered_name: str,
    tags: Mapping[str, str],
) -> ModelVersion:
    """Log `pipeline` and its parameters document into the active MLflow run; register a version."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    document = served_parameters(pipeline).document()
    example = pd.DataFrame([EXAMPLE_RECORD], columns=list(FEATURE_NAMES)).astype("float64")
    signature = infer_signature(example, pd.Series([0.5], name=LABEL))
    with tempfile.TemporaryDirectory(prefix="healthrisk-register-") as tmp:
        parameters_path = Path(tmp) / PARAMETERS_FILE
        parameters_path.write_bytes(document)
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=signature,
            input_example=example,
            pip_requirements=list(MODEL_PIP_REQUIREMENTS),
            registered_model_name=registered_name,
            extra_files=[str(parameters_path)],
        )
    client = mlflow.MlflowClient()
    version = client.get_model_version(registered_name, str(info.registered_model_version))
    run_metrics = client.get_run(info.run_id).data.metrics if info.run_id else {}
    shown = {name: run_metrics[name] for name in _SHOWN_METRICS if name in run_metrics}
    for key, value in {**tags, TAG_METRICS: dumps_tag(shown)}.items():
        client.set_model_version_tag(registered_name, version.version, key, value)
    return client.get_model_version(registered_name, version.version)


@dataclass(frozen=True)
class PromotionDecision:
    version: str
    promoted: bool
    reason: str
    auc: float
    champion_version: str | None
    champion_auc: float | None  # the champion on the same validation rows as `auc`

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


def compared_champion(version: ModelVersion) -> tuple[str, float] | None:
    """The champion version the run evaluated beside this one, and its AUC on the same rows."""
    compared = version.tags.get(TAG_CHAMPION_VERSION)
    if not compared:
        return None
    try:
        return compared, float(version.tags[TAG_CHAMPION_VAL_AUC])
    except (KeyError, ValueError) as exc:
        raise ValueError(
            f"model version {version.version} names champion v{compared} but has no numeric "
            f"{TAG_CHAMPION_VAL_AUC} tag"
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
    signing_key: bytes,
    alias: str = CHAMPION_ALIAS,
    max_auc_drop: float = 0.0,
) -> PromotionDecision:
    """Decide, record (tags), sign and apply (alias) the promotion of `version`.

    `signing_key` is healthrisk.provenance's: the signature tags are written before the
    alias moves, so the service never sees the alias on a version not yet signed.
    Serialised per registered model (healthrisk.promotion_lock): the champion is read and
    the alias moved by one promotion at a time, so of two runs finishing together the
    second is compared with the first, never both with the champion they replaced.
    """
    if max_auc_drop < 0:
        raise ValueError(f"max_auc_drop must be >= 0, got {max_auc_drop}")
    with promotion_lock(client, name) as lock:
        candidate = client.get_model_version(name, version)
        auc = version_auc(candidate)
        champion = current_champion(client, name, alias)
        if champion is not None and champion.version == candidate.version:
            decision = PromotionDecision(version, True, f"already {alias}", auc, champion.version, auc)
        elif champion is None:
            decision = PromotionDecision(version, True, f"no {alias} yet", auc, None, None)
        elif (compared := compared_champion(candidate)) is None or compared[0] != str(champion.version):
            # Never measured against the version serving now (it had none then, or another run
            # was promoted meanwhile): there is no like-with-like comparison to pass.
            against = f"v{compared[0]}" if compared else f"no {alias}"
            reason = (
                f"not compared with {alias} v{champion.version} on the same validation rows "
                f"(its run evaluated {against}); a new run compares them"
            )
            decision = PromotionDecision(version, False, reason, auc, champion.version, None)
        else:
            champion_auc = compared[1]
            promoted = auc >= champion_auc - max_auc_drop
            comparison = ">=" if promoted else "<"
            reason = (
                f"val AUC {auc:.4f} {comparison} {alias} v{champion.version} AUC {champion_auc:.4f} "
                f"on the same validation rows - maxAucDrop {max_auc_drop:g}"
            )
            decision = PromotionDecision(version, promoted, reason, auc, champion.version, champion_auc)
        signature: dict[str, str] = {}
        if decision.promoted:
            try:
                document = parameters_document(client.tracking_uri, name, version, timeout=_FETCH_TIMEOUT_S)
                signature = sign_promotion(signing_key, name, version, document)
            except ModelIntegrityError as exc:
                decision = dataclasses.replace(decision, promoted=False, reason=f"cannot be served: {exc}")
        if decision.promoted and champion is not None and champion.version != version:
            # Where a rollback of this version goes back to, even after a restart.
            client.set_model_version_tag(name, version, TAG_PREVIOUS_CHAMPION, str(champion.version))
        # The signature before the promotion tag: `latest` selects by that tag, so it never
        # finds a promoted version not yet signed.
        for key, value in signature.items():
            client.set_model_version_tag(name, version, key, value)
        client.set_model_version_tag(
            name, version, TAG_PROMOTION, PROMOTION_PROMOTED if decision.promoted else PROMOTION_REJECTED
        )
        client.set_model_version_tag(name, version, TAG_PROMOTION_REASON, decision.reason)
        if decision.promoted:
            lock.check()
            client.set_registered_model_alias(name, alias, version)
    return decision


def rollback(
    client: MlflowClient, name: str, alias: str, version: str, to_version: str | None, reason: str
) -> None:
    """Take `version` out of service after a failed rollout: tagged rolled back, and if it
    still holds `alias`, the alias goes back to `to_version` (or is removed). A version
    promoted since keeps the alias: it was compared with this one and won."""
    with promotion_lock(client, name) as lock:
        client.set_model_version_tag(name, version, TAG_PROMOTION, PROMOTION_ROLLED_BACK)
        client.set_model_version_tag(name, version, TAG_PROMOTION_REASON, reason)
        current = current_champion(client, name, alias)
        if current is None or current.version != version:
            return
        lock.check()
        if to_version is None:
            client.delete_registered_model_alias(name, alias)
        else:
            client.set_registered_model_alias(name, alias, to_version)


def dumps_tag(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def served_model(client: MlflowClient, name: str, version: str) -> ServedModel:
    """A registered version's model, read from its parameters document (never unpickled)."""
    parameters = parse_parameters(
        parameters_document(client.tracking_uri, name, version, timeout=_FETCH_TIMEOUT_S)
    )
    return ServedModel(parameters.mean, parameters.scale, parameters.coef, parameters.intercept)
