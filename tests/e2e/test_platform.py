"""The platform end to end on a real Kubernetes (issue 8), as a user drives it.

One Helm release (`conftest.platform`): the chart's operator, MLflow and inference
Deployment from the project's own images, three hospital volumes filled by the product's
data generator. Then, in file order:

1. a FederatedTraining is applied; real SuperLink/SuperNode pods train over TLS; the version
   is registered in the in-cluster MLflow, promoted, the inference Deployment rolled to it,
   and a prediction through its Service names that version;
2. new data with a smoke episode at one site: the operator's drift pods detect it, a run
   with trigger `drift` follows and its model is served; then a run on a window where one
   site's labels are corrupted registers a worse model that is not promoted;
(the faults and the uninstall are in test_faults.py, on an install of their own).

Nothing is faked. Each test bounds its waits; a timeout names what it waited for.
"""

from __future__ import annotations

import time

import pytest

from healthrisk.contracts import (
    APP_NAME,
    INFERENCE_PORT,
    METRIC_VAL_AUC,
    MLFLOW_PORT,
    PROMOTION_PROMOTED,
    PROMOTION_REJECTED,
    REGISTERED_MODEL,
    TAG_DATA_WINDOWS,
    TAG_PROMOTION,
    TAG_PROMOTION_HMAC,
    TAG_PROMOTION_REASON,
    TAG_ROUNDS,
    TAG_RUN_NUMBER,
    TAG_SITES,
    TAG_TRAINING,
    TAG_TRIGGER,
    TRIGGER_CREATE,
    TRIGGER_DRIFT,
    TRIGGER_SPEC_CHANGE,
)
from tests.e2e.platform import (
    MAX_AUC_DROP,
    ROUNDS,
    SITES,
    TRAIN_WINDOW,
    MLflowRest,
    Platform,
    follow_run,
    pods_of_run,
    predict,
    rollout_history_version,
    served_version,
    tags,
    training,
)
from tests.kit.http import http_json
from tests.kit.wait import printed_table, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

MAIN = APP_NAME  # the training is named like the one in examples/federatedtraining.yaml
NEW_DAYS = ("2024-01-15", "2024-01-21")
SMOKE_SITE = "hospital_01"
# Smoke moves 2 of the 11 features (pm25, pm10): a drifted share of ~0.18, below the
# default threshold of 0.5, so this training asks for 0.15 (as `healthrisk demo` does).
DRIFT_THRESHOLD = 0.15
NOISY_WINDOW = ("2024-01-22", "2024-01-28")
NOISY_SITE = "hospital_02"


# ---- 1. apply a FederatedTraining → trained, registered, promoted, served -------------


