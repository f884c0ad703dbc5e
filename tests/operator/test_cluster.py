# mypy: disable-error-code="union-attr,index"
# (the kubernetes client types every field of every object as Optional)
"""The operator against a real Kubernetes API server (the project's harness or KUBECONFIG).

Real here: the API server (CRD schema validation, defaulting, status subresource,
printer columns), the garbage collector (owner references), the Deployment controller
and kubelet (inference rollout and rollback, ImagePullBackOff-style start failures),
a real `mlflow server`, and `healthrisk operator run` as a subprocess.

Faked, and why: these tests are about the operator's decisions (which pod, status,
Event, promotion or rollback follows which observation), so they set the observations
themselves, at the moment each test needs them: the SuperLink, SuperNode, submit and
drift pods of most tests are given a scheduler name nobody serves and the test writes
their pod status as a kubelet would (`KubeAPI.fake_pod`), and writes to MLflow what the
ServerApp would (`FakeServerApp`). Real Flower pods could not be stopped at round 1, made
to fail their submit twice, or made to report a chosen drift score; the end-to-end suite
(tests/e2e) runs the same operator with real training and drift pods from the images.
Every test below states which pods it fakes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from kubernetes import client as k8s_client

from healthrisk.contracts import (
    ANNOTATION_MODEL_VERSION,
    ANNOTATION_RETRAIN,
    ENV_MODEL_VERSION,
    GROUP,
    LABEL_MANAGED_BY,
    LABEL_ROLE,
    LABEL_RUN,
    LABEL_SITE,
    LABEL_TRAINING,
    MANAGER,
    METRIC_ROUND,
    METRIC_VAL_ACCURACY,
    METRIC_VAL_AUC,
    METRIC_VAL_LOSS,
    OPERATOR_HEALTH_PORT,
    PROMOTION_REJECTED,
    PROMOTION_ROLLED_BACK,
    ROLE_SUPERLINK,
    SITE_PUBLIC_KEY_FILE,
    TAG_CHAMPION_VAL_AUC,
    TAG_CHAMPION_VERSION,
    TAG_PROMOTION,
    TAG_RUN_NUMBER,
    TAG_TRAINING,
    TAG_VAL_AUC,
    TLS_CERT_FILE,
    TRAINING_EXPERIMENT,
    TRIGGER_SPEC_CHANGE,
)
from healthrisk.federated.pki import pem_public_key
from healthrisk_operator import builders
from healthrisk_operator.spec import parse_spec
from tests.kit.names import RunPods, drift_pods, run_pods
from tests.kit.tools import REPO
from tests.kit.trainings import FAKE_SCHEDULER, KubeAPI, OperatorProcess, run_config_of
from tests.kit.wait import wait_for

pytestmark = pytest.mark.cluster

IDLE_IMAGE = "local/pause:3.10"  # the harness's sandbox image: present on the node, does nothing


def spec(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "rounds": 2,
        "sites": [
            {"name": "hospital_01", "data": {"persistentVolumeClaim": "hospital-01-data"}},
            {"name": "hospital_02", "data": {"persistentVolumeClaim": "hospital-02-data"}},
        ],
        "dataWindow": {"from": "2024-01-01", "to": "2024-01-10"},
        # The pods are faked: no SuperLink runs to register the sites' keys with, so
        # SuperNodes would wait for registration forever. The secure default (TLS, keys
        # registered before SuperNodes start) is tested up to that point in
        # test_operator_runs_in_cluster_with_a_least_privilege_service_account, and end to
        # end with real pods in tests/e2e.
        "security": {"insecure": True},
    }
    base.update(changes)
    return base


class FakeServerApp:
    """Writes to MLflow what the Flower ServerApp writes: per-round metrics, a version."""

    def __init__(self, tracking_uri: str, model_name: str, training: dict[str, Any], run: int) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri)
        self.model_name = model_name
        meta = training["metadata"]
        self.tags = {
            TAG_TRAINING: f"{meta['namespace']}/{meta['name']}/{meta['uid']}",
            TAG_RUN_NUMBER: str(run),
        }
        experiment = self.client.get_experiment_by_name(TRAINING_EXPERIMENT)
        experiment_id = (
            experiment.experiment_id if experiment else self.client.create_experiment(TRAINING_EXPERIMENT)
        )
        self.experiment_id = experiment_id
        self.run_id = self.client.create_run(experiment_id, tags=self.tags).info.run_id

    def log_round(self, round_number: int, auc: float) -> None:
        from mlflow.entities import Metric

        values = {
            METRIC_ROUND: round_number,
            METRIC_VAL_AUC: auc,
            METRIC_VAL_LOSS: 0.5,
            METRIC_VAL_ACCURACY: 0.75,
        }
        stamp = int(time.time() * 1000)
        # One batch per round, as the ServerApp's mlflow.log_metrics(batch, step=round).
        self.client.log_batch(
            self.run_id, [Metric(k, float(v), stamp, round_number) for k, v in values.items()]
        )

    def register(self, auc: float, decided: str | None = None) -> str:
        """A version; `decided`: the gate's verdict already written (the operator follows it).
        Like the ServerApp it names the champion serving now as compared on the same rows,
        here with that champion's own AUC."""
        from mlflow.exceptions import MlflowException

        from healthrisk.registry import current_champion

        with contextlib.suppress(MlflowException):  # registered already by an earlier run
            self.client.create_registered_model(self.model_name)
        import tempfile

        import numpy as np

        from healthrisk.model_parameters import PARAMETERS_ARTIFACT, ModelParameters
        from healthrisk.schema import FEATURE_NAMES

        # A logged model with the parameters document, as the ServerApp's log_model leaves
        # it: promotion signs that document, and serving reads nothing else.
        model_id = self.client.create_logged_model(self.experiment_id, source_run_id=self.run_id).model_id
        n = len(FEATURE_NAMES)
        document = ModelParameters(np.zeros(n), np.ones(n), np.full(n, auc), 0.0).document()
        with tempfile.TemporaryDirectory() as files:
            path = Path(files) / PARAMETERS_ARTIFACT
            path.parent.mkdir(parents=True)
            path.write_bytes(document)
            self.client.log_model_artifacts(model_id, files)
        champion = current_champion(self.client, self.model_name)
        compared = (
            {TAG_CHAMPION_VERSION: str(champion.version), TAG_CHAMPION_VAL_AUC: champion.tags[TAG_VAL_AUC]}
            if champion is not None
            else {}
        )
        version = self.client.create_model_version(
            self.model_name,
            f"models:/{model_id}",
            run_id=self.run_id,
            tags={
                **self.tags,
                TAG_VAL_AUC: str(auc),
                **compared,
                **({TAG_PROMOTION: decided} if decided else {}),
            },
            model_id=model_id,
        )
        return str(version.version)


