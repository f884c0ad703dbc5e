"""The platform the end-to-end tests drive: one Helm release, three hospital volumes,
FederatedTrainings, and what a user watching them would look at (status, pods, MLflow,
the inference Service). kubectl, helm, port-forward and waiting are the kit's.
"""

from __future__ import annotations

import base64
import contextlib
import json
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healthrisk.contracts import (
    ANNOTATION_MODEL_VERSION,
    APP_NAME,
    CHAMPION_ALIAS,
    ENV_MODEL_VERSION,
    INFERENCE_PORT,
    LABEL_COMPONENT,
    LABEL_RUN,
    LABEL_SITE,
    LABEL_TRAINING,
    MLFLOW_PORT,
    REGISTERED_MODEL,
)
from healthrisk.schema import EXAMPLE_RECORD
from tests.kit.http import http_json
from tests.kit.images import TAG
from tests.kit.kube import RESTRICTED_CONTAINER, RESTRICTED_POD, Kube
from tests.kit.names import RunPods, run_pods
from tests.kit.tools import CHART
from tests.kit.wait import wait_for

# ---- the platform under test ---------------------------------------------------------

RELEASE = APP_NAME
SITES = ("hospital_01", "hospital_02", "hospital_03")
TRAIN_WINDOW = ("2024-01-01", "2024-01-14")


def pvc_name(site: str) -> str:
    return f"{site.replace('_', '-')}-data"


def site_specs() -> list[dict[str, Any]]:
    """spec.sites of every training here: each site reads its own volume."""
    return [
        {"name": site, "data": {"persistentVolumeClaim": pvc_name(site), "path": "/data"}} for site in SITES
    ]


def pods_of_run(name: str, run: int) -> RunPods:
    """The pods the operator creates for run `run` of the training `name`."""
    return run_pods(name, run, {"sites": site_specs(), "dataWindow": FIXED_WINDOW})


@dataclass
class Platform:
    kube: Kube
    namespace: str
    images: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def inference(self) -> str:
        return f"{RELEASE}-inference"

    @property
    def mlflow(self) -> str:
        return f"{RELEASE}-mlflow"

    @property
    def operator(self) -> str:
        return f"{RELEASE}-operator"

    def mlflow_credentials(self, user: str = "operator") -> tuple[str, str]:
        """A component's MLflow user from its Secret (the operator's reads runs and versions)."""
        data = self.kube.get("secret", f"{RELEASE}-mlflow-{user}")["data"]
        return base64.b64decode(data["username"]).decode(), base64.b64decode(data["password"]).decode()

    def registry(self, url: str) -> MLflowRest:
        """The release's MLflow through a port-forward at `url`, as the operator's user."""
        return MLflowRest(url, f"{self.mlflow}:{MLFLOW_PORT}", self.mlflow_credentials())

    @property
    def api_headers(self) -> dict[str, str]:
        """The API key the chart generated (on by default), as a client sends it."""
        secret = self.kube.get("secret", f"{RELEASE}-inference-api-key")
        return {"X-API-Key": base64.b64decode(secret["data"]["api-key"]).decode()}

    def write_site_data(self, window: tuple[str, str], drifts: tuple[str, ...] = ()) -> None:
        """Each site's days for `window` onto its own volume, via the product's generator.

        One pod mounts the three site volumes (a single node holds them all here) and runs
        `healthrisk data generate`; each site's folder is copied onto that site's volume
        only, at <volume>/<site>/<day>.parquet, the layout the SuperNodes read.
        """
        name = f"site-data-{uuid.uuid4().hex[:6]}"
        drift_args = " ".join(f"--drift {d}" for d in drifts)
        copies = " && ".join(f"mkdir -p /sites/{s}/{s} && cp /tmp/gen/{s}/* /sites/{s}/{s}/" for s in SITES)
        script = (
            f"healthrisk data generate --root /tmp/gen --sites {len(SITES)} "
            f"--window {window[0]}..{window[1]} {drift_args} && {copies} && ls -R /sites | tail -n 5"
        )
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {LABEL_COMPONENT: "e2e-site-data"}},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": RESTRICTED_POD,
                "containers": [{
                    "name": "generate",
                    "securityContext": RESTRICTED_CONTAINER,
                    "image": self.images["flower"],
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", script],
                    "env": [{"name": "HOME", "value": "/tmp"}],
                    "volumeMounts": [
                        {"name": s.replace("_", "-"), "mountPath": f"/sites/{s}"} for s in SITES
                    ],
                }],
                "volumes": [
                    {"name": s.replace("_", "-"), "persistentVolumeClaim": {"claimName": pvc_name(s)}}
                    for s in SITES
                ],
            },
        }  # fmt: skip
        self.kube.apply(pod)
        phase = wait_for(
            f"data pod {name} to finish",
            lambda: (p := self.kube.get("pod", name)["status"].get("phase")) in ("Succeeded", "Failed") and p,
            timeout=300,
        )
        logs = self.kube.kubectl("logs", name, check=False).stdout
        assert phase == "Succeeded", f"generating site data failed:\n{logs}"
        self.kube.kubectl("delete", "pod", name, "--wait=false")


