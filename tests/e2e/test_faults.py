"""Faults and uninstall, end to end on a real Kubernetes (issue 8, items 3 and 4).

On an install of their own (`conftest.platform`, module-scoped), in file order: a training
whose operator pod is deleted mid-run (it still completes once and rolls the inference
Deployment), a SuperNode pod deleted mid-round, MLflow down for a minute under prediction
traffic, a dozen invalid objects; then uninstall and namespace deletion leave nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest

from healthrisk.contracts import (
    INFERENCE_PORT,
    LABEL_COMPONENT,
    LABEL_TRAINING,
    MLFLOW_PORT,
    REGISTERED_MODEL,
    TAG_LOST_SITES,
)
from healthrisk.schema import EXAMPLE_RECORD
from healthrisk_operator import builders
from tests.e2e.platform import (
    RELEASE,
    SITES,
    Platform,
    follow_run,
    pods_of_run,
    served_version,
    tags,
    training,
)
from tests.kit.http import http_json
from tests.kit.kube import Kube
from tests.kit.wait import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]


def scheduled_pods(kube: Kube, prefix: str) -> dict[str, set[str]]:
    """Pod name → uids the scheduler placed, from the Events (they outlive deleted pods)."""
    placed: dict[str, set[str]] = {}
    for event in kube.events(reason="Scheduled"):
        obj = event["involvedObject"]
        if obj.get("kind") == "Pod" and obj["name"].startswith(prefix):
            placed.setdefault(obj["name"], set()).add(obj["uid"])
    return placed


def refused(kube: Kube, name: str) -> dict[str, Any] | None:
    """The training's status once the operator failed it, else None."""
    status = kube.get("federatedtraining", name).get("status") or {}
    return status if status.get("phase") == "Failed" else None


