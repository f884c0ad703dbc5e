"""Federated statistics, local training, metrics and aggregation — without a network."""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from flwr.app import MetricRecord
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from healthrisk.contracts import METRIC_VAL_AUC, METRIC_VAL_LOSS, RECORD_VAL_EXAMPLES
from healthrisk.data.generator import generate, generate_day
from healthrisk.data.loader import write_day
from healthrisk.data.window import DateWindow
from healthrisk.federated.client_app import load_split
from healthrisk.federated.control import app_dir
from healthrisk.federated.model import (
    MAX_STEPS_PER_EPOCH,
    Params,
    Standardisation,
    batch_size_for,
    evaluate,
    log_loss,
    roc_auc,
    train_sgd,
)
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


def test_batches_grow_with_rows_so_an_epoch_has_a_bounded_number_of_steps() -> None:
    assert batch_size_for(1_000) == 64
    assert batch_size_for(64 * MAX_STEPS_PER_EPOCH) == 64
    for n in (100_000, 800_000, 10_000_000):
        assert -(-n // batch_size_for(n)) <= MAX_STEPS_PER_EPOCH


def test_large_batches_still_reach_the_sklearn_optimum() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200_000, 11))
    true = rng.normal(size=11) * 0.5
    y = (rng.random(x.shape[0]) < 1 / (1 + np.exp(-(x @ true - 1.0)))).astype(np.int8)
    trained = train_sgd(Params.zeros(11), x, y, epochs=2, learning_rate=0.1, seed=0)
    reference = LogisticRegression(C=1e4, max_iter=1000).fit(x, y)
    optimum = log_loss(y, reference.predict_proba(x)[:, 1])
    assert evaluate(trained, x, y).loss == pytest.approx(optimum, abs=0.002)


def test_standardising_per_batch_equals_training_on_standardised_rows() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(50, 20, size=(3000, 11))
    y = (rng.random(3000) < 0.3).astype(np.int8)
    scaling = Standardisation(x.mean(axis=0), x.std(axis=0))
    copy = (x - scaling.mean) / scaling.scale
    start = Params.zeros(11)
    per_batch = train_sgd(start, x, y, epochs=2, learning_rate=0.1, standardisation=scaling, seed=3)
    on_copy = train_sgd(start, copy, y, epochs=2, learning_rate=0.1, seed=3)
    np.testing.assert_allclose(per_batch.coef, on_copy.coef, rtol=1e-12)
    assert evaluate(per_batch, x, y, scaling) == evaluate(on_copy, copy, y)


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


def test_a_site_split_is_loaded_once_per_window_and_again_when_a_file_changes(tmp_path: Path) -> None:
    window = DateWindow.parse("2024-01-01..2024-01-03")
    generate(tmp_path, n_sites=1, window=window)
    first = load_split(tmp_path, "hospital_01", window)
    assert load_split(tmp_path, "hospital_01", window) is first  # the next message of a resident process
    day = tmp_path / "hospital_01" / "2024-01-02.parquet"
    write_day(day, generate_day(7, 0, dt.date(2024, 1, 2)))  # the day's file replaced
    second = load_split(tmp_path, "hospital_01", window)
    assert second is not first
    assert not np.array_equal(second.x_train, first.x_train)
    shorter = load_split(tmp_path, "hospital_01", DateWindow.parse("2024-01-01..2024-01-02"))
    assert shorter.y_train.size + shorter.y_val.size < second.y_train.size + second.y_val.size
