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
3. faults: the operator pod deleted mid-run, a SuperNode pod deleted mid-round, MLflow down
   for a minute under prediction traffic, a dozen invalid objects;
4. uninstall: nothing is left behind.

Nothing is faked. Each test bounds its waits; a timeout names what it waited for.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import pytest
from e2ekit import SITES, TRAIN_WINDOW, Kube, Platform, http_json, printed_table, pvc_name, wait_for

from healthrisk.constants import (
    CHAMPION_ALIAS,
    REGISTERED_MODEL,
    TAG_DATA_WINDOWS,
    TAG_PROMOTION,
    TAG_PROMOTION_REASON,
    TAG_ROUNDS,
    TAG_RUN_NUMBER,
    TAG_SITES,
    TAG_TRAINING,
    TAG_TRIGGER,
)
from healthrisk.schema import EXAMPLE_RECORD
from healthrisk_operator.constants import (
    ANNOTATION_MODEL_VERSION,
    LABEL_RUN,
    LABEL_TRAINING,
    PROMOTION_PROMOTED,
    PROMOTION_REJECTED,
)

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

MAIN = "health-risk"
ROUNDS = 3
NEW_DAYS = ("2024-01-15", "2024-01-21")
SMOKE_SITE = "hospital_01"
# Smoke moves 2 of the 11 features (pm25, pm10): a drifted share of ~0.18, below the
# default threshold of 0.5, so this training asks for 0.15 (as `healthrisk demo` does).
DRIFT_THRESHOLD = 0.15
NOISY_WINDOW = ("2024-01-22", "2024-01-28")
NOISY_SITE = "hospital_02"
# A drift run retrains on the same window: its AUC equals the champion's up to the order in
# which FedAvg sums the sites' floats. A tolerance well below what corrupted labels cost.
MAX_AUC_DROP = 0.005
RUN_TIMEOUT = 600


def training(
    platform: Platform,
    name: str,
    *,
    rounds: int = ROUNDS,
    min_sites: int = len(SITES),
    registered_name: str = REGISTERED_MODEL,
    serve: bool = False,
) -> dict[str, Any]:
    promotion: dict[str, Any] = {"alias": CHAMPION_ALIAS, "maxAucDrop": MAX_AUC_DROP}
    if serve:
        promotion |= {"inferenceDeployment": platform.inference, "rolloutTimeoutSeconds": 300}
    return {
        "apiVersion": "healthrisk.io/v1alpha1",
        "kind": "FederatedTraining",
        "metadata": {"name": name},
        "spec": {
            "rounds": rounds,
            "minSites": min_sites,
            "sites": [
                {"name": site, "data": {"persistentVolumeClaim": pvc_name(site), "path": "/data"}}
                for site in SITES
            ],
            "dataWindow": {"from": TRAIN_WINDOW[0], "to": TRAIN_WINDOW[1]},
            "strategy": {"name": "FedAvg", "localEpochs": 1},
            "model": {"registeredName": registered_name},
            "promotion": promotion,
            "runPolicy": {"backoffLimit": 1, "activeDeadlineSeconds": 900, "startDeadlineSeconds": 300},
            "security": {"tlsSecretName": platform.tls_secret},
        },
    }


@dataclass
class RunRecord:
    """What a user watching `kubectl get ft,pods -w` would have seen of one run."""

    status: dict[str, Any] = field(default_factory=dict)
    pod_uids: dict[str, set[str]] = field(default_factory=dict)
    pod_ready: dict[str, bool] = field(default_factory=dict)
    pod_phases: dict[str, set[str]] = field(default_factory=dict)
    seconds: float = 0.0

    def entry(self, run: int) -> dict[str, Any]:
        return next(h for h in self.status.get("history") or [] if h.get("number") == run)

    def ran(self, pod: str) -> bool:
        return self.pod_ready.get(pod, False)