def pods_of(name: str, run: int = 1) -> RunPods:
    """The pods of run `run` of a training created with `spec()`'s sites."""
    return run_pods(name, run, spec())


def wait_pods(
    kube: KubeAPI, namespace: str, training: str, names: set[str], timeout: float = 60
) -> dict[str, Any]:
    return wait_for(
        f"pods {sorted(names)}",
        lambda: (pods := kube.pods(namespace, training)) and names <= set(pods) and pods,
        timeout=timeout,
    )


def wait_status(
    kube: KubeAPI,
    namespace: str,
    name: str,
    what: str,
    check: Callable[[dict[str, Any]], bool],
    timeout: float = 60,
) -> dict[str, Any]:
    return wait_for(what, lambda: (s := kube.status(namespace, name)) and check(s) and s, timeout=timeout)


def bring_up_run(kube: KubeAPI, namespace: str, name: str, run: int = 1) -> dict[str, Any]:
    """Fake the SuperLink and SuperNodes Running+Ready; wait for the submit pod."""
    pods = pods_of(name, run)
    wait_pods(kube, namespace, name, pods.servers)
    for pod in pods.servers:
        kube.fake_pod(namespace, pod, "Running", ready=True)
    return wait_pods(kube, namespace, name, {pods.submit(0)})


def inference_deployment(
    name: str, *, ready_port: int | None = None, version: str = "champion"
) -> k8s_client.V1Deployment:
    container: dict[str, Any] = {
        "name": "server",
        "image": IDLE_IMAGE,
        "imagePullPolicy": "Never",
        "env": [{"name": ENV_MODEL_VERSION, "value": version}],
    }
    if ready_port is not None:
        # Nothing listens there: the pods never become ready, the rollout never completes.
        container["readinessProbe"] = {"tcpSocket": {"port": ready_port}, "periodSeconds": 1}
    return k8s_client.V1Deployment.model_validate(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
            },
        }
    )


def deployment_ready(kube: KubeAPI, namespace: str, name: str) -> bool:
    d = kube.apps.read_namespaced_deployment(name, namespace)
    return bool(
        d.status.observed_generation == d.metadata.generation
        and (d.status.updated_replicas or 0) == 1
        and (d.status.available_replicas or 0) == 1
        and (d.status.replicas or 0) == 1
    )


# ---- schema ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "changes", "message"),
    [
        (
            "bad-window",
            {"dataWindow": {"from": "2024-02-01", "to": "2024-01-01"}},
            "dataWindow.from must not be after",
        ),
        ("bad-min-sites", {"minSites": 3}, "minSites must not exceed the number of sites"),
        ("bad-strategy", {"strategy": {"name": "FedSGD"}}, 'Unsupported value: "FedSGD"'),
        ("bad-fedprox", {"strategy": {"name": "FedProx"}}, "FedProx needs proximalMu > 0"),
        ("bad-rounds", {"rounds": 0}, "spec.rounds: Invalid value: 0"),
        ("bad-policy", {"runPolicy": {"cleanPodPolicy": "Sometimes"}}, "cleanPodPolicy: Unsupported value"),
        (
            "bad-site",
            {"sites": [{"name": "Hospital 1", "data": {"persistentVolumeClaim": "x"}}]},
            "sites[0].name",
        ),
        (
            "bad-security",
            {"security": {"insecure": True, "tlsSecretName": "x"}},
            "security.tlsSecretName and security.insecure exclude each other",
        ),
        (
            "bad-privacy",
            {"privacy": {"secureAggregation": True, "perSiteMetrics": True}},
            "privacy.perSiteMetrics needs the per-site values",
        ),
        ("no-sites", {"sites": []}, "spec.sites"),
        (
            "both-windows",
            {"dataWindow": {"last": "28d", "from": "2024-01-01"}},
            "either {last: Nd} or {from, to}",
        ),
        ("half-window", {"dataWindow": {"from": "2024-01-01"}}, "a fixed dataWindow needs both from and to"),
        ("bad-rolling", {"dataWindow": {"last": "4w"}}, "spec.dataWindow.last"),
        (
            "perf-no-drift",
            {"retraining": {"performance": {}}},
            "retraining.performance needs retraining.drift",
        ),
        ("a" * 41, {}, "at most 40 characters"),
    ],
)
def test_api_server_rejects_invalid_objects_with_a_clear_message(
    kube: KubeAPI, namespace: str, name: str, changes: dict[str, Any], message: str
) -> None:
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as refused:
        kube.create_training(namespace, name, spec(**changes))
    assert refused.value.status == 422
    assert message in json.loads(refused.value.body or "{}")["message"]


