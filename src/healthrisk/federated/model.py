"""Logistic regression in plain numpy: what a site trains, evaluates and reports.

Kept free of sklearn/pandas on purpose: it runs inside the Flower ClientApp, where a
stock SuperNode starts a fresh process per message and pays every import each round.
Memory and time stay linear in rows: prediction and loss go a chunk at a time, training
a batch at a time, and standardisation is applied to the chunk or batch in hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

L2 = 1e-4


@dataclass(frozen=True)
class Params:
    coef: np.ndarray  # (n_features,)
    intercept: float

    @classmethod
    def zeros(cls, n_features: int) -> Params:
        return cls(np.zeros(n_features), 0.0)

    def to_arrays(self) -> list[np.ndarray]:
        return [self.coef.astype(np.float64), np.array([self.intercept], dtype=np.float64)]

    @classmethod
    def from_arrays(cls, arrays: list[np.ndarray]) -> Params:
        coef, intercept = arrays
        return cls(np.asarray(coef, dtype=np.float64).ravel(), float(np.asarray(intercept).ravel()[0]))


@dataclass(frozen=True)
class Standardisation:
    """The federated standardisation, applied to a batch or a chunk at a time: a site's
    standardised rows are never held in memory next to its raw ones."""

    mean: np.ndarray
    scale: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale


# Rows per vectorised step of prediction and loss: bounded temporaries at any row count.
CHUNK_ROWS = 65_536
# Mini-batches of 64 rows up to 16k rows; past that the batch grows with the rows so an
# epoch is at most 256 vectorised steps: the work stays linear in rows and Python's
# per-step cost bounded (64-row batches at a million rows were 15k steps an epoch).
MIN_BATCH = 64
MAX_STEPS_PER_EPOCH = 256


def batch_size_for(n_rows: int) -> int:
    return max(MIN_BATCH, -(-n_rows // MAX_STEPS_PER_EPOCH))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


def predict_proba(
    params: Params, x: np.ndarray, standardisation: Standardisation | None = None
) -> np.ndarray:
    out = np.empty(x.shape[0], dtype=np.float64)
    for start in range(0, x.shape[0], CHUNK_ROWS):
        chunk = x[start : start + CHUNK_ROWS]
        if standardisation is not None:
            chunk = standardisation(chunk)
        out[start : start + CHUNK_ROWS] = sigmoid(chunk @ params.coef + params.intercept)
    return out


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    total = 0.0
    for start in range(0, y.size, CHUNK_ROWS):
        pc = np.clip(p[start : start + CHUNK_ROWS], 1e-12, 1 - 1e-12)
        total += float(np.where(y[start : start + CHUNK_ROWS] == 1, np.log(pc), np.log1p(-pc)).sum())
    return -total / y.size if y.size else float("nan")


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties; NaN when only one class is present."""
    positive = np.asarray(y) == 1
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score)  # ties get their average rank below: no stable sort needed
    sorted_scores = score[order]
    # every run of equal scores gets the average of the ranks it spans
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [positive.size]))
    ranks = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[positive[order]].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p >= 0.5) == (y == 1)))


@dataclass(frozen=True)
class Evaluation:
    loss: float
    auc: float
    accuracy: float
    n: int


def evaluate(
    params: Params, x: np.ndarray, y: np.ndarray, standardisation: Standardisation | None = None
) -> Evaluation:
    p = predict_proba(params, x, standardisation)
    return Evaluation(log_loss(y, p), roc_auc(y, p), accuracy(y, p), int(y.size))


def train_sgd(
    params: Params,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    learning_rate: float,
    standardisation: Standardisation | None = None,
    batch_size: int | None = None,
    proximal_mu: float = 0.0,
    seed: int = 0,
) -> Params:
    """Mini-batch SGD on the L2-regularised log loss, with FedProx's proximal term.

    `batch_size` defaults to `batch_size_for(rows)`; each batch is gathered and
    standardised on its own, so the memory is the data's plus one batch.
    """
    rng = np.random.default_rng(seed)
    anchor_coef, anchor_intercept = params.coef.copy(), params.intercept
    coef, intercept = params.coef.copy(), params.intercept
    n = y.size
    batch_size = batch_size or batch_size_for(n)
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            xb, yb = x[batch], y[batch]
            if standardisation is not None:
                xb = standardisation(xb)
            error = sigmoid(xb @ coef + intercept) - yb
            grad_coef = xb.T @ error / batch.size + L2 * coef
            grad_intercept = float(error.mean())
            if proximal_mu > 0:
                grad_coef += proximal_mu * (coef - anchor_coef)
                grad_intercept += proximal_mu * (intercept - anchor_intercept)
            coef -= learning_rate * grad_coef
            intercept -= learning_rate * grad_intercept
    return Params(coef, intercept)


@dataclass(frozen=True)
class ServedModel:
    """A model as it is registered and served: standardisation (mean, scale) then the
    logistic regression (coef, intercept) over the standardised features, in raw units."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    @classmethod
    def from_pipeline(cls, pipeline: Any) -> ServedModel:
        """From a registered sklearn Pipeline (healthrisk.registry.build_pipeline)."""
        scaler, classifier = pipeline["scaler"], pipeline["classifier"]
        return cls(
            np.asarray(scaler.mean_, np.float64),
            np.asarray(scaler.scale_, np.float64),
            np.asarray(classifier.coef_, np.float64).ravel(),
            float(np.asarray(classifier.intercept_).ravel()[0]),
        )

    def to_arrays(self) -> list[np.ndarray]:
        return [self.mean, self.scale, *Params(self.coef, self.intercept).to_arrays()]

    @classmethod
    def from_arrays(cls, arrays: list[np.ndarray]) -> ServedModel:
        mean, scale, coef, intercept = arrays
        params = Params.from_arrays([coef, intercept])
        return cls(np.asarray(mean, np.float64), np.asarray(scale, np.float64), params.coef, params.intercept)

    @property
    def slope(self) -> np.ndarray:
        """Log-odds per raw unit of each feature."""
        return np.asarray(self.coef / self.scale)

    def standardise(self, x: np.ndarray) -> np.ndarray:
        return np.asarray((x - self.mean) / self.scale)

    def logit(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.standardise(x) @ self.coef + self.intercept)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> Evaluation:
        """Loss, AUC and accuracy on raw rows `x` with labels `y`."""
        return evaluate(Params(self.coef, self.intercept), self.standardise(x), y)