def test_first_run_trains_registers_promotes_and_serves(platform: Platform) -> None:
    kube = platform.kube
    # The pod waits unready for a champion; the operator's rollout replaces it with one
    # pinned to the exact version (the chart installs at zero replicas, see conftest).
    kube.kubectl("scale", f"deployment/{platform.inference}", "--replicas=1")
    _, revision_before = served_version(platform)

    kube.apply(training(platform, MAIN, serve=True))
    record = follow_run(kube, MAIN, 1)
    platform.timings["run 1 (create)"] = record.seconds
    status = record.status
    entry = record.entry(1)
    assert entry["result"] == "Succeeded", entry
    assert entry["trigger"] == TRIGGER_CREATE
    assert entry["promoted"] is True, entry
    version = entry["version"]

    # Real pods: the SuperLink and every SuperNode became ready, the submit pod succeeded.
    pods = pods_of_run(MAIN, 1)
    for pod in pods.servers:
        assert record.ran(pod), f"{pod} never became ready: {record.pod_phases}"
    assert "Succeeded" in record.pod_phases.get(pods.submit(0), set()), record.pod_phases

    # `kubectl get federatedtrainings`: the columns of SPEC §7 with real values.
    table = printed_table(kube.kubectl("get", "federatedtrainings").stdout)
    print(kube.kubectl("get", "federatedtrainings", "-o", "wide").stdout)
    row = next(r for r in table if r["NAME"] == MAIN)
    assert list(row)[:8] == ["NAME", "PHASE", "RUN", "ROUND", "SITES", "AUC", "MODEL", "AGE"]
    assert row["PHASE"] == "Monitoring" or row["PHASE"] == "Succeeded", row
    assert (row["RUN"], row["ROUND"], row["SITES"], row["MODEL"]) == (
        "1",
        f"{ROUNDS}/{ROUNDS}",
        "3/3",
        version,
    )
    assert 0.6 < float(row["AUC"]) <= 1.0, row
    wide = next(r for r in printed_table(kube.kubectl("get", "ft", "-o", "wide").stdout) if r["NAME"] == MAIN)
    assert (wide["PROMOTED"], wide["TRIGGER"]) == ("true", TRIGGER_CREATE), wide
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    assert conditions["Promoted"]["status"] == "True", conditions

    # The in-cluster registry: the version, its provenance, per-round metrics, the alias.
    with kube.port_forward(f"svc/{platform.mlflow}", MLFLOW_PORT) as url:
        mlflow = MLflowRest(url, f"{platform.mlflow}:{MLFLOW_PORT}")
        champion = mlflow.champion(REGISTERED_MODEL)
        assert champion["version"] == version
        tag = tags(champion)
        uid = kube.get("federatedtraining", MAIN)["metadata"]["uid"]
        assert tag[TAG_TRAINING] == f"{platform.namespace}/{MAIN}/{uid}"
        assert (
            tag[TAG_RUN_NUMBER] == "1"
            and tag[TAG_ROUNDS] == str(ROUNDS)
            and tag[TAG_TRIGGER] == TRIGGER_CREATE
        )
        assert sorted(tag[TAG_SITES].split(",")) == list(SITES)
        assert TRAIN_WINDOW[0] in tag[TAG_DATA_WINDOWS]
        assert tag[TAG_PROMOTION] == PROMOTION_PROMOTED
        assert tag[TAG_PROMOTION_HMAC], "the operator's gate signed it (the chart's key)"
        history = mlflow.get("metrics/get-history", run_id=champion["run_id"], metric_key=METRIC_VAL_AUC)
        rounds = history["metrics"]
        assert set(range(1, ROUNDS + 1)) <= {m["step"] for m in rounds}, rounds

    # The Deployment rolled to exactly that version and it is what the Service answers with.
    served, revision = served_version(platform)
    assert served == version and revision > revision_before
    print(kube.kubectl("rollout", "history", f"deployment/{platform.inference}").stdout)
    assert rollout_history_version(platform, revision) == version
    deployment = kube.get("deployment", platform.inference)
    assert deployment["status"].get("readyReplicas") == 1, deployment["status"]
    for answer in predict(platform):
        assert answer["model_version"] == version, answer
        assert 0.0 <= answer["risk_score"] <= 1.0
    with kube.port_forward(f"svc/{platform.inference}", INFERENCE_PORT) as api:
        provenance = http_json(f"{api}/model", headers=platform.api_headers)["provenance"]
    assert provenance["verified"] is True, "the service checked the signature with the same key"


# ---- 2. drift → a run with trigger drift, served; a worse model is not promoted ---------