def test_defaults_printer_columns_short_names_and_category(kube: KubeAPI, namespace: str) -> None:
    created = kube.create_training(namespace, "defaults", spec(suspend=True))
    assert created["spec"]["runPolicy"] == {
        "backoffLimit": 2,
        "activeDeadlineSeconds": 3600,
        "startDeadlineSeconds": 600,
        "ttlSecondsAfterFinished": 86400,
        "cleanPodPolicy": "Running",
    }
    assert created["spec"]["strategy"] == {"name": "FedAvg", "localEpochs": 2, "proximalMu": 0}
    header = kube.kubectl("get", "ft", "-n", namespace).splitlines()[0].split()
    assert header == ["NAME", "PHASE", "RUN", "ROUND", "SITES", "AUC", "MODEL", "AGE"]
    wide = kube.kubectl("get", "fedtrain", "-n", namespace, "-o", "wide").splitlines()[0].split()
    columns = {"PROMOTED", "TRIGGER", "DRIFT", "LIVE-AUC", "SITE-AUCS", "STRATEGY", "SUSPENDED", "MESSAGE"}
    assert columns <= set(wide)
    assert "defaults" in kube.kubectl("get", "healthrisk", "-n", namespace)


# ---- a whole run -----------------------------------------------------------------


def test_run_lifecycle_promotes_and_rolls_out(
    kube: KubeAPI, namespace: str, operator: OperatorProcess, mlflow_uri: str
) -> None:
    """Faked: the SuperLink/SuperNode/submit pods and the ServerApp's MLflow writes.
    Real: API server, garbage collector, the inference Deployment's controller and pods."""
    model = f"risk-{namespace}"
    kube.apps.create_namespaced_deployment(namespace, inference_deployment("inference"))
    wait_for("the inference Deployment", lambda: deployment_ready(kube, namespace, "inference"), timeout=120)
    training = kube.create_training(
        namespace,
        "life",
        spec(model={"registeredName": model}, promotion={"inferenceDeployment": "inference"}),
    )
    uid = training["metadata"]["uid"]
    life = pods_of("life")

    pods = bring_up_run(kube, namespace, "life")
    for pod in pods.values():
        owner = pod.metadata.owner_references[0]
        assert (owner.kind, owner.name, owner.uid, owner.controller) == (
            "FederatedTraining",
            "life",
            uid,
            True,
        )
        assert pod.metadata.labels[LABEL_TRAINING] == "life"
        assert pod.metadata.labels[LABEL_RUN] == "1"
    assert kube.services(namespace, "life") == [life.superlink]
    submit = pods[life.submit(0)]
    assert run_config_of(submit)["training-ref"] == f"{namespace}/life/{uid}"
    assert pods[life.supernodes["hospital_01"]].metadata.labels[LABEL_SITE] == "hospital_01"

    kube.fake_pod(namespace, life.submit(0), "Running", ready=True)
    server_app = FakeServerApp(mlflow_uri, model, training, run=1)
    server_app.log_round(1, 0.70)
    server_app.log_round(2, 0.80)
    status = wait_status(kube, namespace, "life", "round 2 in status", lambda s: s.get("round") == 2)
    assert status["phase"] == "Training" and status["sitesReady"] == "2/2"
    assert status["metrics"]["auc"] == 0.8 and status["progress"] == "2/2"

    version = server_app.register(0.8)
    kube.fake_pod(namespace, life.submit(0), "Succeeded")
    status = wait_status(
        kube, namespace, "life", "phase Succeeded", lambda s: s.get("phase") == "Succeeded", 120
    )
    assert status["modelVersion"] == version and status["promoted"] is True
    assert status["history"][0]["result"] == "Succeeded" and status["history"][0]["version"] == version

    from mlflow import MlflowClient

    assert MlflowClient(mlflow_uri).get_model_version_by_alias(model, "champion").version == version
    deployment = kube.apps.read_namespaced_deployment("inference", namespace)
    assert deployment.spec.template.metadata.annotations[ANNOTATION_MODEL_VERSION] == version
    env = {e.name: e.value for e in deployment.spec.template.spec.containers[0].env}
    assert env[ENV_MODEL_VERSION] == version
    assert deployment_ready(kube, namespace, "inference")

    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True" and conditions["Promoted"]["status"] == "True"
    assert conditions["Training"]["status"] == "False" and conditions["Failed"]["status"] == "False"
    assert all(c["lastTransitionTime"] and c["reason"] for c in conditions.values())
    reasons = kube.event_reasons(namespace, "life")
    for reason in ("RunStarted", "Submitted", "RoundCompleted", "TrainingFinished", "Promoted",
                   "RolloutStarted", "RolloutComplete", "RunSucceeded"):  # fmt: skip
        assert reason in reasons
    assert reasons.count("RunStarted") == 1

    # cleanPodPolicy Running: servers and Service gone, the finished submit pod kept for logs.
    wait_for("cleanup", lambda: set(kube.pods(namespace, "life")) == {life.submit(0)})
    wait_for("Service cleanup", lambda: kube.services(namespace, "life") == [])
    row = kube.kubectl("get", "ft", "life", "-n", namespace, "--no-headers").split()
    assert row[1:6] == ["Succeeded", "1", "2/2", "2/2", "0.8"] and row[6] == version

    # Owner references: deleting the training takes its pods with it (garbage collector).
    kube.delete_trainings(namespace)
    wait_for("garbage collection", lambda: kube.pods(namespace, "life") == {}, timeout=60)