def operator_pod(kube: Kube) -> dict[str, Any]:
    pods = kube.get("pods", "-l", f"{LABEL_COMPONENT}=operator")["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 1, [p["metadata"]["name"] for p in pods]
    return dict(live[0])


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def test_operator_pod_deleted_mid_run_completes_the_run_once(platform: Platform) -> None:
    kube = platform.kube
    name = "restart"
    killed: list[str] = []

    def kill_operator_mid_run(status: dict[str, Any]) -> None:
        if not killed and status.get("phase") == "Training" and int(status.get("round") or 0) >= 1:
            pod = operator_pod(kube)
            kube.kubectl("delete", "pod", pod["metadata"]["name"], "--wait=false")
            killed.append(pod["metadata"]["uid"])
            print(f"deleted operator pod {pod['metadata']['name']} at round {status['round']}")

    # The inference pod waits unready for a first champion (see conftest).
    kube.kubectl("scale", f"deployment/{platform.inference}", "--replicas=1")
    # Drift checks at the CRD's defaults (every 6 h): test_platform.py checks every minute.
    kube.apply(training(platform, name, rounds=4, serve=True, retraining={"drift": {}}))
    record = follow_run(kube, name, 1, act=kill_operator_mid_run)
    platform.timings["run (operator deleted)"] = record.seconds
    assert killed, f"the run finished before the operator could be deleted mid-run: {record.status}"
    replacement = wait_for(
        "a new ready operator pod", lambda: (p := operator_pod(kube)) and is_ready(p) and p, 120
    )
    assert replacement["metadata"]["uid"] != killed[0]

    entry = record.entry(1)
    assert (entry["result"], entry["promoted"]) == ("Succeeded", True), entry
    assert [h["number"] for h in record.status["history"]] == [1] and record.status["run"] == 1
    pods = pods_of_run(name, 1)
    placed = scheduled_pods(kube, builders.run_prefix(name, 1) + "-")
    story = [
        f"{e['involvedObject']['name']} {e['reason']}: {e.get('message', '')}"
        for e in kube.events()
        if e["involvedObject"]["name"].startswith(name)
    ]
    assert set(placed) == {*pods.servers, pods.submit(0)}, (placed, record.pod_phases, story)
    assert all(len(uids) == 1 for uids in placed.values()), f"pods created twice: {placed}"
    with kube.port_forward(f"svc/{platform.mlflow}", MLFLOW_PORT) as url:
        versions = platform.registry(url).versions(REGISTERED_MODEL)
    assert [v["version"] for v in versions] == [entry["version"]], "one run, one registered version"
    assert served_version(platform)[0] == entry["version"], "the rollout survived the restart too"
    drift = wait_for(
        "the next drift check scheduled", lambda: kube.get("ft", name)["status"].get("drift"), 60
    )
    completed = dt.datetime.fromisoformat(entry["completionTime"].replace("Z", "+00:00"))
    next_check = dt.datetime.fromisoformat(drift["nextCheckAt"].replace("Z", "+00:00"))
    assert next_check - completed == dt.timedelta(hours=6), drift


def test_supernode_deleted_mid_round(platform: Platform) -> None:
    """Three sites, minSites 2: losing one SuperNode mid-round leaves enough sites, so the
    run completes all its rounds and registers a version (SPEC §10, a site pod killed
    mid-round); the operator recreates the pod."""
    kube = platform.kube
    name, model = "sitefail", "health-risk-e2e-sitefail"
    victim = pods_of_run(name, 1).supernodes["hospital_03"]
    killed: list[int] = []

    def kill_site_mid_round(status: dict[str, Any]) -> None:
        if not killed and status.get("phase") == "Training" and int(status.get("round") or 0) >= 1:
            kube.kubectl("delete", "pod", victim, "--wait=false")
            killed.append(int(status["round"]))
            print(f"deleted {victim} after round {status['round']}")

    kube.apply(training(platform, name, rounds=5, min_sites=2, registered_name=model))
    record = follow_run(kube, name, 1, act=kill_site_mid_round)
    platform.timings["run (SuperNode deleted)"] = record.seconds
    assert killed, f"the run finished before a SuperNode could be deleted: {record.status}"
    entry = record.entry(1)
    print(f"run with a SuperNode deleted after round {killed[0]}: {entry}")
    assert entry["result"] == "Succeeded", (entry, record.status.get("conditions"))
    assert record.status["progress"] == "5/5", record.status
    assert record.status.get("phase") in ("Monitoring", "Succeeded"), record.status
    with kube.port_forward(f"svc/{platform.mlflow}", MLFLOW_PORT) as url:
        versions = platform.registry(url).versions(model)
    assert [v["version"] for v in versions] == [entry["version"]], "the run registered its version"
    # Either the run went on without the site, and the version names it and where it lost it,
    # or the recreated pod (same key, so the same node id) was back before a message to the
    # site failed and took the next rounds' messages: a race between the pod's restart and
    # the round, seen both ways on this harness. Never another site.
    lost = tags(versions[0]).get(TAG_LOST_SITES)
    print(f"lost sites: {lost or 'none: the replacement SuperNode was back in time'}")
    assert lost is None or list(json.loads(lost)) == ["hospital_03"], tags(versions[0])
    replaced = scheduled_pods(kube, victim).get(victim, set())
    assert len(replaced) == 2, f"the operator recreated the deleted SuperNode: {replaced}"
    # cleanPodPolicy Running: once the run ends, no pod of it keeps running.
    wait_for(
        "the run's running pods to be deleted",
        lambda: (
            not [
                p["metadata"]["name"]
                for p in kube.get("pods", "-l", f"{LABEL_TRAINING}={name}")["items"]
                if p["status"].get("phase") in ("Pending", "Running")
            ]
        ),
        timeout=90,
    )


def test_predictions_keep_flowing_while_mlflow_is_down(platform: Platform) -> None:
    kube = platform.kube
    version, _ = served_version(platform)
    inference_pods = kube.get("pods", "-l", f"{LABEL_COMPONENT}=inference")["items"]
    restarts = {
        p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"] for p in inference_pods
    }

    kube.kubectl("scale", f"deployment/{platform.mlflow}", "--replicas=0")
    try:
        wait_for(
            "the MLflow pod to be gone",
            lambda: not kube.get("pods", "-l", f"{LABEL_COMPONENT}=mlflow")["items"],
            timeout=120,
        )
        answers, failures = 0, []
        headers = platform.api_headers
        with kube.port_forward(f"svc/{platform.inference}", INFERENCE_PORT) as api:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    answer = http_json(f"{api}/predict", dict(EXAMPLE_RECORD), headers=headers)
                    answers += 1
                    if answer["model_version"] != version:
                        failures.append(f"served {answer['model_version']}")
                except (AssertionError, OSError) as exc:
                    failures.append(str(exc))
                time.sleep(0.2)
            model = http_json(f"{api}/model", headers=headers)
        print(f"MLflow down for 60 s: {answers} predictions, {len(failures)} failed; /model: {model}")
        assert answers > 50 and not failures, failures[:5]
        # The service still describes the model it serves: the pinned version, loaded, with
        # no load error (a pinned version is not polled, so nothing about the outage shows).
        assert (model["ready"], model["version"], model["last_load_error"]) == (True, version, None), model
    finally:
        kube.kubectl("scale", f"deployment/{platform.mlflow}", "--replicas=1")
        kube.kubectl("rollout", "status", f"deployment/{platform.mlflow}", "--timeout=240s", timeout=260)
    after = {p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"]
             for p in kube.get("pods", "-l", f"{LABEL_COMPONENT}=inference")["items"]}  # fmt: skip
    assert after == restarts, "the inference pods neither restarted nor were replaced"


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("no sites", {"sites": None}, "spec.sites: Required value"),
    ("no data window", {"dataWindow": None}, "spec.dataWindow: Required value"),
    ("zero rounds", {"rounds": 0}, "spec.rounds: Invalid value: 0"),
    ("too many rounds", {"rounds": 5000}, "spec.rounds: Invalid value: 5000"),
    ("minSites above the sites", {"minSites": 4}, "minSites must not exceed the number of sites"),
    ("window backwards", {"dataWindow": {"from": "2024-02-01", "to": "2024-01-01"}},
     "dataWindow.from must not be after dataWindow.to"),
    ("not a date", {"dataWindow": {"from": "2024-13-45", "to": "2024-01-01"}}, "spec.dataWindow.from"),
    ("unknown strategy", {"strategy": {"name": "FedSGD"}}, 'Unsupported value: "FedSGD"'),
    ("FedProx without mu", {"strategy": {"name": "FedProx"}}, "strategy FedProx needs proximalMu > 0"),
    ("site name", {"sites": [{"name": "Hospital 1", "data": {"persistentVolumeClaim": "x"}}]},
     "spec.sites[0].name"),
    ("site without data", {"sites": [{"name": "hospital_01"}]}, "spec.sites[0].data: Required value"),
    ("drift threshold", {"retraining": {"drift": {"threshold": 1.5}}}, "spec.retraining.drift.threshold"),
    ("drift interval", {"retraining": {"drift": {"interval": "soon"}}}, "spec.retraining.drift.interval"),
    ("clean policy", {"runPolicy": {"cleanPodPolicy": "Sometimes"}}, 'Unsupported value: "Sometimes"'),
    ("insecure with a certificate", {"security": {"insecure": True, "tlsSecretName": "x"}},
     "security.tlsSecretName and security.insecure exclude each other"),
    ("DP with SecAgg+",
     {"privacy": {"secureAggregation": True, "differentialPrivacy": {"noiseMultiplier": 1}}},
     "cannot be combined"),
]  # fmt: skip


