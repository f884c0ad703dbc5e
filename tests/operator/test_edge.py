"""The operator's edges without a cluster: status patches, views, kopf settings, and the
MLflow side against a real `mlflow server`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import kopf
import numpy as np
import pytest

from healthrisk.contracts import (
    ANNOTATION_MODEL_VERSION,
    ANNOTATION_PREVIOUS_MODEL_VERSION,
    ANNOTATION_RETRAIN,
    ENV_MODEL_VERSION,
    FINALIZER,
    METRIC_VAL_AUC,
    PROMOTION_ROLLED_BACK,
    TAG_CHAMPION_VAL_AUC,
    TAG_CHAMPION_VERSION,
    TAG_PREVIOUS_CHAMPION,
    TAG_PROMOTION,
    TAG_RUN_NUMBER,
    TAG_TRAINING,
    TAG_VAL_AUC,
    TRAINING_EXPERIMENT,
)
from healthrisk.schema import FEATURE_NAMES
from healthrisk_operator import tracking
from healthrisk_operator.config import OperatorConfig
from healthrisk_operator.handlers import QuietWakeups, apply_settings
from healthrisk_operator.reconcile import merge_patch
from healthrisk_operator.views import deployment_view, last_json_line


def test_merge_patch_deletes_what_disappeared_and_replaces_lists() -> None:
    old = {"phase": "Training", "rollout": {"version": "3", "startedAt": "t"}, "history": [1], "round": 2}
    new = {"phase": "Succeeded", "rollout": {"version": "3"}, "history": [2, 1], "round": 2}
    assert merge_patch(old, new) == {"phase": "Succeeded", "rollout": {"startedAt": None}, "history": [2, 1]}
    assert merge_patch(new, new) == {}
    assert merge_patch({"drift": {"x": 1}}, {}) == {"drift": None}


def test_deployment_view_follows_rollout_status() -> None:
    deployment: dict[str, Any] = {
        "metadata": {"generation": 4, "annotations": {ANNOTATION_PREVIOUS_MODEL_VERSION: "5"}},
        "spec": {
            "replicas": 2,
            "template": {
                "metadata": {"annotations": {ANNOTATION_MODEL_VERSION: "7"}},
                "spec": {"containers": [{"name": "api", "env": [{"name": ENV_MODEL_VERSION, "value": "7"}]}]},
            },
        },
        "status": {"observedGeneration": 4, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2},
    }
    view = deployment_view("inference", deployment, None)
    assert (view.version, view.previous, view.container) == ("7", "5", "api")
    assert view.ready is False  # an old pod is still there
    deployment["status"]["replicas"] = 2
    assert deployment_view("inference", deployment, None).ready is True
    scaled_down = {
        **deployment,
        "spec": {**deployment["spec"], "replicas": 0},
        "status": {"observedGeneration": 4},
    }
    assert deployment_view("inference", scaled_down, None).ready is False, "nothing answers"
    deployment["status"]["conditions"] = [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]
    assert "progress deadline" in str(deployment_view("inference", deployment, None).failure)
    assert deployment_view("inference", deployment, "missing").error is not None
    assert deployment_view("inference", None, None).found is False
    unpinned = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "a", "env": [{"name": ENV_MODEL_VERSION, "value": "champion"}]}]
                }
            }
        }
    }
    assert deployment_view("inference", unpinned, None).served_version == "champion"


def test_last_json_line_of_a_drift_log() -> None:
    assert last_json_line('progress...\n{"drift_share": 0.2, "detected": false}\n') == {
        "drift_share": 0.2,
        "detected": False,
    }
    assert last_json_line('checking\n[{"site": "hospital_01", "drift_share": 0.18}]\n') == {
        "site": "hospital_01",
        "drift_share": 0.18,
    }
    assert last_json_line('[{"site": "a"}, {"site": "b"}]') is None, "one pod, one site"
    assert last_json_line("no summary here") is None
    assert last_json_line("{broken") is None


def test_watch_timeouts_and_the_legacy_finalizer_are_set() -> None:
    settings = kopf.OperatorSettings()
    apply_settings(settings, OperatorConfig(watch_server_timeout_s=120, watch_client_timeout_s=150))
    assert settings.watching.server_timeout == 120
    assert settings.watching.client_timeout == 150
    assert settings.watching.connect_timeout == 30
    # Named so that kopf removes it from objects an older operator put it on.
    assert settings.persistence.finalizer == FINALIZER
    assert settings.scanning.disabled  # no cluster-wide namespace/CRD permissions needed


def test_quiet_wakeups_hides_only_wake_handler_successes() -> None:
    quiet = QuietWakeups()

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, message, None, None)

    assert not quiet.filter(record("Handler 'pod_changed' succeeded."))
    assert quiet.filter(record("Handler 'pod_changed' failed with an exception. Will ignore."))
    assert quiet.filter(record("Handler 'reconcile' succeeded."))


@pytest.mark.integration
def test_progress_version_and_promotion_against_real_mlflow(mlflow_uri: str, tmp_path: Path) -> None:
    """The operator's MLflow edge on a real server: found by tags, promotion records the
    champion it replaced and signs what it promotes, rollback restores it."""
    from mlflow import MlflowClient

    from healthrisk.model_parameters import PARAMETERS_ARTIFACT, ModelParameters
    from healthrisk.provenance import verify_promotion
    from healthrisk.registry_rest import parameters_document

    client = MlflowClient(mlflow_uri)
    name = "operator-edge-model"
    ref = "ns/edge/uid-9"
    client.create_registered_model(name)
    experiment = client.get_experiment_by_name(TRAINING_EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(TRAINING_EXPERIMENT)

    key_file = tmp_path / "model-signing.key"

    def training_run(
        run: int, auc: float, *, servable: bool = True, champion: tuple[str, float] | None = None
    ) -> str:
        """A run's version as the ServerApp tags it: with the champion it was compared with."""
        tags = {TAG_TRAINING: ref, TAG_RUN_NUMBER: str(run)}
        run_id = client.create_run(experiment_id, tags=tags).info.run_id
        for step in (1, 2):
            client.log_metric(run_id, "round", step, step=step)
            client.log_metric(run_id, METRIC_VAL_AUC, auc - 0.1 / step, step=step)
        # A logged model, as log_model makes it: its files are what get-artifact serves.
        model_id = client.create_logged_model(experiment_id, source_run_id=run_id).model_id
        if servable:
            n = len(FEATURE_NAMES)
            document = ModelParameters(np.zeros(n), np.ones(n), np.full(n, auc), 0.0).document()
            files = tmp_path / f"run-{run}"
            (files / PARAMETERS_ARTIFACT).parent.mkdir(parents=True)
            (files / PARAMETERS_ARTIFACT).write_bytes(document)
            client.log_model_artifacts(model_id, str(files))
        compared = (
            {TAG_CHAMPION_VERSION: champion[0], TAG_CHAMPION_VAL_AUC: str(champion[1])} if champion else {}
        )
        version = client.create_model_version(
            name,
            f"models:/{model_id}",
            run_id=run_id,
            tags={**tags, TAG_VAL_AUC: str(auc), **compared},
            model_id=model_id,
        )
        return str(version.version)

    assert tracking.run_progress(mlflow_uri, ref, 1) is None
    first = training_run(1, 0.80)
    progress = tracking.run_progress(mlflow_uri, ref, 1)
    assert progress is not None and progress.round == 2 and progress.auc == pytest.approx(0.75)
    found = tracking.find_version(mlflow_uri, name, ref, 1)
    assert found is not None and (found.version, found.auc, found.promotion) == (first, 0.8, None)
    assert tracking.find_version(mlflow_uri, name, ref, 2) is None

    assert tracking.promote(mlflow_uri, name, first, "champion", 0.0, key_file).promoted
    signed = client.get_model_version(name, first).tags
    key = key_file.read_bytes()  # created by the first promotion
    verify_promotion(key, name, first, parameters_document(mlflow_uri, name, first, timeout=10), signed)
    second = training_run(2, 0.85, champion=(first, 0.84))
    assert tracking.promote(mlflow_uri, name, second, "champion", 0.0, key_file).promoted
    promoted = tracking.find_version(mlflow_uri, name, ref, 2)
    assert promoted is not None and promoted.previous_champion == first and promoted.champion_auc == 0.84
    assert client.get_model_version(name, second).tags[TAG_PREVIOUS_CHAMPION] == first

    tracking.rollback(mlflow_uri, name, "champion", second, first, "Deployment not ready")
    assert client.get_model_version_by_alias(name, "champion").version == first
    assert client.get_model_version(name, second).tags[TAG_PROMOTION] == PROMOTION_ROLLED_BACK
    # A version that no longer holds the alias is tagged, and the champion is left alone.
    tracking.rollback(mlflow_uri, name, "champion", second, None, "rolled back again")
    assert client.get_model_version_by_alias(name, "champion").version == first
    third = training_run(3, 0.5, champion=(first, 0.84))
    assert not tracking.promote(mlflow_uri, name, third, "champion", 0.0, key_file).promoted
    # Better, but nothing serving could read: not promoted, and said why.
    fourth = training_run(4, 0.9, servable=False, champion=(first, 0.84))
    refused = tracking.promote(mlflow_uri, name, fourth, "champion", 0.0, key_file)
    assert not refused.promoted and "cannot be served" in refused.reason
    assert client.get_model_version_by_alias(name, "champion").version == first


