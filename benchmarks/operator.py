"""Operator reaction time: `kubectl apply` of N FederatedTrainings at once → all run pods.

Against the real cluster (the harness's .cluster/kubeconfig or KUBECONFIG): applies the
CRD, starts `healthrisk operator run` for a fresh namespace, creates N objects (two sites
each) concurrently, and times, per object, from its create call returning to the moment
a pod watch has seen its SuperLink pod, both SuperNode pods and the Service ADDED. The
run pods are given a scheduler name no scheduler serves: the figure is the operator's
(watch → reconcile → create), not image pulls. It prints

    operator: apply_to_pods_p95_s=<s> objects=<N> errors=<n>

Then (unless --no-rollout) the rollout of a promoted version, end to end: the chart installed
with its defaults (only the images are the harness's, built from the wheelhouse and loaded
when stale), three hospital volumes with generated data, a FederatedTraining that serves its
model. From the moment the version's promotion tag reads `promoted` in the in-cluster MLflow
to the first prediction that answers with that version through the inference Service (the
API server's service proxy, so whichever endpoint the Service picks): run 1 (the first
champion) and run 2 (a manual retrain on two new days replacing it, if its gate promotes it). The last line is

    rollout: promotion_to_served_s=<s>

(run 2's when it was promoted, else run 1's).

    PYTHONPATH=. .venv/bin/python benchmarks/operator.py [--objects 20] [--timeout 180] [--no-rollout]

(PYTHONPATH=.: the rollout installs the platform with the end-to-end tests' kit, tests/e2e/platform.py.)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from healthrisk.contracts import (
    ANNOTATION_RETRAIN,
    APP_NAME,
    INFERENCE_PORT,
    MLFLOW_PORT,
    PROMOTION_PROMOTED,
    REGISTERED_MODEL,
    TAG_PROMOTION,
)
from healthrisk.processes import ProcessGroup, free_port, venv_bin, wait_for_http
from healthrisk.schema import EXAMPLE_RECORD
from healthrisk_operator import builders
from healthrisk_operator.constants import CRD_NAME, GROUP, KIND, PLURAL, VERSION
from healthrisk_operator.spec import parse_spec
from tests.e2e.platform import (
    ROLLING_WINDOW,
    MLflowRest,
    Platform,
    follow_run,
    image_values,
    installed,
    tags,
    training,
)
from tests.kit import images
from tests.kit.http import http_call
from tests.kit.kube import Kube

REPO = Path(__file__).resolve().parents[1]
CRD_PATH = REPO / "charts" / APP_NAME / "files" / f"{CRD_NAME}.yaml"
SITES = ("hospital_01", "hospital_02")
# A scheduler name nobody serves: run pods stay unscheduled, so the figure is the
# operator's (watch → reconcile → create), not image pulls or container starts.
UNSCHEDULED = "healthrisk-benchmark-unscheduled"


def spec() -> dict[str, Any]:
    return {
        "rounds": 2,
        "sites": [
            {"name": s, "data": {"persistentVolumeClaim": f"{s.replace('_', '-')}-data"}} for s in SITES
        ],
        "dataWindow": {"from": "2024-01-01", "to": "2024-01-10"},
    }


def expected(name: str) -> set[str]:
    """The run's children, named by the operator's own builders."""
    superlink = builders.superlink_name(name, 1)
    supernodes = {builders.supernode_name(name, 1, site) for site in parse_spec(spec()).sites}
    return {f"Pod/{superlink}", f"Service/{superlink}", *(f"Pod/{pod}" for pod in supernodes)}


def poll(what: str, probe: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


class Cluster:
    """The API server KUBECONFIG names (else the harness's), through the Python client."""

    def __init__(self) -> None:
        kubeconfig = os.environ.get("KUBECONFIG") or str(REPO / ".cluster" / "kubeconfig")
        self.kubeconfig = kubeconfig
        self.api = k8s_config.new_client_from_config(kubeconfig)
        self.core = k8s.CoreV1Api(self.api)
        self.custom = k8s.CustomObjectsApi(self.api)
        self.ext = k8s.ApiextensionsV1Api(self.api)

    def apply_crd(self) -> None:
        body = yaml.safe_load(CRD_PATH.read_text())
        try:
            # Only the spec: a chart release may own this CRD, and its metadata says so.
            self.ext.patch_custom_resource_definition(
                CRD_NAME, {"spec": body["spec"]}, _content_type="application/merge-patch+json"
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.ext.create_custom_resource_definition(k8s.V1CustomResourceDefinition.model_validate(body))
        poll("the CRD to be served", self._served, timeout=60)

    def _served(self) -> bool:
        try:
            self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=1)
            return True
        except ApiException:
            return False

    def create_training(self, namespace: str, name: str) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": name}, "spec": spec()}
        self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    def trainings(self, namespace: str) -> list[Any]:
        listed = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        return list(listed["items"])  # type: ignore[index]

    def delete_trainings(self, namespace: str) -> None:
        for item in self.trainings(namespace):
            with contextlib.suppress(ApiException):
                self.custom.delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, item["metadata"]["name"]
                )