# (label, (spec section, its change), the field the refusal names)
OUTSIDE_POLICY: list[tuple[str, tuple[str, dict[str, Any]], str]] = [
    ("tracking", ("model", {"trackingUri": "http://169.254.169.254/latest"}), "spec.model.trackingUri"),
    ("secret", ("security", {"tlsSecretName": "health-risk-model-signing"}), "spec.security.tlsSecretName"),
    (
        "deployment",
        ("promotion", {"inferenceDeployment": "some-other-app"}),
        "spec.promotion.inferenceDeployment",
    ),
    # MLflow's users hold grants on the chart's registered models only (mlflow.auth)
    ("model", ("model", {"registeredName": "not-granted"}), "spec.model.registeredName"),
]


def test_invalid_trainings_are_rejected_with_a_readable_message(platform: Platform) -> None:
    kube = platform.kube
    before = operator_pod(kube)
    restarts = before["status"]["containerStatuses"][0]["restartCount"]
    for index, (label, change, expected) in enumerate(INVALID):
        manifest = training(platform, f"invalid-{index}")
        # A None drops the field; anything else replaces it whole.
        manifest["spec"] = {k: v for k, v in (manifest["spec"] | change).items() if v is not None}
        created = kube.kubectl("create", "-f", "-", input=json.dumps(manifest), check=False)
        assert created.returncode != 0, f"{label}: accepted"
        assert expected in created.stderr, f"{label}: {created.stderr}"
        print(f"{label}: {created.stderr.strip()[:300]}")
    long_name = training(platform, "a" * 41)
    created = kube.kubectl("create", "-f", "-", input=json.dumps(long_name), check=False)
    assert "metadata.name must start with a letter" in created.stderr, created.stderr
    names = [t["metadata"]["name"] for t in kube.get("federatedtrainings")["items"]]
    assert not [n for n in names if n.startswith("invalid-")], names

    # What no schema can see: a cron expression with five fields that is not one. The API
    # server takes it; the operator fails the object with a condition instead of retrying.
    bad_cron = training(platform, "bad-cron")
    bad_cron["spec"]["retraining"] = {"schedule": "61 25 * * *"}
    kube.apply(bad_cron)
    status = wait_for(
        "the operator to refuse the bad cron",
        lambda: (
            (s := kube.get("federatedtraining", "bad-cron").get("status") or {}).get("phase") == "Failed"
            and s
        ),
        timeout=60,
    )
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidSpec" and "cron" in failed["message"], failed
    assert not kube.get("pods", "-l", f"{LABEL_TRAINING}=bad-cron")["items"], "no run was started"
    kube.kubectl("delete", "federatedtraining", "bad-cron", "--wait=true", timeout=60)

    # Valid specs the chart's operator policy refuses: another tracking server (request
    # forgery from the cluster), a Secret the chart did not name, another Deployment, a
    # registered model MLflow's users hold no grant on.
    for label, change, field in OUTSIDE_POLICY:
        name = f"policy-{label}"
        manifest = training(platform, name, serve=True)
        section = manifest["spec"].setdefault(change[0], {})
        section.update(change[1])
        kube.apply(manifest)
        status = wait_for(
            f"the operator to refuse {name}",
            lambda n=name: refused(kube, n),
            timeout=60,
        )
        failed = next(c for c in status["conditions"] if c["type"] == "Failed")
        assert failed["reason"] == "InvalidSpec" and field in failed["message"], failed
        assert "chart value " in failed["message"], "the message names the chart value to change"
        assert not kube.get("pods", "-l", f"{LABEL_TRAINING}={name}")["items"], "no run was started"
        kube.kubectl("delete", "federatedtraining", name, "--wait=true", timeout=60)
    # And the API server holds the operator to its own Deployment whatever the operator does.
    account = f"system:serviceaccount:{platform.namespace}:{platform.operator}"
    can = lambda target: kube.kubectl("auth", "can-i", "patch", target, "--as", account, check=False)  # noqa: E731
    assert can(f"deployment/{platform.inference}").stdout.strip() == "yes"
    assert can("deployment/some-other-app").stdout.strip() == "no"

    after = operator_pod(kube)
    assert after["metadata"]["uid"] == before["metadata"]["uid"] and is_ready(after)
    assert after["status"]["containerStatuses"][0]["restartCount"] == restarts


