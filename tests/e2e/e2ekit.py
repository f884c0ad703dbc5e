"""What the end-to-end tests drive the platform with: kubectl and helm, as a user would.

Everything goes through the pinned `kubectl`/`helm` of the harness (or those on PATH) and
the API server at 127.0.0.1; HTTP to in-cluster Services goes through `kubectl
port-forward` on loopback, so no test traffic leaves the machine.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healthrisk.contracts import (
    ANNOTATION_MODEL_VERSION,
    CHAMPION_ALIAS,
    LABEL_RUN,
    LABEL_TRAINING,
    REGISTERED_MODEL,
)
from healthrisk.schema import EXAMPLE_RECORD

REPO = Path(__file__).resolve().parents[2]
HARNESS_KUBECONFIG = REPO / ".cluster" / "kubeconfig"
CACHE = Path(os.environ.get("HEALTHRISK_CACHE", "/var/cache/health-risk"))


class CommandFailed(AssertionError):
    pass


def find_tool(name: str) -> str | None:
    """The harness's pinned binary, else the one on PATH."""
    for candidate in (REPO / ".cluster" / "bin" / name, CACHE / "tools" / "bin" / name):
        if candidate.exists():
            return str(candidate)
    return shutil.which(name)


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, interval: float = 3.0) -> Any:
    """Poll until `predicate` returns something truthy; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
        except CommandFailed as exc:  # an API call that failed once is worth retrying
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


@dataclass
class Kube:
    """kubectl and helm against one cluster, scoped to one namespace by default."""

    kubeconfig: str
    kubectl_bin: str
    helm_bin: str
    namespace: str = "default"

    def _run(
        self, cmd: list[str], *, input: str | None, timeout: float, check: bool
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            command = " ".join([Path(cmd[0]).name, *cmd[5:10]])
            raise CommandFailed(
                f"{command} ... exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def kubectl(
        self, *args: str, input: str | None = None, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.kubectl_bin, "--kubeconfig", self.kubeconfig, "-n", self.namespace, *args]
        return self._run(cmd, input=input, timeout=timeout, check=check)

    def helm(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [self.helm_bin, "--kubeconfig", self.kubeconfig, "-n", self.namespace, *args]
        return self._run(cmd, input=None, timeout=timeout, check=check)

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def get_or_none(self, *args: str) -> Any:
        proc = self.kubectl("get", *args, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr:
                return None
            raise CommandFailed(proc.stderr)
        return json.loads(proc.stdout)

    def apply(self, manifest: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    def patch(self, kind_name: str, patch: dict[str, Any], patch_type: str = "merge") -> None:
        self.kubectl("patch", kind_name, "--type", patch_type, "-p", json.dumps(patch))

    def events(self, **field_selector: str) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in field_selector.items())
        args = ["events"] + (["--field-selector", selector] if selector else [])
        return list(self.get(*args)["items"])

    @contextlib.contextmanager
    def port_forward(self, target: str, port: int) -> Iterator[str]:
        """`kubectl port-forward` to a free loopback port; yields http://127.0.0.1:PORT."""
        proc = subprocess.Popen(
            [self.kubectl_bin, "--kubeconfig", self.kubeconfig, "-n", self.namespace, "port-forward",
             "--address", "127.0.0.1", target, f":{port}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            match = re.search(r"127\.0\.0\.1:(\d+)", line)
            assert match, f"port-forward to {target} said: {line}"
            yield f"http://127.0.0.1:{match.group(1)}"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def http_json(
    url: str, body: Any = None, *, headers: dict[str, str] | None = None, timeout: float = 10
) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{url}: HTTP {exc.code}: {exc.read()[:500]!r}") from exc


def printed_table(text: str) -> list[dict[str, str]]:
    """`kubectl get` table output as rows keyed by column header.

    Cells are cut at the header's column offsets (kubectl aligns them), so an empty cell
    does not shift the ones after it.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
    headers = lines[0].split()
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [{h: line[a:b].strip() for h, (a, b) in zip(headers, bounds, strict=True)} for line in lines[1:]]


# ---- the platform under test ---------------------------------------------------------

IMAGE_TAG = os.environ.get("E2E_IMAGE_TAG", "dev")
IMAGES = {name: f"health-risk/{name}:{IMAGE_TAG}" for name in ("operator", "flower", "inference", "mlflow")}
RELEASE = "health-risk"
CHART = REPO / "charts" / "health-risk"
SITES = ("hospital_01", "hospital_02", "hospital_03")
TRAIN_WINDOW = ("2024-01-01", "2024-01-14")


def pvc_name(site: str) -> str:
    return f"{site.replace('_', '-')}-data"


@dataclass
class Platform:
    kube: Kube
    namespace: str
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

    @property
    def tls_secret(self) -> str:
        return f"{RELEASE}-flower-tls"

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
            "metadata": {"name": name, "labels": {"app.kubernetes.io/component": "e2e-site-data"}},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001},
                "containers": [{
                    "name": "generate",
                    "image": IMAGES["flower"],
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


# ---- FederatedTrainings and what they produce -----------------------------------------

ROUNDS = 3
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
        headers = platform.api_headers
        return [http_json(f"{api}/predict", dict(EXAMPLE_RECORD), headers=headers) for _ in range(records)]


def rollout_history_version(platform: Platform, revision: int) -> str:
    """MODEL_VERSION of one revision, as `kubectl rollout history --revision` prints it."""
    text = platform.kube.kubectl(
        "rollout", "history", f"deployment/{platform.inference}", f"--revision={revision}"
    ).stdout
    line = next((line for line in text.splitlines() if "MODEL_VERSION:" in line), "")
    return line.split("MODEL_VERSION:", 1)[-1].strip()