def test_own_status_writes_do_not_wake_the_loop() -> None:
    from healthrisk_operator.handlers import Loop, Loops

    loops = Loops()
    loop = loops.running[("ns", "ft")] = Loop("uid-1")
    loops.wake_on_change("ns", "ft", (1, ()))
    assert loop.wakeup.is_set()
    loop.wakeup.clear()
    loops.wake_on_change("ns", "ft", (1, ()))  # a status-only change: same generation
    assert not loop.wakeup.is_set()
    loops.wake_on_change("ns", "ft", (1, ((ANNOTATION_RETRAIN, "now"),)))
    assert loop.wakeup.is_set()


class _Reconciler:
    """Stands in for the Kubernetes API here: the loop's own lifecycle needs no cluster
    (tests/operator/test_cluster.py deletes trainings under a real operator)."""

    def __init__(self, exists: bool) -> None:
        self.exists = exists
        self.calls = 0

    def reconcile(self, namespace: str, name: str) -> object | None:
        self.calls += 1
        return object() if self.exists else None


def _memo(reconciler: _Reconciler) -> Any:
    from types import SimpleNamespace

    from healthrisk_operator.handlers import Loops

    return SimpleNamespace(
        reconciler=reconciler, config=OperatorConfig(reconcile_interval_s=0.01), loops=Loops()
    )