# ---- 4. uninstall --------------------------------------------------------------------


def test_uninstall_and_namespace_deletion_leave_nothing_behind(platform: Platform) -> None:
    kube, namespace = platform.kube, platform.namespace
    volumes = {
        pv["metadata"]["name"]
        for pv in kube.get("pv")["items"]
        if (pv["spec"].get("claimRef") or {}).get("namespace") == namespace
    }
    assert len(volumes) == len(SITES) + 1, volumes  # the sites' and MLflow's

    # Nothing holds a training back: no finalizer, so neither the uninstall nor the
    # namespace deletion waits for an operator. The uninstall deletes them first.
    trainings = kube.get("ft")["items"]
    assert not any(t["metadata"].get("finalizers") for t in trainings), trainings
    started = time.monotonic()
    kube.helm("uninstall", RELEASE, "--wait", "--timeout", "3m", timeout=240)
    assert not kube.get("ft")["items"], "the uninstall deleted the trainings"
    assert not kube.get("pods", "-l", LABEL_TRAINING)["items"], "and their pods with them"
    release = f"app.kubernetes.io/instance={RELEASE}"
    kinds = (
        "deployments,replicasets,pods,services,secrets,configmaps,serviceaccounts,"
        "roles,rolebindings,networkpolicies,pvc"
    )
    wait_for(
        "the release's objects to be gone", lambda: not kube.get(kinds, "-l", release)["items"], timeout=120
    )
    cluster_scoped = [
        o["metadata"]["name"]
        for o in kube.get("clusterroles,clusterrolebindings", "-l", release)["items"]
        if namespace in o["metadata"]["name"]
    ]
    assert not cluster_scoped, cluster_scoped

    kube.kubectl("delete", "namespace", namespace, "--wait=true", timeout=300)
    assert kube.get_or_none("namespace", namespace) is None
    wait_for(
        "the namespace's volumes to be deleted",
        lambda: not volumes & {pv["metadata"]["name"] for pv in kube.get("pv")["items"]},
        timeout=180,
    )
    platform.timings["uninstall"] = time.monotonic() - started
    crd = kube.kubectl("get", "crd", "federatedtrainings.healthrisk.io", check=False)
    assert crd.returncode == 0, "the CRD (helm.sh/resource-policy: keep, shared) stays"
