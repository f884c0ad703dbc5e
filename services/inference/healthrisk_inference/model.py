"""The loaded model: plain numpy arrays, so the request path never touches pandas or sklearn.

A `StandardScaler → LogisticRegression` pipeline is `sigmoid(((x - mean) / scale) · coef + b)`.
Folding the scaler into the weights once at load time leaves one dot product per request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from healthrisk.schema import FEATURE_NAMES, N_FEATURES

RiskLevel = Literal["low", "moderate", "high"]

# The one place the risk levels are defined: low < 0.3 <= moderate < 0.6 <= high.
MODERATE_FROM = 0.3
HIGH_FROM = 0.6
RISK_LEVELS: tuple[RiskLevel, RiskLevel, RiskLevel] = ("low", "moderate", "high")
_LEVEL_EDGES = np.array([MODERATE_FROM, HIGH_FROM])

# exp() overflows float64 past ~709; a logit beyond ±500 is a certainty either way.
_LOGIT_CLIP = 500.0


class ModelIntegrityError(ValueError):
    """The artifact is not a model this service can serve correctly; never retried."""


def risk_levels(scores: np.ndarray) -> list[RiskLevel]:
    indices = np.searchsorted(_LEVEL_EDGES, scores, side="right")
    return [RISK_LEVELS[i] for i in indices.tolist()]


@dataclass(frozen=True)
class ModelParameters:
    """What the loader extracts from the pipeline, checked for shape and finiteness."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def __post_init__(self) -> None:
        for name in ("mean", "scale", "coef"):
            array = getattr(self, name)
            if array.shape != (N_FEATURES,):
                raise ModelIntegrityError(f"{name} has shape {array.shape}, expected ({N_FEATURES},)")
            if not np.all(np.isfinite(array)):
                raise ModelIntegrityError(f"{name} has non-finite values")
        if not np.all(self.scale > 0):
            raise ModelIntegrityError("scale has non-positive values")
        if not np.isfinite(self.intercept):
            raise ModelIntegrityError("intercept is not finite")

    def as_json(self) -> dict[str, Any]:
        return {
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelParameters:
        return cls(
            mean=np.asarray(data["mean"], dtype=np.float64),
            scale=np.asarray(data["scale"], dtype=np.float64),
            coef=np.asarray(data["coef"], dtype=np.float64),
            intercept=float(data["intercept"]),
        )


@dataclass(frozen=True)
class LoadedModel:
    """An immutable, fully loaded model; the service swaps one reference to it atomically."""

    name: str
    version: str
    source: str
    parameters: ModelParameters
    alias: str | None = None
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)
    # Derived once: logit = x @ weights + bias.
    weights: np.ndarray = field(init=False, repr=False)
    bias: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        p = self.parameters
        weights = p.coef / p.scale
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "bias", float(p.intercept - np.dot(weights, p.mean)))

    def logits(self, x: np.ndarray) -> np.ndarray:
        """x is (n, N_FEATURES) in FEATURE_NAMES order."""
        return np.asarray(x @ self.weights + self.bias)

    def scores(self, x: np.ndarray) -> np.ndarray:
        logits = np.clip(self.logits(x), -_LOGIT_CLIP, _LOGIT_CLIP)
        return np.asarray(1.0 / (1.0 + np.exp(-logits)))

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Per-feature terms coef_i * standardized x_i; with the intercept they sum to the logit."""
        p = self.parameters
        return np.asarray((x - p.mean) / p.scale * p.coef)

    def explanation(self, contributions: np.ndarray) -> dict[str, Any]:
        """One row's explanation, computed from its contributions so the parts add up exactly."""
        return {
            "intercept": self.parameters.intercept,
            "logit": self.parameters.intercept + float(contributions.sum()),
            "contributions": dict(zip(FEATURE_NAMES, contributions.tolist(), strict=True)),
        }
