"""Federated statistics, local training, metrics and aggregation — without a network."""

from __future__ import annotations

import tomllib
from dataclasses import fields

import numpy as np
import pytest
from flwr.app import MetricRecord
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from healthrisk.contracts import METRIC_VAL_AUC, METRIC_VAL_LOSS, RECORD_VAL_EXAMPLES
from healthrisk.federated.control import app_dir
from healthrisk.federated.model import Params, evaluate, log_loss, roc_auc, train_sgd
from healthrisk.federated.run_config import RunConfig
from healthrisk.federated.server_app import weighted
from healthrisk.federated.stats import FeatureStats


def test_federated_statistics_equal_pooled_statistics() -> None:
    rng = np.random.default_rng(0)
    sites = [
        rng.normal(loc, scale, size=(n, 11)) for loc, scale, n in [(0, 1, 300), (5, 3, 120), (-2, 0.5, 77)]
    ]
    merged = FeatureStats.merge(FeatureStats.of(x) for x in sites)
    pooled = np.vstack(sites)
    mean, scale = merged.mean_and_scale()
    assert merged.count == 497
    np.testing.assert_allclose(mean, pooled.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(scale, pooled.std(axis=0), rtol=1e-9)


def test_constant_feature_does_not_divide_by_zero() -> None:
    x = np.ones((10, 11))
    _, scale = FeatureStats.of(x).mean_and_scale()
    assert (scale == 1.0).all()
    with pytest.raises(ValueError):
        FeatureStats.merge([])


def test_auc_matches_sklearn_including_ties() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    score = np.round(rng.random(500) + 0.3 * y, 1)  # many ties
    assert roc_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert np.isnan(roc_auc(np.ones(5), np.arange(5.0)))


def test_local_sgd_approaches_the_sklearn_optimum() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, 11))
    true = rng.normal(size=11)
    y = (rng.random(2000) < 1 / (1 + np.exp(-(x @ true - 0.5)))).astype(float)
    start = Params.zeros(11)
    trained = train_sgd(start, x, y, epochs=20, learning_rate=0.1, seed=0)
    reference = LogisticRegression(C=1e4, max_iter=1000).fit(x, y)
    ref_loss = log_loss(y, reference.predict_proba(x)[:, 1])
    assert evaluate(trained, x, y).loss == pytest.approx(ref_loss, abs=0.01)
    assert evaluate(trained, x, y).loss < evaluate(start, x, y).loss


def test_fedprox_term_pulls_towards_the_global_model() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 11))
    y = (x[:, 0] > 0).astype(float)
    anchor = Params(np.zeros(11), 0.0)
    free = train_sgd(anchor, x, y, epochs=5, learning_rate=0.1, seed=1)
    held = train_sgd(anchor, x, y, epochs=5, learning_rate=0.1, proximal_mu=1.0, seed=1)
    assert np.linalg.norm(held.coef) < np.linalg.norm(free.coef)


def test_metrics_are_weighted_by_examples_and_skip_undefined_auc() -> None:
    replies = [
        MetricRecord({RECORD_VAL_EXAMPLES: 100, METRIC_VAL_AUC: 0.9, METRIC_VAL_LOSS: 0.3}),
        MetricRecord({RECORD_VAL_EXAMPLES: 300, METRIC_VAL_AUC: 0.7, METRIC_VAL_LOSS: 0.5}),
        MetricRecord({RECORD_VAL_EXAMPLES: 50, METRIC_VAL_AUC: float("nan"), METRIC_VAL_LOSS: 0.4}),
    ]
    out = weighted(replies, [METRIC_VAL_AUC, METRIC_VAL_LOSS], RECORD_VAL_EXAMPLES)
    assert out[METRIC_VAL_AUC] == pytest.approx((0.9 * 100 + 0.7 * 300) / 400)
    assert out[METRIC_VAL_LOSS] == pytest.approx((0.3 * 100 + 0.5 * 300 + 0.4 * 50) / 450)


def test_flower_app_defaults_agree_with_run_config() -> None:
    manifest = tomllib.loads((app_dir() / "pyproject.toml").read_text())
    defaults = manifest["tool"]["flwr"]["app"]["config"]
    assert set(defaults) == {f.name.replace("_", "-") for f in fields(RunConfig)}
    config = RunConfig.from_flower({**defaults, "local-run-id": "x"})
    for f in fields(RunConfig):
        if f.name != "local_run_id":
            assert getattr(config, f.name) == f.default, f.name


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"num-server-rounds": 0}, "num-server-rounds"),
        ({"strategy": "FedSGD"}, "strategy must be one of"),
        ({"proximal-mu": -1.0}, "proximal-mu"),
        ({"colour": "blue"}, "unknown run config key 'colour'"),
        ({"local-run-id": ""}, "traceable"),
    ],
)
def test_run_config_refuses_bad_values(override: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RunConfig.from_flower({"local-run-id": "x", **override})