def follow_run(
    kube: Kube, name: str, run: int, *, timeout: float = RUN_TIMEOUT, act: Any = None
) -> RunRecord:
    """Watch run `run` of `name` until it is in the history; `act(status)` on each look."""
    record = RunRecord()
    started = time.monotonic()
    last_line = ""

    def look() -> bool:
        nonlocal last_line
        status = kube.get("federatedtraining", name).get("status") or {}
        record.status = status
        pods = kube.get("pods", "-l", f"{LABEL_TRAINING}={name},{LABEL_RUN}={run}")["items"]
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            record.pod_uids.setdefault(pod_name, set()).add(pod["metadata"]["uid"])
            record.pod_phases.setdefault(pod_name, set()).add(pod["status"].get("phase", ""))
            ready = any(
                c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or []
            )
            record.pod_ready[pod_name] = record.pod_ready.get(pod_name, False) or ready
        line = (
            f"{status.get('phase')} run {status.get('run')} {status.get('progress')} {status.get('message')}"
        )
        if line != last_line:
            print(f"[{time.monotonic() - started:5.0f}s] {name}: {line}")
            last_line = line
        if act is not None and status.get("run") == run:
            act(status)
        return any(h.get("number") == run for h in status.get("history") or [])

    wait_for(f"run {run} of {name} to finish", look, timeout=timeout, interval=3)
    record.seconds = time.monotonic() - started
    return record


def run_pod_names(name: str, run: int) -> list[str]:
    prefix = f"{name}-r{run}"
    return [f"{prefix}-superlink", *(f"{prefix}-supernode-{s.replace('_', '-')}" for s in SITES)]