def test_operator_restart_mid_run_duplicates_nothing(
    kube: KubeAPI, namespace: str, start_operator: Callable[..., OperatorProcess], mlflow_uri: str
) -> None:
    """Faked: run pods and ServerApp writes. The operator is SIGKILLed mid-training."""
    operator = start_operator()
    model = f"risk-{namespace}"
    training = kube.create_training(namespace, "restart", spec(model={"registeredName": model}))
    bring_up_run(kube, namespace, "restart")
    kube.fake_pod(namespace, pods_of("restart").submit(0), "Running", ready=True)
    wait_status(kube, namespace, "restart", "phase Training", lambda s: s.get("phase") == "Training")

    operator.kill()
    server_app = FakeServerApp(mlflow_uri, model, training, run=1)
    server_app.log_round(1, 0.75)
    operator.start()

    wait_status(kube, namespace, "restart", "round 1 after restart", lambda s: s.get("round") == 1)
    server_app.log_round(2, 0.79)
    version = server_app.register(0.79)
    kube.fake_pod(namespace, pods_of("restart").submit(0), "Succeeded")
    status = wait_status(
        kube, namespace, "restart", "Succeeded", lambda s: s.get("phase") == "Succeeded", 120
    )
    assert status["run"] == 1 and len(status["history"]) == 1 and status["modelVersion"] == version
    assert set(kube.pods(namespace, "restart")) == {pods_of("restart").submit(0)}
    from mlflow import MlflowClient

    assert len(MlflowClient(mlflow_uri).search_model_versions(f"name = '{model}'")) == 1
    assert kube.event_reasons(namespace, "restart").count("RunStarted") == 1
    assert kube.event_reasons(namespace, "restart").count("Submitted") == 1


def test_an_orphaned_run_pod_is_adopted_not_duplicated(
    kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    """Faked: nothing runs. A SuperLink pod with the run's deterministic name and labels but
    no owner (as left by a lost create response or a deleted owner reference) exists
    before the run starts; the operator adopts it instead of failing or duplicating it."""
    training = kube.create_training(namespace, "adopt", spec(suspend=True))
    adopt = pods_of("adopt")
    orphan = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": adopt.superlink,
            "labels": {
                LABEL_TRAINING: "adopt",
                LABEL_RUN: "1",
                LABEL_ROLE: ROLE_SUPERLINK,
                LABEL_MANAGED_BY: MANAGER,
            },
        },
        "spec": {"schedulerName": FAKE_SCHEDULER, "containers": [{"name": "superlink", "image": IDLE_IMAGE}]},
    }
    created = kube.core.create_namespaced_pod(namespace, k8s_client.V1Pod.model_validate(orphan))
    kube.patch_training(namespace, "adopt", {"spec": {"suspend": False}})
    pods = wait_pods(kube, namespace, "adopt", set(adopt.supernodes.values()))
    adopted = wait_for(
        "the orphan to be adopted",
        lambda: (
            (pod := kube.core.read_namespaced_pod(adopt.superlink, namespace)).metadata.owner_references
            and pod
        ),
    )
    assert adopted.metadata.uid == created.metadata.uid
    assert adopted.metadata.owner_references[0].uid == training["metadata"]["uid"]
    assert len([p for p in pods if p.startswith(adopt.superlink)]) == 1


