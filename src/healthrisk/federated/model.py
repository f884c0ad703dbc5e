"""Logistic regression in plain numpy: what a site trains, evaluates and reports.

Kept free of sklearn/pandas on purpose: it runs inside the Flower ClientApp, which is
a fresh process per message, so every import here is paid every round.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


def predict_proba(params: Params, x: np.ndarray) -> np.ndarray:
    return sigmoid(x @ params.coef + params.intercept)


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties; NaN when only one class is present."""
    y = np.asarray(y)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    ranks = np.empty(y.size, dtype=np.float64)
    # average ranks over runs of equal scores
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [y.size]))
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p >= 0.5) == (y == 1)))


@dataclass(frozen=True)
class Evaluation:
    loss: float
    auc: float
    accuracy: float
    n: int


def evaluate(params: Params, x: np.ndarray, y: np.ndarray) -> Evaluation:
    p = predict_proba(params, x)
    return Evaluation(log_loss(y, p), roc_auc(y, p), accuracy(y, p), int(y.size))


def train_sgd(
    params: Params,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int = 64,
    proximal_mu: float = 0.0,
    seed: int = 0,
) -> Params:
    """Mini-batch SGD on the L2-regularised log loss, with FedProx's proximal term."""
    rng = np.random.default_rng(seed)
    anchor_coef, anchor_intercept = params.coef.copy(), params.intercept
    coef, intercept = params.coef.copy(), params.intercept
    n = y.size
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            xb, yb = x[batch], y[batch]
            error = sigmoid(xb @ coef + intercept) - yb
            grad_coef = xb.T @ error / batch.size + L2 * coef
            grad_intercept = float(error.mean())
            if proximal_mu > 0:
                grad_coef += proximal_mu * (coef - anchor_coef)
                grad_intercept += proximal_mu * (intercept - anchor_intercept)
            coef -= learning_rate * grad_coef
            intercept -= learning_rate * grad_intercept
    return Params(coef, intercept)
