"""The pieces of the service that need no process: the numpy path, checks, metrics, settings."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.pipeline import Pipeline

from healthrisk.contracts import (
    CHAMPION_ALIAS,
    ENV_MODEL_VERSION,
    ENV_TRACKING_URI,
    LATEST_VERSION,
    MLFLOW_PORT,
)
from healthrisk.model_parameters import ModelIntegrityError, ModelParameters
from healthrisk.registry import build_pipeline, served_parameters
from healthrisk.schema import EXAMPLE_RECORD, FEATURE_NAMES, FEATURES, N_FEATURES
from healthrisk_inference.metrics import RiskScoreHistogram
from healthrisk_inference.model import LoadedModel, Provenance, risk_levels
from healthrisk_inference.schemas import PatientRecord, V2InferRequest
from healthrisk_inference.settings import Settings
from healthrisk_inference.v2 import _Invalid, _matrix

LOW = np.array([f.minimum for f in FEATURES])
HIGH = np.array([f.maximum for f in FEATURES])


def random_pipeline(seed: int) -> Pipeline:
    rng = np.random.default_rng(seed)
    mean = rng.uniform(LOW, HIGH)
    scale = rng.uniform(0.1, 1.0, N_FEATURES) * (HIGH - LOW)
    return build_pipeline(mean, scale, rng.normal(0, 2, N_FEATURES), float(rng.normal()))


def served(parameters: ModelParameters) -> LoadedModel:
    provenance = Provenance(verified=False, parameters_sha256="")
    return LoadedModel(name="m", version="1", source="test", parameters=parameters, provenance=provenance)


@pytest.mark.parametrize("seed", range(3))
def test_the_numpy_path_equals_the_sklearn_pipeline(seed: int) -> None:
    import pandas as pd

    pipeline = random_pipeline(seed)
    model = served(served_parameters(pipeline))
    rows = np.random.default_rng(seed + 100).uniform(LOW, HIGH, (500, N_FEATURES))
    expected = pipeline.predict_proba(pd.DataFrame(rows, columns=list(FEATURE_NAMES)))[:, 1]
    assert np.max(np.abs(model.scores(rows) - expected)) < 1e-12

    contributions = model.contributions(rows)
    logits = model.parameters.intercept + contributions.sum(axis=1)
    assert np.allclose(logits, pipeline.decision_function(pd.DataFrame(rows, columns=list(FEATURE_NAMES))))
    explanation = model.explanation(contributions[0])
    assert list(explanation["contributions"]) == list(FEATURE_NAMES)
    assert explanation["logit"] == pytest.approx(logits[0], abs=1e-12)


def test_extreme_logits_give_0_and_1_without_warnings() -> None:
    parameters = ModelParameters(np.zeros(N_FEATURES), np.ones(N_FEATURES), np.full(N_FEATURES, 1e6), 0.0)
    with np.errstate(all="raise"):
        scores = served(parameters).scores(np.array([HIGH, -HIGH]))
    assert scores.tolist() == pytest.approx([1.0, 0.0])


def test_risk_levels_and_their_thresholds() -> None:
    scores = np.array([0.0, 0.2999, 0.3, 0.5999, 0.6, 1.0])
    assert risk_levels(scores) == ["low", "low", "moderate", "moderate", "high", "high"]


def test_pipelines_the_service_cannot_serve_exactly_are_refused() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import MinMaxScaler

    good = random_pipeline(0)
    with pytest.raises(ModelIntegrityError, match="StandardScaler"):
        served_parameters(Pipeline([("scaler", MinMaxScaler()), ("classifier", good.steps[1][1])]))
    multiclass = LogisticRegression()
    multiclass.classes_ = np.array([0, 1, 2])
    multiclass.coef_ = np.zeros((3, N_FEATURES))
    with pytest.raises(ModelIntegrityError, match="binary"):
        served_parameters(Pipeline([("scaler", good.steps[0][1]), ("classifier", multiclass)]))
    renamed = random_pipeline(1)
    renamed.steps[0][1].feature_names_in_ = np.array([*FEATURE_NAMES[:-1], "rh"], dtype=object)
    with pytest.raises(ModelIntegrityError, match="feature schema"):
        served_parameters(renamed)
    with pytest.raises(ModelIntegrityError, match="non-positive"):
        ModelParameters(np.zeros(N_FEATURES), np.zeros(N_FEATURES), np.ones(N_FEATURES), 0.0)
    with pytest.raises(ModelIntegrityError, match="non-finite"):
        ModelParameters(np.full(N_FEATURES, np.nan), np.ones(N_FEATURES), np.ones(N_FEATURES), 0.0)


def test_record_limits_are_the_feature_schema() -> None:
    properties = PatientRecord.model_json_schema()["properties"]
    assert list(properties) == list(FEATURE_NAMES)
    for feature in FEATURES:
        assert (properties[feature.name]["minimum"], properties[feature.name]["maximum"]) == (
            feature.minimum,
            feature.maximum,
        )
    assert PatientRecord.model_validate(EXAMPLE_RECORD).row() == [EXAMPLE_RECORD[n] for n in FEATURE_NAMES]


def test_risk_score_histogram_counts_a_batch_into_le_buckets() -> None:
    histogram = RiskScoreHistogram()
    histogram.observe("3", np.array([0.05, 0.1, 0.3, 0.35, 1.0]))
    histogram.observe("3", np.array([0.95]))
    (family,) = histogram.collect()
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples["prediction_risk_score_bucket", "0.1"] == 2
    assert samples["prediction_risk_score_bucket", "0.3"] == 3
    assert samples["prediction_risk_score_bucket", "0.4"] == 4
    assert samples["prediction_risk_score_bucket", "0.9"] == 4
    assert samples["prediction_risk_score_bucket", "1"] == 6
    assert samples["prediction_risk_score_bucket", "+Inf"] == 6
    assert samples["prediction_risk_score_count", None] == 6
    assert samples["prediction_risk_score_sum", None] == pytest.approx(2.75)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    tracking_uri = f"http://mlflow:{MLFLOW_PORT}"
    monkeypatch.setenv(ENV_TRACKING_URI, tracking_uri)
    monkeypatch.setenv(ENV_MODEL_VERSION, "7")
    monkeypatch.setenv("MAX_BATCH", "50")
    settings = Settings()
    assert (settings.mlflow_tracking_uri, settings.model_version, settings.max_batch) == (
        tracking_uri,
        "7",
        50,
    )
    assert not settings.polls_registry
    assert Settings(model_version=CHAMPION_ALIAS).polls_registry
    assert Settings(model_version=LATEST_VERSION).polls_registry
    assert not Settings(model_version=LATEST_VERSION, model_uri="/models/m").polls_registry
    with pytest.raises(ValidationError, match=ENV_MODEL_VERSION):
        Settings(model_version="champion; rm")


def v2_request(*tensors: dict[str, object]) -> V2InferRequest:
    return V2InferRequest.model_validate({"inputs": list(tensors)})


def test_v2_inputs_as_one_matrix_or_one_tensor_per_feature() -> None:
    row = [EXAMPLE_RECORD[n] for n in FEATURE_NAMES]
    nested = _matrix(v2_request({"name": "x", "shape": [2, 11], "datatype": "FP64", "data": [row, row]}), 10)
    flat = _matrix(v2_request({"name": "x", "shape": [2, 11], "datatype": "FP32", "data": row + row}), 10)
    per_feature = _matrix(
        v2_request(
            *(
                {"name": n, "shape": [2, 1], "datatype": "FP64", "data": [v, v]}
                for n, v in zip(FEATURE_NAMES, row, strict=True)
            )
        ),
        10,
    )
    assert nested.tolist() == flat.tolist() == per_feature.tolist() == [row, row]


def test_v2_errors_name_the_tensor_and_the_feature() -> None:
    row = [EXAMPLE_RECORD[n] for n in FEATURE_NAMES]
    with pytest.raises(_Invalid) as missing:
        _matrix(v2_request({"name": "heart_rate", "shape": [1], "datatype": "FP64", "data": [70]}), 10)
    assert {e["msg"] for e in missing.value.errors} >= {"missing input tensor 'humidity'"}
    with pytest.raises(_Invalid) as out_of_range:
        _matrix(v2_request({"name": "x", "shape": [1, 11], "datatype": "FP64", "data": [*row[:-1], 101]}), 10)
    assert out_of_range.value.errors[0]["loc"][-1] == "humidity"
    with pytest.raises(_Invalid) as not_numbers:
        _matrix(
            v2_request({"name": "x", "shape": [1, 11], "datatype": "FP64", "data": [*row[:-1], "50"]}), 10
        )
    assert not_numbers.value.errors[0]["type"] == "finite_number"