def test_a_loop_ends_by_itself_once_its_object_is_gone() -> None:
    import asyncio

    memo = _memo(_Reconciler(exists=False))

    async def scenario() -> None:
        memo.loops.ensure("ns", "ft", "uid-1", memo)
        task = memo.loops.running[("ns", "ft")].task
        await asyncio.wait_for(task, timeout=5)
        assert ("ns", "ft") not in memo.loops.running

    asyncio.run(scenario())
    assert memo.reconciler.calls == 1


def test_one_loop_per_incarnation_stopped_by_its_own_deletion() -> None:
    import asyncio

    memo = _memo(_Reconciler(exists=True))
    loops = memo.loops

    async def scenario() -> None:
        loops.ensure("ns", "ft", "uid-1", memo)
        first = loops.running[("ns", "ft")]
        loops.ensure("ns", "ft", "uid-1", memo)  # any later event of the same object
        assert loops.running[("ns", "ft")] is first
        await asyncio.sleep(0.05)
        assert memo.reconciler.calls >= 2, "it reconciles on the interval"

        loops.ensure("ns", "ft", "uid-2", memo)  # deleted and created again under that name
        second = loops.running[("ns", "ft")]
        assert second is not first
        await asyncio.sleep(0.01)
        assert first.task is not None and first.task.cancelled()
        loops.stop("ns", "ft", "uid-1")  # the old incarnation's DELETED event, seen late
        assert second.alive

        loops.stop("ns", "ft", "uid-2")
        await asyncio.sleep(0.01)
        assert not second.alive and ("ns", "ft") not in loops.running
        loops.ensure("ns", "other", "uid-3", memo)
        await loops.stop_all()
        assert not loops.running

    asyncio.run(scenario())


def test_registry_errors_read_the_same_every_time() -> None:
    from healthrisk_operator.reconcile import _stable_message

    def outage() -> Exception:
        return ConnectionError(f"Failed to establish <urllib3.HTTPConnection object at {hex(id(object()))}>")

    assert _stable_message(outage()) == _stable_message(outage())
    assert _stable_message(outage()).startswith("ConnectionError: Failed to establish")
