"""Prometheus metrics of the service; the names are fixed by SPEC §5.

Each app gets its own CollectorRegistry so that tests can build several apps in one
process. One uvicorn worker per process (scale out with replicas), so no multiprocess mode.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from healthrisk_inference.model import LoadedModel

# SPEC §5: latency buckets start at 0.5 ms; a prediction here takes well under that.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Tenths, so that the risk-level thresholds (0.3, 0.6) fall on bucket edges.
RISK_SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))


class RiskScoreHistogram(Collector):
    """`prediction_risk_score`, observed a whole batch at a time.

    prometheus_client's Histogram costs about a microsecond per observation, i.e. 10 ms
    for a batch of 10,000; binning the batch with numpy costs a few microseconds, and a
    single score (the common case) is binned with bisect, cheaper still.
    """

    name = "prediction_risk_score"

    def __init__(self) -> None:
        self._bounds = np.array(RISK_SCORE_BUCKETS)
        self._lock = threading.Lock()
        # model_version → (per-bucket counts, the last one for +Inf; running sum)
        self._counts: dict[str, np.ndarray] = {}
        self._sums: dict[str, float] = {}

    def observe(self, model_version: str, scores: np.ndarray) -> None:
        # Left bisection: a score equal to a bound belongs to that bucket (Prometheus `le`).
        if scores.size == 1:
            index = bisect.bisect_left(RISK_SCORE_BUCKETS, float(scores[0]))
            added = None
        else:
            added = np.bincount(
                np.searchsorted(self._bounds, scores, side="left"), minlength=len(self._bounds) + 1
            )
        total = float(scores.sum())
        with self._lock:
            counts = self._counts.get(model_version)
            if counts is None:
                counts = self._counts[model_version] = np.zeros(len(RISK_SCORE_BUCKETS) + 1, np.int64)
            if added is None:
                counts[index] += 1
            else:
                counts += added
            self._sums[model_version] = self._sums.get(model_version, 0.0) + total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            self.name, "Risk scores returned, by model version.", labels=["model_version"]
        )
        with self._lock:
            snapshot = {
                version: (counts.copy(), self._sums[version]) for version, counts in self._counts.items()
            }
        for version, (counts, total) in sorted(snapshot.items()):
            cumulative = np.cumsum(counts).tolist()
            buckets = [(f"{b:g}", c) for b, c in zip(RISK_SCORE_BUCKETS, cumulative, strict=False)]
            buckets.append(("+Inf", cumulative[-1]))
            family.add_metric([version], buckets, total)
        yield family


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.predictions = Counter(
            "predictions",
            "Prediction requests, by model version, endpoint and outcome "
            "(success, invalid, too_large, unauthorized, forbidden, unavailable, overloaded, disconnected, "
            "not_found, error).",
            ["model_version", "endpoint", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "prediction_latency_seconds",
            "Time from request to response inside the service, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.risk_score = RiskScoreHistogram()
        self.registry.register(self.risk_score)
        self.model_info = Gauge(
            "model_info",
            "The model being served (value 1).",
            ["name", "version", "alias"],
            registry=self.registry,
        )
        self.model_reloads = Counter(
            "model_reloads", "Models loaded and swapped in (the first load counts).", registry=self.registry
        )
        self.model_load_failures = Counter(
            "model_load_failures",
            "Model loads that failed: refused (no valid parameters document), unsigned (not promoted by "
            "the platform's gate), bad_signature (forged, or changed since promotion), error (may go away: "
            "registry unreachable, no signing key).",
            ["reason"],
            registry=self.registry,
        )
        self.registry_reachable = Gauge(
            "model_registry_reachable",
            "1 if the last registry poll got an answer, 0 if not (the current model keeps serving).",
            registry=self.registry,
        )
        self.registry_last_success = Gauge(
            "model_registry_last_success_timestamp_seconds",
            "Unix time of the last registry poll that got an answer.",
            registry=self.registry,
        )

    def model_swapped(self, model: LoadedModel) -> None:
        self.model_info.clear()
        self.model_info.labels(name=model.name, version=model.version, alias=model.alias or "").set(1)
        self.model_reloads.inc()
