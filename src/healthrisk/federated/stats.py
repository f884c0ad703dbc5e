"""Federated standardisation: sites send counts and sums, never rows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FeatureStats:
    count: int
    total: np.ndarray  # Σx per feature
    total_sq: np.ndarray  # Σx² per feature

    @classmethod
    def of(cls, x: np.ndarray) -> FeatureStats:
        # einsum: Σx² without a squared copy of the site's rows
        return cls(int(x.shape[0]), x.sum(axis=0), np.einsum("ij,ij->j", x, x))

    @classmethod
    def merge(cls, parts: Iterable[FeatureStats]) -> FeatureStats:
        parts = list(parts)
        if not parts:
            raise ValueError("no site statistics to merge")
        return cls(
            sum(p.count for p in parts),
            np.sum([p.total for p in parts], axis=0),
            np.sum([p.total_sq for p in parts], axis=0),
        )

    def mean_and_scale(self) -> tuple[np.ndarray, np.ndarray]:
        """Pooled mean and population standard deviation (1 where a feature is constant)."""
        if self.count == 0:
            raise ValueError("cannot standardise from zero rows")
        mean = self.total / self.count
        variance = np.maximum(self.total_sq / self.count - mean**2, 0.0)
        scale = np.sqrt(variance)
        return mean, np.where(scale > 1e-12, scale, 1.0)