@contextlib.contextmanager
def operator(cluster: Cluster, namespace: str, log_dir: Path) -> Iterator[None]:
    """`healthrisk operator run` for `namespace`; the trainings are deleted while it still
    runs (it releases their finalizers), then it is stopped."""
    health = f"http://127.0.0.1:{free_port()}/healthz"
    env = {
        "KUBECONFIG": cluster.kubeconfig,
        # No MLflow is needed to create run pods; a closed loopback port fails fast.
        "HEALTHRISK_OPERATOR_TRACKING_URI": "http://127.0.0.1:9",
        "HEALTHRISK_OPERATOR_POD_SCHEDULER_NAME": UNSCHEDULED,
    }
    argv = [venv_bin("healthrisk"), "operator", "run", "--namespace", namespace, "--liveness", health]
    with ProcessGroup(log_dir) as group:
        child = group.start("operator", argv, env=env)
        wait_for_http(health, timeout=60, child=child)
        try:
            yield
        finally:
            cluster.delete_trainings(namespace)
            poll("the trainings to be deleted", lambda: not cluster.trainings(namespace), timeout=60)


class Seen:
    """First time each child object was seen ADDED, from watches started before the apply."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.namespace = namespace
        self.first: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._watch, args=("Pod", cluster.core.list_namespaced_pod), daemon=True),
            threading.Thread(
                target=self._watch, args=("Service", cluster.core.list_namespaced_service), daemon=True
            ),
        ]
        for thread in self.threads:
            thread.start()

    def _watch(self, kind: str, lister: object) -> None:
        while not self.stop.is_set():
            stream = watch.Watch()
            for event in stream.stream(lister, self.namespace, timeout_seconds=5):
                if event["type"] == "ADDED":
                    with self.lock:
                        self.first.setdefault(f"{kind}/{event['object'].metadata.name}", time.monotonic())
                if self.stop.is_set():
                    stream.stop()
                    break

    def all_seen(self, names: set[str]) -> float | None:
        with self.lock:
            return max(self.first[n] for n in names) if names <= self.first.keys() else None


# ---- promotion → served, through the Service ---------------------------------------------

ROLLOUT_TRAINING = "rollout"
NEW_DAYS = ("2024-01-15", "2024-01-16")  # after the install's TRAIN_WINDOW


def promoted_versions(mlflow: MLflowRest) -> set[str]:
    return {
        v["version"]
        for v in mlflow.versions(REGISTERED_MODEL)
        if tags(v).get(TAG_PROMOTION) == PROMOTION_PROMOTED
    }


def run_entry(platform: Platform, run: int) -> dict[str, Any] | None:
    status = platform.kube.get("federatedtraining", ROLLOUT_TRAINING).get("status") or {}
    return next((h for h in status.get("history") or [] if h.get("number") == run), None)


def time_to_served(
    platform: Platform, proxy: str, mlflow: MLflowRest, run: int, before: set[str], timeout: float
) -> float | None:
    """Seconds from a version newly tagged promoted (not in `before`) to the first prediction
    through the Service that answers with it; None when run `run` ends without promoting."""
    predict = (
        f"{proxy}/api/v1/namespaces/{platform.namespace}/services/"
        f"{platform.inference}:{INFERENCE_PORT}/proxy/predict"
    )
    headers = platform.api_headers
    deadline = time.monotonic() + timeout
    promoted_at: float | None = None
    version = ""
    asked = refused = 0  # predictions between the promotion and the new version's first
    next_status = 0.0
    while time.monotonic() < deadline:
        if promoted_at is None:
            with contextlib.suppress(AssertionError, OSError):
                if new := promoted_versions(mlflow) - before:
                    promoted_at, version = time.monotonic(), max(new, key=int)
                    print(f"run {run}: version {version} promoted; waiting for the Service", flush=True)
            if time.monotonic() > next_status:
                next_status = time.monotonic() + 3
                entry = run_entry(platform, run)
                if entry is not None and not entry.get("promoted"):
                    print(f"run {run} ended unpromoted: {entry}", flush=True)
                    return None
        else:
            answered = False
            with contextlib.suppress(OSError):
                status, answer = http_call(predict, dict(EXAMPLE_RECORD), headers=headers, timeout=5)
                answered = status == 200
                if answered and answer.get("model_version") == version:
                    print(f"run {run}: {asked} predictions meanwhile, {refused} not answered 200", flush=True)
                    return time.monotonic() - promoted_at
            asked, refused = asked + 1, refused + (not answered)
        time.sleep(0.2)
    raise TimeoutError(f"run {run}: no promoted version served through the Service within {timeout:.0f}s")


def rollout(timeout: float) -> float:
    """promotion → served of run 2 (a retrain replacing the champion), else of run 1."""
    kube = Kube.from_environment()
    refs = images.ensure(images.PLATFORM, lambda line: print(line, flush=True))
    with (
        installed(kube, refs, image_values(), prefix="hr-bench") as platform,
        kube.proxy() as proxy,
        platform.kube.port_forward(f"svc/{platform.mlflow}", MLFLOW_PORT) as mlflow_url,
    ):
        mlflow = platform.registry(mlflow_url)
        platform.kube.apply(training(platform, ROLLOUT_TRAINING, serve=True, window=ROLLING_WINDOW))
        first = time_to_served(platform, proxy, mlflow, 1, set(), timeout)
        if first is None:
            raise RuntimeError("run 1 did not promote a first champion")
        print(f"run 1 (the first champion): promotion_to_served_s={first:.2f}", flush=True)
        follow_run(platform.kube, ROLLOUT_TRAINING, 1, timeout=timeout)
        # Two new days at every site: a retrain on the days run 1 saw would be skipped.
        platform.write_site_data(NEW_DAYS)
        before = promoted_versions(mlflow)
        platform.kube.kubectl(
            "annotate", "ft", ROLLOUT_TRAINING, f"{ANNOTATION_RETRAIN}=bench", "--overwrite"
        )
        second = time_to_served(platform, proxy, mlflow, 2, before, timeout)
        if second is None:
            return first
        print(f"run 2 (replacing the champion): promotion_to_served_s={second:.2f}", flush=True)
        return second


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--no-rollout", action="store_true", help="only the apply → pods figure")
    parser.add_argument("--rollout-timeout", type=float, default=600.0)
    args = parser.parse_args()

    # The chart's install first: on a cluster where this benchmark's kubectl-applied CRD
    # already stands, `helm install` would refuse to take it over (see the chart's CRD template).
    served_s = None if args.no_rollout else rollout(args.rollout_timeout)
    cluster = Cluster()
    cluster.apply_crd()
    namespace = f"ft-bench-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespace(k8s.V1Namespace.model_validate({"metadata": {"name": namespace}}))
    log_dir = Path(tempfile.mkdtemp(prefix="operator-bench-"))
    errors = 0
    try:
        with operator(cluster, namespace, log_dir):
            seen = Seen(cluster, namespace)
            time.sleep(1.0)  # the watches are open before the first object exists
            names = [f"bench-{i:02d}" for i in range(args.objects)]
            applied: dict[str, float] = {}

            def create(name: str) -> None:
                cluster.create_training(namespace, name)
                applied[name] = time.monotonic()

            with ThreadPoolExecutor(max_workers=args.objects) as pool:
                failures = [f for f in [pool.submit(create, n) for n in names] if f.exception() is not None]
            errors += len(failures)
            for failure in failures:
                print(f"create failed: {failure.exception()}")

            children = {name: expected(name) for name in names}
            deadline = time.monotonic() + args.timeout
            latencies: dict[str, float] = {}
            while time.monotonic() < deadline and len(latencies) < len(applied):
                for name, t0 in applied.items():
                    if name not in latencies and (done := seen.all_seen(children[name])) is not None:
                        latencies[name] = max(0.0, done - t0)
                time.sleep(0.2)
            seen.stop.set()
            missing = sorted(set(applied) - set(latencies))
            errors += len(missing)
            if missing:
                print(f"no run pods within {args.timeout:.0f}s for: {', '.join(missing)}")
            values = sorted(latencies.values())
            if values:
                p95 = values[min(len(values) - 1, max(0, round(0.95 * len(values)) - 1))]
                print(
                    f"apply→pods over {len(values)} objects: min {values[0]:.2f}s  "
                    f"median {statistics.median(values):.2f}s  max {values[-1]:.2f}s"
                )
            else:
                p95 = float("nan")
            print(f"operator log: {log_dir / 'operator.log'}")
    finally:
        with contextlib.suppress(ApiException):
            cluster.core.delete_namespace(namespace)
    print(f"operator: apply_to_pods_p95_s={p95:.2f} objects={args.objects} errors={errors}")
    if served_s is not None:
        print(f"rollout: promotion_to_served_s={served_s:.2f}")


if __name__ == "__main__":
    main()
