"""A federated run's computation in one process: the ClientApp's split and local training,
the federated standardisation and FedAvg weighted by training rows — without Flower,
processes or MLflow, and with the same numbers (tests/integration/test_federated.py holds
it to a real run).

For what needs hundreds of models in seconds: the drift-detection and promotion-gate
benchmarks, and tests that need a champion.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np

from healthrisk.data.loader import SiteData
from healthrisk.federated.client_app import Split, split
from healthrisk.federated.model import Evaluation, Params, ServedModel, train_sgd
from healthrisk.federated.run_config import RunConfig
from healthrisk.federated.stats import FeatureStats
from healthrisk.schema import N_FEATURES

DEFAULTS = RunConfig(local_run_id="in-process")


def train_in_process(
    sites: Mapping[str, SiteData],
    *,
    rounds: int = DEFAULTS.num_server_rounds,
    local_epochs: int = DEFAULTS.local_epochs,
    learning_rate: float = DEFAULTS.learning_rate,
    proximal_mu: float = DEFAULTS.proximal_mu,
) -> ServedModel:
    """The model `healthrisk train` registers for these sites' rows (FedAvg, or FedProx
    when `proximal_mu` > 0)."""
    splits = {site: split(data) for site, data in sites.items()}
    mean, scale = FeatureStats.merge(FeatureStats.of(s.x_train) for s in splits.values()).mean_and_scale()
    params = Params.zeros(N_FEATURES)
    for server_round in range(1, rounds + 1):
        updates, weights = [], []
        for site, part in splits.items():
            updates.append(
                train_sgd(
                    params,
                    (part.x_train - mean) / scale,
                    part.y_train,
                    epochs=local_epochs,
                    learning_rate=learning_rate,
                    proximal_mu=proximal_mu,
                    seed=server_round * 7919 + zlib.crc32(site.encode()),
                )
            )
            weights.append(part.y_train.size)
        share = np.asarray(weights, dtype=np.float64) / sum(weights)
        params = Params(
            np.sum([w * u.coef for w, u in zip(share, updates, strict=True)], axis=0),
            float(sum(w * u.intercept for w, u in zip(share, updates, strict=True))),
        )
    return ServedModel(mean, scale, params.coef, params.intercept)


def validation(sites: Mapping[str, SiteData]) -> dict[str, Split]:
    """Each site's split, as its ClientApp makes it (the validation rows are `x_val`, `y_val`)."""
    return {site: split(data) for site, data in sites.items()}


def federated_evaluation(model: ServedModel, splits: Mapping[str, Split]) -> dict[str, Evaluation]:
    """Each site's evaluation of `model` on its validation rows, as the final evaluate reports it."""
    return {site: model.evaluate(part.x_val, part.y_val) for site, part in splits.items()}
