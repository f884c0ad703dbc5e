"""The operator's Prometheus metrics, counted from what the state machine decided (no cluster)."""

from __future__ import annotations

import urllib.request

from prometheus_client import CollectorRegistry

from healthrisk.contracts import (
    ANNOTATION_RETRAIN,
    METRIC_CURRENT_RUN,
    METRIC_DRIFT_SCORE,
    METRIC_LIVE_AUC,
    METRIC_PROMOTIONS,
    METRIC_RUN_AUC,
    METRIC_RUNS,
    METRIC_SKIPPED,
    OPERATOR_METRICS,
)
from healthrisk.processes import free_port
from healthrisk_operator.metrics import OperatorMetrics
from healthrisk_operator.status import TrainingStatus
from healthrisk_operator.views import VersionView

from .test_state import both, drift_world, finish_inventory, run_check
from .world import TRAINING, World


def step(world: World, metrics: OperatorMetrics) -> None:
    before = TrainingStatus.from_api(world.status)
    metrics.record(TRAINING, before, world.step())


def value(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"namespace": "ns", "training": "ft", **labels})


def test_runs_skips_promotions_and_drift_are_counted_once() -> None:
    metrics = OperatorMetrics(CollectorRegistry())
    world = drift_world()  # run 1 (create) promoted, before the metrics were attached
    run_check(world, {"hospital_01": 0.91, "hospital_02": 0.1})
    step(world, metrics)  # drift: run 2 starts
    assert value(metrics, METRIC_CURRENT_RUN) == 2
    assert value(metrics, METRIC_DRIFT_SCORE, site="hospital_01") == 0.91
    assert value(metrics, METRIC_LIVE_AUC, site="hospital_02") == 0.84
    world.make_ready()  # the SuperLink: its registrar registered the keys
    step(world, metrics)
    world.make_ready()  # the SuperNodes it let start
    step(world, metrics)
    world.version = None  # run 2 has registered nothing yet
    world.set_pod("ft-r2-submit-0", phase="Succeeded")
    step(world, metrics)
    world.version = VersionView("8", 0.86, champion_auc=0.84, promotion="rejected", promotion_reason="r")
    step(world, metrics)
    step(world, metrics)  # nothing new: nothing counted twice
    assert value(metrics, METRIC_RUNS, trigger="drift", result="Succeeded") == 1
    assert value(metrics, METRIC_PROMOTIONS, decision="rejected") == 1
    assert value(metrics, METRIC_RUN_AUC, model="new") == 0.86
    assert value(metrics, METRIC_RUN_AUC, model="champion") == 0.84
    world.advance(60)
    world.annotations[ANNOTATION_RETRAIN] = "now"
    step(world, metrics)
    finish_inventory(world, both("2024-01-01..2024-01-15"))
    step(world, metrics)
    assert value(metrics, METRIC_SKIPPED, trigger="manual") == 1


def test_metrics_are_served_over_http() -> None:
    metrics = OperatorMetrics(CollectorRegistry())
    port = free_port()
    metrics.serve(port)
    metrics.run.labels("ns", "ft").set(3)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert f'{METRIC_CURRENT_RUN}{{namespace="ns",training="ft"}} 3.0' in text
    assert all(name.startswith("healthrisk_") for name in OPERATOR_METRICS)