class MLflowRest:
    """The in-cluster MLflow's REST API through a port-forward."""

    def __init__(self, url: str, service_host: str) -> None:
        self.url = url
        # The server accepts only its own Service names as Host (DNS-rebinding protection).
        self.headers = {"Host": service_host}

    def get(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode(params)
        return http_json(f"{self.url}/api/2.0/mlflow/{path}?{query}", headers=self.headers)

    def champion(self, name: str) -> dict[str, Any]:
        return dict(self.get("registered-models/alias", name=name, alias=CHAMPION_ALIAS)["model_version"])

    def version(self, name: str, version: str) -> dict[str, Any]:
        return dict(self.get("model-versions/get", name=name, version=version)["model_version"])

    def versions(self, name: str) -> list[dict[str, Any]]:
        return list(self.get("model-versions/search", filter=f"name='{name}'").get("model_versions") or [])


def tags(version: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in version.get("tags") or []}


def served_version(platform: Platform) -> tuple[str, int]:
    """(the version the inference Deployment pins, its revision) once it is rolled out."""
    deployment = platform.kube.get("deployment", platform.inference)
    annotations = deployment["spec"]["template"]["metadata"].get("annotations") or {}
    revision = int(deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"])
    return annotations.get(ANNOTATION_MODEL_VERSION, ""), revision


def predict(platform: Platform, records: int = 3) -> list[dict[str, Any]]:
    with platform.kube.port_forward(f"svc/{platform.inference}", 8080) as api:
        return [http_json(f"{api}/predict", dict(EXAMPLE_RECORD)) for _ in range(records)]


def rollout_history_version(platform: Platform, revision: int) -> str:
    """MODEL_VERSION of one revision, as `kubectl rollout history --revision` prints it."""
    text = platform.kube.kubectl(
        "rollout", "history", f"deployment/{platform.inference}", f"--revision={revision}"
    ).stdout
    line = next((line for line in text.splitlines() if "MODEL_VERSION:" in line), "")
    return line.split("MODEL_VERSION:", 1)[-1].strip()


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
    assert entry["trigger"] == "create"
    assert entry["promoted"] is True, entry
    version = entry["version"]

    # Real pods: the SuperLink and every SuperNode became ready, the submit pod succeeded.
    for pod in run_pod_names(MAIN, 1):
        assert record.ran(pod), f"{pod} never became ready: {record.pod_phases}"
    assert "Succeeded" in record.pod_phases.get(f"{MAIN}-r1-submit-0", set()), record.pod_phases

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
    assert (wide["PROMOTED"], wide["TRIGGER"]) == ("true", "create"), wide
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    assert conditions["Promoted"]["status"] == "True", conditions

    # The in-cluster registry: the version, its provenance, per-round metrics, the alias.
    with kube.port_forward(f"svc/{platform.mlflow}", 5000) as url:
        mlflow = MLflowRest(url, f"{platform.mlflow}:5000")
        champion = mlflow.champion(REGISTERED_MODEL)
        assert champion["version"] == version
        tag = tags(champion)
        uid = kube.get("federatedtraining", MAIN)["metadata"]["uid"]
        assert tag[TAG_TRAINING] == f"{platform.namespace}/{MAIN}/{uid}"
        assert tag[TAG_RUN_NUMBER] == "1" and tag[TAG_ROUNDS] == str(ROUNDS) and tag[TAG_TRIGGER] == "create"
        assert sorted(tag[TAG_SITES].split(",")) == list(SITES)
        assert TRAIN_WINDOW[0] in tag[TAG_DATA_WINDOWS]
        assert tag[TAG_PROMOTION] == PROMOTION_PROMOTED
        rounds = mlflow.get("metrics/get-history", run_id=champion["run_id"], metric_key="val_auc")["metrics"]
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
    status = wait_for(
        "a drift check to start run 2",
        lambda: (s := kube.get("federatedtraining", MAIN)["status"]).get("run") == 2 and s,
        timeout=300,
    )
    # The drift run trains on the spec's window, whose comparison with the smoky days
    # does not change: left on, every check would start another run.
    kube.patch(f"federatedtraining/{MAIN}", {"spec": {"retraining": {"drift": None}}})
    assert status["trigger"] == "drift", status
    sites = status["drift"]["sites"]
    print(f"drift check: {sites}")
    assert sites[SMOKE_SITE]["detected"] is True, sites
    assert all(sites[s]["detected"] is False for s in SITES if s != SMOKE_SITE), sites
    reasons = {e["reason"] for e in kube.events(**{"involvedObject.name": MAIN})}
    assert {"DriftCheckStarted", "DriftDetected"} <= reasons, reasons

    record = follow_run(kube, MAIN, 2)
    platform.timings["run 2 (drift)"] = time.monotonic() - started
    entry = record.entry(2)
    assert (entry["result"], entry["trigger"], entry["promoted"]) == ("Succeeded", "drift", True), entry
    version = entry["version"]
    assert version != before
    for pod in run_pod_names(MAIN, 2):
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
    assert (entry["result"], entry["trigger"], entry["promoted"]) == ("Succeeded", "spec-change", False), (
        entry
    )
    version = entry["version"]
    print(f"v{version}: AUC {entry['auc']} against champion v{before} AUC {champion_auc}")
    assert entry["auc"] < champion_auc - MAX_AUC_DROP
    assert "not promoted" in record.status["message"], record.status["message"]

    with kube.port_forward(f"svc/{platform.mlflow}", 5000) as url:
        mlflow = MLflowRest(url, f"{platform.mlflow}:5000")
        tag = tags(mlflow.version(REGISTERED_MODEL, version))
        assert tag[TAG_PROMOTION] == PROMOTION_REJECTED, tag
        assert tag[TAG_PROMOTION_REASON], tag
        assert mlflow.champion(REGISTERED_MODEL)["version"] == before

    assert served_version(platform) == (before, revision_before), "the Deployment did not roll"
    for answer in predict(platform):
        assert answer["model_version"] == before, answer


# ---- 3. faults -----------------------------------------------------------------------


def scheduled_pods(kube: Kube, prefix: str) -> dict[str, set[str]]:
    """Pod name → uids the scheduler placed, from the Events (they outlive deleted pods)."""
    placed: dict[str, set[str]] = {}
    for event in kube.events(reason="Scheduled"):
        obj = event["involvedObject"]
        if obj.get("kind") == "Pod" and obj["name"].startswith(prefix):
            placed.setdefault(obj["name"], set()).add(obj["uid"])
    return placed


def operator_pod(kube: Kube) -> dict[str, Any]:
    pods = kube.get("pods", "-l", "app.kubernetes.io/component=operator")["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 1, [p["metadata"]["name"] for p in pods]
    return dict(live[0])


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def test_operator_pod_deleted_mid_run_completes_the_run_once(platform: Platform) -> None:
    kube = platform.kube
    name, model = "restart", "health-risk-e2e-restart"
    killed: list[str] = []

    def kill_operator_mid_run(status: dict[str, Any]) -> None:
        if not killed and status.get("phase") == "Training" and int(status.get("round") or 0) >= 1:
            pod = operator_pod(kube)
            kube.kubectl("delete", "pod", pod["metadata"]["name"], "--wait=false")
            killed.append(pod["metadata"]["uid"])
            print(f"deleted operator pod {pod['metadata']['name']} at round {status['round']}")

    kube.apply(training(platform, name, rounds=4, registered_name=model))
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
    placed = scheduled_pods(kube, f"{name}-r1-")
    assert set(placed) == {*run_pod_names(name, 1), f"{name}-r1-submit-0"}, placed
    assert all(len(uids) == 1 for uids in placed.values()), f"pods created twice: {placed}"
    with kube.port_forward(f"svc/{platform.mlflow}", 5000) as url:
        versions = MLflowRest(url, f"{platform.mlflow}:5000").versions(model)
    assert [v["version"] for v in versions] == [entry["version"]], "one run, one registered version"


def test_supernode_deleted_mid_round(platform: Platform) -> None:
    """SPEC: the run completes with ≥ minSites, or fails with a clear condition."""
    kube = platform.kube
    name, model = "sitefail", "health-risk-e2e-sitefail"
    victim = f"{name}-r1-supernode-hospital-03"
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
    if entry["result"] == "Succeeded":
        assert entry.get("version"), entry
        assert record.status["progress"] == "5/5"
    else:
        failed = next(c for c in record.status["conditions"] if c["type"] == "Failed")
        assert failed["status"] == "True" and failed["reason"] and len(failed["message"]) > 20, failed
        assert entry["result"] == "Failed", entry
    assert record.status.get("phase") in ("Monitoring", "Succeeded", "Failed")
    leftovers = [p["metadata"]["name"] for p in kube.get("pods", "-l", f"{LABEL_TRAINING}={name}")["items"]
                 if p["status"].get("phase") in ("Pending", "Running")]  # fmt: skip
    assert not leftovers, f"cleanPodPolicy Running leaves no running pod: {leftovers}"


def test_predictions_keep_flowing_while_mlflow_is_down(platform: Platform) -> None:
    kube = platform.kube
    version, _ = served_version(platform)
    inference_pods = kube.get("pods", "-l", "app.kubernetes.io/component=inference")["items"]
    restarts = {
        p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"] for p in inference_pods
    }

    kube.kubectl("scale", f"deployment/{platform.mlflow}", "--replicas=0")
    try:
        wait_for(
            "the MLflow pod to be gone",
            lambda: not kube.get("pods", "-l", "app.kubernetes.io/component=mlflow")["items"],
            timeout=120,
        )
        answers, failures = 0, []
        with kube.port_forward(f"svc/{platform.inference}", 8080) as api:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    answer = http_json(f"{api}/predict", dict(EXAMPLE_RECORD))
                    answers += 1
                    if answer["model_version"] != version:
                        failures.append(f"served {answer['model_version']}")
                except (AssertionError, OSError) as exc:
                    failures.append(str(exc))
                time.sleep(0.2)
            model = http_json(f"{api}/model")
        print(f"MLflow down for 60 s: {answers} predictions, {len(failures)} failed; /model: {model}")
        assert answers > 50 and not failures, failures[:5]
    finally:
        kube.kubectl("scale", f"deployment/{platform.mlflow}", "--replicas=1")
        kube.kubectl("rollout", "status", f"deployment/{platform.mlflow}", "--timeout=240s", timeout=260)
    after = {p["metadata"]["name"]: p["status"]["containerStatuses"][0]["restartCount"]
             for p in kube.get("pods", "-l", "app.kubernetes.io/component=inference")["items"]}  # fmt: skip
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
    ("auth without TLS", {"security": {"supernodeAuth": True}},
     "security.supernodeAuth needs security.tlsSecretName"),
]  # fmt: skip


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

    # Trainings go first, while the operator still runs: they carry its finalizer, which
    # nothing would remove once the release (the operator) is gone, and the namespace
    # would then hang in Terminating.
    finalizers = {t["metadata"]["name"]: t["metadata"].get("finalizers") for t in kube.get("ft")["items"]}
    assert all("healthrisk.io/operator" in (f or []) for f in finalizers.values()), finalizers
    started = time.monotonic()
    kube.kubectl("delete", "federatedtrainings", "--all", "--wait=true", timeout=180)
    wait_for(
        "the trainings' pods to be garbage-collected",
        lambda: not kube.get("pods", "-l", LABEL_TRAINING)["items"],
        timeout=120,
    )
    kube.helm("uninstall", "health-risk", "--wait", "--timeout", "3m", timeout=240)
    release = "app.kubernetes.io/instance=health-risk"
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