def image_values() -> dict[str, Any]:
    """The values every install here needs: the kit's images, never pulled (they were
    imported into the node). Everything else is the chart's default unless a test says."""
    image = lambda name: {"repository": f"health-risk/{name}", "tag": TAG}  # noqa: E731
    return {
        "global": {"imagePullPolicy": "Never"},
        "operator": {
            "image": image("operator"),
            "runPods": {"image": image("flower"), "driftImage": image("drift")},
        },
        "mlflow": {"image": image("mlflow")},
        "inference": {"image": image("inference")},
    }


@contextlib.contextmanager
def installed(
    kube: Kube,
    images: dict[str, str],
    values: dict[str, Any],
    *,
    chart: Path = CHART,
    wait: bool = True,
    prefix: str = "hr-e2e",
) -> Iterator[Platform]:
    """One Helm release in a namespace of its own, three hospital volumes with generated
    data; on exit (when a test did not already) the release and the namespace are removed."""
    namespace = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kube.create_namespace(namespace)
    kube = kube.in_namespace(namespace)
    platform = Platform(kube, namespace, images)
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
            json.dump(values, file)
            file.flush()
            waiting = ("--wait", "--timeout", "10m") if wait else ()
            started = time.monotonic()
            kube.helm("install", RELEASE, str(chart), "-f", file.name, *waiting, timeout=700)
        step = "helm install" + (" --wait" if wait else "")
        platform.timings[step] = time.monotonic() - started
        print(f"{step}: {platform.timings[step]:.0f}s in {namespace}")
        for site in SITES:
            kube.apply({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": pvc_name(site), "labels": {LABEL_SITE: site}},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "256Mi"}}},
            })  # fmt: skip
        started = time.monotonic()
        platform.write_site_data(TRAIN_WINDOW)
        platform.timings["site data"] = time.monotonic() - started
        yield platform
    finally:
        # A test that uninstalls checks all of this itself; this is for one that stopped
        # half-way. The chart's pre-delete hook deletes the trainings first.
        if kube.get_or_none("namespace", namespace) is not None:
            kube.helm("uninstall", RELEASE, "--wait", "--timeout", "3m", timeout=240, check=False)
            kube.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        print("timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in platform.timings.items()))


# ---- FederatedTrainings and what they produce -----------------------------------------

# Three rounds: benchmarks/promotion_gate.py measures the gate's outcomes the tests rely on
# at three rounds (and the CRD's default five).
ROUNDS = 3
RUN_TIMEOUT = 600
# As examples/federatedtraining.yaml: the 28 days up to the newest day every site has.
ROLLING_WINDOW = {"last": "28d"}
FIXED_WINDOW = {"from": TRAIN_WINDOW[0], "to": TRAIN_WINDOW[1]}


def training(
    platform: Platform,
    name: str,
    *,
    rounds: int = ROUNDS,
    min_sites: int = len(SITES),
    registered_name: str = REGISTERED_MODEL,
    serve: bool = False,
    window: dict[str, str] = FIXED_WINDOW,
    retraining: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A FederatedTraining with the CRD's defaults where the test does not need another value
    (a fixed window: the tests of the chart's lifecycle also run on the previous chart's CRD,
    which knows no other)."""
    promotion: dict[str, Any] = {"alias": CHAMPION_ALIAS}
    if serve:
        promotion |= {"inferenceDeployment": platform.inference, "rolloutTimeoutSeconds": 300}
    return {
        "apiVersion": "healthrisk.io/v1alpha1",
        "kind": "FederatedTraining",
        "metadata": {"name": name},
        "spec": {
            "rounds": rounds,
            "minSites": min_sites,
            "sites": site_specs(),
            "dataWindow": window,
            "model": {"registeredName": registered_name},
            "promotion": promotion,
            "retraining": retraining or {},
            "runPolicy": {"backoffLimit": 1, "activeDeadlineSeconds": 900, "startDeadlineSeconds": 300},
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


class MLflowRest:
    """The in-cluster MLflow's REST API through a port-forward, as one of its users."""

    def __init__(self, url: str, service_host: str, credentials: tuple[str, str]) -> None:
        self.url = url
        token = base64.b64encode(":".join(credentials).encode()).decode()
        # The server accepts only its own Service names as Host (DNS-rebinding protection).
        self.headers = {"Host": service_host, "Authorization": f"Basic {token}"}

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
    with platform.kube.port_forward(f"svc/{platform.inference}", INFERENCE_PORT) as api:
        headers = platform.api_headers
        return [http_json(f"{api}/predict", dict(EXAMPLE_RECORD), headers=headers) for _ in range(records)]


def rollout_history_version(platform: Platform, revision: int) -> str:
    """MODEL_VERSION of one revision, as `kubectl rollout history --revision` prints it."""
    text = platform.kube.kubectl(
        "rollout", "history", f"deployment/{platform.inference}", f"--revision={revision}"
    ).stdout
    key = f"{ENV_MODEL_VERSION}:"
    line = next((line for line in text.splitlines() if key in line), "")
    return line.split(key, 1)[-1].strip()