def test_a_site_pod_killed_mid_run_is_recreated(
    kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    """Faked: run pods. The SuperNode pod of one site is deleted mid-training (as a node
    drain or `kubectl delete pod` would); the run goes on with a new pod of the same name."""
    kube.create_training(namespace, "killed", spec())
    pods = bring_up_run(kube, namespace, "killed")
    killed = pods_of("killed")
    kube.fake_pod(namespace, killed.submit(0), "Running", ready=True)
    victim = killed.supernodes["hospital_02"]
    old_uid = pods[victim].metadata.uid
    kube.core.delete_namespaced_pod(victim, namespace, grace_period_seconds=0)
    replaced = wait_for(
        "the SuperNode pod to be recreated",
        lambda: (pod := kube.pods(namespace, "killed").get(victim)) and pod.metadata.uid != old_uid and pod,
        timeout=60,
    )
    assert replaced.metadata.owner_references[0].name == "killed"
    status = kube.status(namespace, "killed")
    assert status["run"] == 1 and status["active"] is True and status.get("failures", 0) == 0
    assert set(kube.pods(namespace, "killed")) == {*killed.servers, killed.submit(0)}


# ---- runPolicy -------------------------------------------------------------------


def test_missing_image_fails_the_run_at_the_start_deadline(
    kube: KubeAPI, namespace: str, start_operator: Callable[..., OperatorProcess]
) -> None:
    """Nothing faked: real scheduler and kubelet; the image is not on the node and the
    pull policy is Never (no registry may be contacted), so pods sit in ErrImageNeverPull."""
    start_operator(
        HEALTHRISK_OPERATOR_POD_SCHEDULER_NAME="",
        HEALTHRISK_OPERATOR_FLOWER_IMAGE="health-risk/not-built:test",
        HEALTHRISK_OPERATOR_IMAGE_PULL_POLICY="Never",
    )
    kube.create_training(
        namespace,
        "stuck",
        spec(
            sites=[{"name": "hospital_01", "data": {"persistentVolumeClaim": "missing-data"}}],
            runPolicy={"startDeadlineSeconds": 20},
        ),
    )
    status = wait_status(kube, namespace, "stuck", "phase Failed", lambda s: s.get("phase") == "Failed", 120)
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and failed["reason"] == "StartDeadlineExceeded"
    assert pods_of("stuck").superlink in failed["message"]
    assert "ErrImageNeverPull" in failed["message"] or "Unschedulable" in failed["message"]
    assert "PodsNotStarting" in kube.event_reasons(namespace, "stuck")
    wait_for("running pods deleted", lambda: kube.pods(namespace, "stuck") == {})


def test_fewer_ready_sites_than_min_sites_waits_then_fails(
    kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    """Faked: the SuperLink and one SuperNode are reported ready; the other never is."""
    kube.create_training(namespace, "few", spec(runPolicy={"startDeadlineSeconds": 8}))
    few = pods_of("few")
    ready = {few.superlink, few.supernodes["hospital_01"]}
    wait_pods(kube, namespace, "few", ready)
    for pod in ready:
        kube.fake_pod(namespace, pod, "Running", ready=True)
    status = wait_status(kube, namespace, "few", "1/2 sites", lambda s: s.get("sitesReady") == "1/2")
    assert status["phase"] == "Pending" and "minSites 2" in status["message"]
    assert few.submit(0) not in kube.pods(namespace, "few")
    status = wait_status(kube, namespace, "few", "Failed", lambda s: s.get("phase") == "Failed", 60)
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "MinSitesNotReady" and "1/2 sites ready" in failed["message"]


def test_backoff_limit_then_ttl_cleanup(kube: KubeAPI, namespace: str, operator: OperatorProcess) -> None:
    """Faked: run pods; the submit pod is reported failed twice (exit code 1, then 3)."""
    kube.create_training(
        namespace, "flaky", spec(runPolicy={"backoffLimit": 1, "ttlSecondsAfterFinished": 5})
    )
    bring_up_run(kube, namespace, "flaky")
    flaky = pods_of("flaky")
    kube.fake_pod(namespace, flaky.submit(0), "Failed", exit_code=1, message="superlink unreachable")
    wait_pods(kube, namespace, "flaky", {flaky.submit(1)})
    kube.fake_pod(namespace, flaky.submit(1), "Failed", exit_code=3, message="flower run failed")
    status = wait_status(kube, namespace, "flaky", "Failed", lambda s: s.get("phase") == "Failed")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert "exit code 3" in failed["message"] and "flower run failed" in failed["message"]
    assert status["history"][0]["attempts"] == 2
    assert kube.event_reasons(namespace, "flaky").count("SubmitFailed") == 1
    wait_for(
        "TTL cleanup",
        lambda: kube.pods(namespace, "flaky") == {} and not kube.services(namespace, "flaky"),
        30,
    )


# ---- suspend, spec change, annotation ---------------------------------------------


def test_suspend_resume_and_spec_change(kube: KubeAPI, namespace: str, operator: OperatorProcess) -> None:
    """Faked: run pods (never finished here)."""
    kube.create_training(namespace, "pause", spec())
    bring_up_run(kube, namespace, "pause")
    kube.patch_training(namespace, "pause", {"spec": {"suspend": True}})
    wait_status(kube, namespace, "pause", "Suspended", lambda s: s.get("phase") == "Suspended")
    wait_for("pods deleted on suspend", lambda: kube.pods(namespace, "pause") == {})
    assert kube.condition(namespace, "pause", "Suspended")["status"] == "True"

    kube.patch_training(namespace, "pause", {"spec": {"suspend": False}})
    wait_pods(kube, namespace, "pause", {pods_of("pause").superlink}, timeout=90)
    status = kube.status(namespace, "pause")
    assert status["run"] == 1  # suspend/resume is not a spec change: same run

    kube.patch_training(namespace, "pause", {"spec": {"rounds": 3}})
    status = wait_status(kube, namespace, "pause", "run 2", lambda s: s.get("run") == 2)
    assert status["trigger"] == TRIGGER_SPEC_CHANGE and status["history"][0]["result"] == "Superseded"
    assert status["observedGeneration"] == kube.training(namespace, "pause")["metadata"]["generation"]
    wait_pods(kube, namespace, "pause", {pods_of("pause", run=2).superlink}, timeout=90)


def test_retrain_annotation_starts_a_manual_run(
    kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    """Faked: run pods; run 1 fails fast (backoffLimit 0) so the object is idle."""
    kube.create_training(namespace, "manual", spec(runPolicy={"backoffLimit": 0}))
    bring_up_run(kube, namespace, "manual")
    kube.fake_pod(namespace, pods_of("manual").submit(0), "Failed")
    wait_status(kube, namespace, "manual", "Failed", lambda s: s.get("phase") == "Failed")
    kube.patch_training(namespace, "manual", {"metadata": {"annotations": {ANNOTATION_RETRAIN: "now"}}})
    status = wait_status(kube, namespace, "manual", "run 2", lambda s: s.get("run") == 2)
    assert status["trigger"] == "manual"
    wait_for(
        "the annotation to be consumed",
        lambda: (
            ANNOTATION_RETRAIN
            not in (kube.training(namespace, "manual")["metadata"].get("annotations") or {})
        ),
    )


def test_cron_schedule_starts_a_run(kube: KubeAPI, namespace: str, operator: OperatorProcess) -> None:
    """Faked: run pods; run 1 fails fast (backoffLimit 0); the every-minute schedule then
    starts run 2 at the next minute boundary."""
    kube.create_training(
        namespace, "cron", spec(runPolicy={"backoffLimit": 0}, retraining={"schedule": "* * * * *"})
    )
    bring_up_run(kube, namespace, "cron")
    kube.fake_pod(namespace, pods_of("cron").submit(0), "Failed")
    # Run 1's end is read from its history entry: when it fails just before a minute
    # boundary, the schedule starts run 2 before the next poll could see "no active run".
    status = wait_status(
        kube,
        namespace,
        "cron",
        "run 1 failed",
        lambda s: any(h.get("number") == 1 and h.get("result") == "Failed" for h in s.get("history") or []),
    )
    assert status["nextScheduleTime"]
    status = wait_status(
        kube, namespace, "cron", "the scheduled run", lambda s: s.get("run") == 2, timeout=90
    )
    assert status["trigger"] == "schedule" and status["lastScheduleTime"].endswith(":00Z")


# ---- drift -----------------------------------------------------------------------


def fake_inventory(kube: KubeAPI, namespace: str, training: str, round_: int, days: str) -> None:
    """The days-listing pods of one round end, printing what `healthrisk data days` prints."""
    listings = {
        builders.inventory_pod_name(training, round_, site): site.name for site in parse_spec(spec()).sites
    }
    wait_pods(kube, namespace, training, set(listings), timeout=90)
    for pod, site in listings.items():
        kube.fake_pod(namespace, pod, "Succeeded", message=json.dumps({"site": site, "days": [days]}))


def test_rolling_window_drift_pods_on_the_interval_and_a_drift_run_through_the_checked_day(
    kube: KubeAPI, namespace: str, operator: OperatorProcess, mlflow_uri: str
) -> None:
    """Faked: run pods, ServerApp writes, and the days-listing and drift pods (their output,
    in the CLIs' format: tests/drift and tests/unit read the real ones, is written as the
    container's termination message, which the operator reads when no log exists). The
    interval is the CRD's floor, 1m; test_state shows the default, 6h."""
    model = f"risk-{namespace}"
    training = kube.create_training(
        namespace,
        "drifty",
        spec(
            model={"registeredName": model},
            dataWindow={"last": "28d"},
            retraining={"drift": {"interval": "1m", "threshold": 0.5}},
        ),
    )
    fake_inventory(kube, namespace, "drifty", 1, "2024-01-01..2024-01-10")
    bring_up_run(kube, namespace, "drifty")
    assert kube.status(namespace, "drifty")["dataWindows"]["hospital_01"] == "2023-12-14..2024-01-10"
    FakeServerApp(mlflow_uri, model, training, run=1).register(0.8, decided=PROMOTION_REJECTED)
    kube.fake_pod(namespace, pods_of("drifty").submit(0), "Succeeded")
    wait_status(kube, namespace, "drifty", "Monitoring", lambda s: s.get("phase") == "Monitoring", 60)

    fake_inventory(kube, namespace, "drifty", 2, "2024-01-01..2024-01-11")
    checks = drift_pods("drifty", 1, spec())
    pods = wait_pods(kube, namespace, "drifty", set(checks.values()), timeout=60)
    args = pods[checks["hospital_01"]].spec.containers[0].args
    assert args[:4] == ["drift", "check", "--site", "hospital_01"] and {"--publish", "--json"} <= set(args)
    assert args[args.index("--until") + 1] == "2024-01-11"
    scores = {"hospital_01": 0.91, "hospital_02": 0.1}
    for site, score in scores.items():
        summary = [{"site": site, "score": score, "detected": score >= 0.5}]
        kube.fake_pod(
            namespace, checks[site], "Succeeded", message=f"report published\n{json.dumps(summary)}"
        )
    status = wait_status(kube, namespace, "drifty", "drift run", lambda s: s.get("run") == 2, 60)
    assert status["trigger"] == "drift" and status["dataWindows"]["hospital_01"] == "2023-12-15..2024-01-11"
    assert status["drift"]["detected"] is True and status["drift"]["score"] == 0.91
    assert status["drift"]["sites"]["hospital_01"] == {"score": 0.91, "detected": True}
    assert kube.condition(namespace, "drifty", "DriftDetected")["status"] == "True"
    assert {"DriftDetected", "RunStarted"} <= set(kube.event_reasons(namespace, "drifty"))
    wait_for("drift pods removed", lambda: not set(checks.values()) & set(kube.pods(namespace, "drifty")))


def test_drift_intervals_below_the_floor_are_refused(kube: KubeAPI, namespace: str) -> None:
    from kubernetes.client.exceptions import ApiException

    for interval in ("1s", "59s", "0m30s"):
        with pytest.raises(ApiException) as refused:
            kube.create_training(
                namespace, f"floor-{interval}", spec(retraining={"drift": {"interval": interval}})
            )
        assert (
            "retraining.drift.interval must be at least 1m"
            in json.loads(refused.value.body or "{}")["message"]
        )
    accepted = kube.create_training(
        namespace, "floor-ok", spec(suspend=True, retraining={"drift": {"interval": "1m"}})
    )
    assert accepted["spec"]["retraining"]["drift"]["interval"] == "1m"


# ---- rollback ----------------------------------------------------------------------


def test_rollout_that_never_gets_ready_is_rolled_back(
    kube: KubeAPI, namespace: str, operator: OperatorProcess, mlflow_uri: str
) -> None:
    """Faked: run pods and ServerApp writes. Real: the Deployment, whose new pods never
    pass their readiness probe."""
    from mlflow import MlflowClient

    model = f"risk-{namespace}"
    client = MlflowClient(mlflow_uri)
    client.create_registered_model(model)
    earlier = client.create_run(client.create_experiment(f"earlier-{namespace}")).info.run_id
    old = client.create_model_version(
        model, source=f"runs:/{earlier}/model", run_id=earlier, tags={TAG_VAL_AUC: "0.7"}
    )
    client.set_registered_model_alias(model, "champion", old.version)
    kube.apps.create_namespaced_deployment(
        namespace, inference_deployment("inference", ready_port=9, version="1")
    )
    training = kube.create_training(
        namespace,
        "rollback",
        spec(
            model={"registeredName": model},
            promotion={"inferenceDeployment": "inference", "rolloutTimeoutSeconds": 10},
        ),
    )
    bring_up_run(kube, namespace, "rollback")
    new_version = FakeServerApp(mlflow_uri, model, training, run=1).register(0.8)
    kube.fake_pod(namespace, pods_of("rollback").submit(0), "Succeeded")
    status = wait_status(
        kube,
        namespace,
        "rollback",
        "rolled back",
        lambda s: (s.get("history") or [{}])[0].get("result") == "RolledBack",
        120,
    )
    assert status["promoted"] is False and "not ready" in status["promotionReason"]
    assert client.get_model_version_by_alias(model, "champion").version == old.version
    assert client.get_model_version(model, new_version).tags[TAG_PROMOTION] == PROMOTION_ROLLED_BACK
    deployment = kube.apps.read_namespaced_deployment("inference", namespace)
    assert deployment.spec.template.metadata.annotations[ANNOTATION_MODEL_VERSION] == "1"
    env = {e.name: e.value for e in deployment.spec.template.spec.containers[0].env}
    assert env[ENV_MODEL_VERSION] == "1"
    assert kube.condition(namespace, "rollback", "Promoted")["reason"] == "RolledBack"
    assert {"RolloutStarted", "RolledBack"} <= set(kube.event_reasons(namespace, "rollback"))


# ---- robustness ------------------------------------------------------------------


# The least privilege the operator needs in a namespace it watches: the same rules as the
# chart's Role (charts/health-risk/templates/_helpers.tpl, health-risk.operator.rules).
OPERATOR_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": [GROUP],
        "resources": ["federatedtrainings"],
        "verbs": ["get", "list", "watch", "patch"],
    },
    {"apiGroups": [GROUP], "resources": ["federatedtrainings/status"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["list", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
PYTHON_IMAGE = "local/python:3.11-slim"  # the harness's Debian python3.11 image


def start_operator_pod(kube: KubeAPI, namespace: str, rules: list[dict[str, Any]]) -> None:
    """The operator as a pod under a ServiceAccount bound to `rules` only. The pod runs
    this checkout's code from a read-only hostPath on the harness's Debian python image,
    not the operator image: the suite checks the working tree without an image build (the
    chart and end-to-end suites run the image). What it creates is never scheduled."""
    import sysconfig

    site_packages = sysconfig.get_paths()["purelib"]
    kube.core.create_namespaced_service_account(
        namespace, k8s_client.V1ServiceAccount.model_validate({"metadata": {"name": "operator"}})
    )
    rbac = k8s_client.RbacAuthorizationV1Api(kube.api)
    rbac.create_namespaced_role(
        namespace,
        k8s_client.V1Role.model_validate({"metadata": {"name": "operator"}, "rules": rules}),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        k8s_client.V1RoleBinding.model_validate(
            {
                "metadata": {"name": "operator"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "operator"},
                "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}],
            }
        ),
    )
    argv = [
        "healthrisk",
        "operator",
        "run",
        "--namespace",
        namespace,
        "--liveness",
        f"http://0.0.0.0:{OPERATOR_HEALTH_PORT}/healthz",
    ]
    launcher = (
        f"import site, sys; site.addsitedir({site_packages!r}); sys.argv = {argv!r}; "
        "from healthrisk.cli import main; main()"
    )
    probe = {
        "httpGet": {"path": "/healthz", "port": OPERATOR_HEALTH_PORT},
        "periodSeconds": 2,
        "failureThreshold": 5,
    }
    mounts = sorted({str(REPO), str(Path(site_packages).parents[2])})
    kube.core.create_namespaced_pod(
        namespace,
        k8s_client.V1Pod.model_validate(
            {
                "metadata": {"name": "operator", "labels": {"app": "operator"}},
                "spec": {
                    "serviceAccountName": "operator",
                    "containers": [
                        {
                            "name": "operator",
                            "image": PYTHON_IMAGE,
                            "imagePullPolicy": "Never",
                            "command": ["python3", "-c", launcher],
                            "env": [
                                {"name": "HOME", "value": "/tmp"},
                                {"name": "HEALTHRISK_OPERATOR_TRACKING_URI", "value": "http://127.0.0.1:9"},
                                {"name": "HEALTHRISK_OPERATOR_POD_SCHEDULER_NAME", "value": FAKE_SCHEDULER},
                                {"name": "HEALTHRISK_OPERATOR_RECONCILE_INTERVAL_S", "value": "2"},
                            ],
                            "livenessProbe": probe,
                            "readinessProbe": probe,
                            "volumeMounts": [
                                {"name": f"code{i}", "mountPath": path, "readOnly": True}
                                for i, path in enumerate(mounts)
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": f"code{i}", "hostPath": {"path": path, "type": "Directory"}}
                        for i, path in enumerate(mounts)
                    ],
                },
            }
        ),
    )
    wait_for(
        "the operator pod to pass its probe",
        lambda: any(
            c.type == "Ready" and c.status == "True"
            for c in kube.core.read_namespaced_pod("operator", namespace).status.conditions or []
        ),
        timeout=120,
    )


def test_operator_runs_in_cluster_with_a_least_privilege_service_account(
    kube: KubeAPI, namespace: str
) -> None:
    """In-cluster config, the chart's Role rules only, the liveness endpoint probed by the
    kubelet, JSON logs."""
    start_operator_pod(kube, namespace, OPERATOR_RULES)
    try:
        # The default: TLS and SuperNode authentication (its material made under the Role).
        kube.create_training(namespace, "incluster", spec(security={}))
        wait_pods(kube, namespace, "incluster", {pods_of("incluster").superlink})
        secrets = wait_for(
            "the run's and the sites' key material",
            lambda: (
                (
                    found := {
                        s.metadata.name: s
                        for s in kube.core.list_namespaced_secret(namespace).items
                        if s.metadata.name.startswith("incluster-")
                    }
                )
                and len(found) == 3
                and found
            ),
        )
        assert sorted(secrets) == [
            "incluster-hospital-01-supernode-key",
            "incluster-hospital-02-supernode-key",
            "incluster-r1-flower",
        ]
        run_material = {k: base64.b64decode(v) for k, v in secrets["incluster-r1-flower"].data.items()}
        cert = x509.load_pem_x509_certificate(run_material[TLS_CERT_FILE])
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert f"incluster-r1-superlink.{namespace}.svc" in names.get_values_for_type(x509.DNSName)
        public = base64.b64decode(secrets["incluster-hospital-01-supernode-key"].data[SITE_PUBLIC_KEY_FILE])
        assert pem_public_key(public).startswith(b"-----BEGIN PUBLIC KEY-----")
        status = wait_status(
            kube, namespace, "incluster", "status written", lambda s: s.get("sitesReady") == "0/2"
        )
        assert status["phase"] == "Pending" and status["run"] == 1
        # The faked SuperLink never answers: no key is registered, so no SuperNode starts.
        assert not [p for p in kube.pods(namespace, "incluster") if "supernode" in p]
        assert "RunStarted" in kube.event_reasons(namespace, "incluster")
        log = kube.core.read_namespaced_pod_log("operator", namespace)
        records = [json.loads(line) for line in str(log).splitlines() if line.startswith("{")]
        assert any("created Pod" in r.get("message", "") for r in records), log
        pod = kube.core.read_namespaced_pod("operator", namespace)
        assert pod.status.container_statuses[0].restart_count == 0
    finally:
        kube.delete_trainings(namespace)


def test_lasting_reconcile_errors_reach_the_object(kube: KubeAPI, namespace: str) -> None:
    """A Role without `list pods` (RBAC drift between chart and operator): every reconcile
    fails with 403; after a few the object gets a Warning Event and a readable message."""
    rules = [r for r in OPERATOR_RULES if r["resources"] != ["pods"]]
    start_operator_pod(kube, namespace, rules)
    try:
        kube.create_training(namespace, "forbidden", spec())
        status = wait_status(
            kube,
            namespace,
            "forbidden",
            "the failure in status",
            lambda s: "cannot reconcile" in s.get("message", ""),
        )
        assert "403" in status["message"] and "pods" in status["message"]
        assert "ReconcileFailing" in kube.event_reasons(namespace, "forbidden")
        pod = kube.core.read_namespaced_pod("operator", namespace)
        assert pod.status.container_statuses[0].restart_count == 0  # degraded, not crash-looping
    finally:
        kube.delete_trainings(namespace)


def test_semantically_invalid_object_fails_without_hurting_the_operator(
    kube: KubeAPI, namespace: str, operator: OperatorProcess
) -> None:
    """No pods at all: the object is refused by the operator before any run."""
    kube.create_training(namespace, "badcron", spec(retraining={"schedule": "61 * * * *"}))
    status = wait_status(kube, namespace, "badcron", "Failed", lambda s: s.get("phase") == "Failed")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidSpec" and "not a valid cron expression" in failed["message"]
    time.sleep(3)  # several reconcile ticks: the Event is not repeated, nothing is created
    assert kube.event_reasons(namespace, "badcron").count("InvalidSpec") == 1
    assert kube.pods(namespace, "badcron") == {}
    with urllib.request.urlopen(operator.liveness_url, timeout=5) as response:
        assert response.status == 200
    kube.patch_training(namespace, "badcron", {"spec": {"retraining": {"schedule": "0 3 * * 0"}}})
    wait_status(kube, namespace, "badcron", "run 1 after the fix", lambda s: s.get("run") == 1)