def test_drift_at_one_site_starts_a_run_whose_model_is_served(platform: Platform) -> None:
    kube = platform.kube
    before, revision_before = served_version(platform)
    assert before, "test_first_run must have served a version"
    platform.write_site_data(NEW_DAYS, drifts=(f"smoke:{SMOKE_SITE}:{NEW_DAYS[0]}..{NEW_DAYS[1]}",))

    started = time.monotonic()
    drift = {
        "interval": "20s",
        "threshold": DRIFT_THRESHOLD,
        "current": {"from": NEW_DAYS[0], "to": NEW_DAYS[1]},
    }
    kube.patch(f"federatedtraining/{MAIN}", {"spec": {"retraining": {"drift": drift}}})
    try:
        status = wait_for(
            "a drift check to start run 2",
            lambda: (s := kube.get("federatedtraining", MAIN)["status"]).get("run") == 2 and s,
            timeout=300,
        )
    except AssertionError as exc:
        drift_status = kube.get("federatedtraining", MAIN)["status"].get("drift")
        raise AssertionError(f"{exc}\nstatus.drift: {drift_status}") from exc
    # The drift run trains on the spec's window, whose comparison with the smoky days
    # does not change: left on, every check would start another run.
    kube.patch(f"federatedtraining/{MAIN}", {"spec": {"retraining": {"drift": None}}})
    assert status["trigger"] == TRIGGER_DRIFT, status
    sites = status["drift"]["sites"]
    print(f"drift check: {sites}")
    assert sites[SMOKE_SITE]["detected"] is True, sites
    assert all(sites[s]["detected"] is False for s in SITES if s != SMOKE_SITE), sites
    reasons = {e["reason"] for e in kube.events(**{"involvedObject.name": MAIN})}
    assert {"DriftCheckStarted", "DriftDetected"} <= reasons, reasons

    record = follow_run(kube, MAIN, 2)
    platform.timings["run 2 (drift)"] = time.monotonic() - started
    entry = record.entry(2)
    assert (entry["result"], entry["trigger"], entry["promoted"]) == ("Succeeded", TRIGGER_DRIFT, True), entry
    version = entry["version"]
    assert version != before
    for pod in pods_of_run(MAIN, 2).servers:
        assert record.ran(pod), f"{pod} never became ready"

    served, revision = served_version(platform)
    assert served == version and revision > revision_before
    assert rollout_history_version(platform, revision) == version
    assert rollout_history_version(platform, revision_before) == before
    for answer in predict(platform):
        assert answer["model_version"] == version, answer


def test_a_worse_model_is_registered_but_not_promoted(platform: Platform) -> None:
    kube = platform.kube
    before, revision_before = served_version(platform)
    champion_auc = kube.get("federatedtraining", MAIN)["status"]["metrics"]["auc"]
    platform.write_site_data(
        NOISY_WINDOW, drifts=(f"label-noise:{NOISY_SITE}:{NOISY_WINDOW[0]}..{NOISY_WINDOW[1]}",)
    )

    kube.patch(
        f"federatedtraining/{MAIN}",
        {"spec": {"dataWindow": {"from": NOISY_WINDOW[0], "to": NOISY_WINDOW[1]}}},
    )
    record = follow_run(kube, MAIN, 3)
    platform.timings["run 3 (worse model)"] = record.seconds
    entry = record.entry(3)
    assert (entry["result"], entry["trigger"], entry["promoted"]) == (
        "Succeeded",
        TRIGGER_SPEC_CHANGE,
        False,
    ), entry
    version = entry["version"]
    print(f"v{version}: AUC {entry['auc']} against champion v{before} AUC {champion_auc}")
    assert entry["auc"] < champion_auc - MAX_AUC_DROP
    assert "not promoted" in record.status["message"], record.status["message"]

    with kube.port_forward(f"svc/{platform.mlflow}", MLFLOW_PORT) as url:
        mlflow = MLflowRest(url, f"{platform.mlflow}:{MLFLOW_PORT}")
        tag = tags(mlflow.version(REGISTERED_MODEL, version))
        assert tag[TAG_PROMOTION] == PROMOTION_REJECTED, tag
        assert tag[TAG_PROMOTION_REASON], tag
        assert mlflow.champion(REGISTERED_MODEL)["version"] == before

    assert served_version(platform) == (before, revision_before), "the Deployment did not roll"
    for answer in predict(platform):
        assert answer["model_version"] == before, answer
