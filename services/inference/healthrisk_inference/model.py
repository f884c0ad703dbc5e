"""The loaded model: plain numpy arrays, so the request path never touches pandas or sklearn.

The arithmetic lives with the parameters (healthrisk.model_parameters), which registration
checks against the sklearn pipeline; this module adds what serving knows about a version
(name, version, alias, where it came from, whether its provenance was verified) and the
risk levels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from healthrisk.model_parameters import ModelParameters
from healthrisk.schema import FEATURE_NAMES

RiskLevel = Literal["low", "moderate", "high"]

# The one place the risk levels are defined: low < 0.3 <= moderate < 0.6 <= high.
MODERATE_FROM = 0.3
HIGH_FROM = 0.6
RISK_LEVELS: tuple[RiskLevel, RiskLevel, RiskLevel] = ("low", "moderate", "high")
_LEVEL_EDGES = np.array([MODERATE_FROM, HIGH_FROM])


def risk_levels(scores: np.ndarray) -> list[RiskLevel]:
    indices = np.searchsorted(_LEVEL_EDGES, scores, side="right")
    return [RISK_LEVELS[i] for i in indices.tolist()]


@dataclass(frozen=True)
class Provenance:
    """What the service checked about where a version came from (healthrisk.provenance)."""

    verified: bool  # False only when MODEL_PROVENANCE=off
    parameters_sha256: str
    key_id: str | None = None


@dataclass(frozen=True)
class LoadedModel:
    """An immutable, fully loaded model; the service swaps one reference to it atomically."""

    name: str
    version: str
    source: str
    parameters: ModelParameters
    provenance: Provenance
    alias: str | None = None
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)

    def scores(self, x: np.ndarray) -> np.ndarray:
        """x is (n, N_FEATURES) in FEATURE_NAMES order."""
        return self.parameters.scores(x)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        return self.parameters.contributions(x)

    def explanation(self, contributions: np.ndarray) -> dict[str, Any]:
        """One row's explanation, computed from its contributions so the parts add up exactly."""
        intercept = self.parameters.intercept
        return {
            "intercept": intercept,
            "logit": intercept + float(contributions.sum()),
            "contributions": dict(zip(FEATURE_NAMES, contributions.tolist(), strict=True)),
        }
