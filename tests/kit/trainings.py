# mypy: disable-error-code="union-attr"
# (the kubernetes client types every field of every object as Optional)
"""FederatedTrainings on a real API server, through the Python client (the operator suite).

The cluster is the one KUBECONFIG names, else the harness's. Nothing here mocks the API
server: objects are created, validated, defaulted, garbage-collected by the real one.
What is faked is said where it is: run pods may be given a scheduler nobody serves
(`FAKE_SCHEDULER`) and a test then writes their status as a kubelet would (`fake_pod`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from healthrisk.contracts import GROUP, LABEL_TRAINING
from healthrisk_operator.constants import CRD_NAME, KIND, PLURAL, VERSION
from tests.kit.commands import spawn
from tests.kit.http import free_port
from tests.kit.kube import Kube
from tests.kit.tools import CHART, kubeconfig
from tests.kit.wait import wait_for

CRD_PATH = CHART / "files" / f"{CRD_NAME}.yaml"
MERGE = "application/merge-patch+json"
# Run pods in cluster tests carry this scheduler name, which no scheduler serves: they
# stay unscheduled, and a test that says so plays the kubelet by writing pod status.
FAKE_SCHEDULER = "healthrisk-test-unscheduled"


class NoCluster(RuntimeError):
    pass


class KubeAPI:
    """The API server through the Python client, and kubectl beside it."""

    def __init__(self) -> None:
        path = kubeconfig()
        if not path.exists():
            raise NoCluster(f"no kubeconfig at {path}: run `make cluster-up` or set KUBECONFIG")
        self.kubeconfig = path
        self.api = k8s_config.new_client_from_config(str(path))
        try:
            k8s.VersionApi(self.api).get_code(_request_timeout=5)
        except Exception as exc:
            raise NoCluster(f"Kubernetes API in {path} not reachable: {exc}") from exc
        self.core = k8s.CoreV1Api(self.api)
        self.apps = k8s.AppsV1Api(self.api)
        self.custom = k8s.CustomObjectsApi(self.api)
        self.ext = k8s.ApiextensionsV1Api(self.api)
        self.cli = Kube.from_environment()

    # ---- CRD and namespaces ------------------------------------------------------

    def apply_crd(self) -> None:
        body = yaml.safe_load(CRD_PATH.read_text())
        name = body["metadata"]["name"]
        try:
            # Only the spec: a chart release may own this CRD, and its metadata says so.
            self.ext.patch_custom_resource_definition(name, {"spec": body["spec"]}, _content_type=MERGE)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.ext.create_custom_resource_definition(k8s.V1CustomResourceDefinition.model_validate(body))

        def established() -> bool:
            crd = self.ext.read_custom_resource_definition(name)
            conditions = crd.status.conditions if crd.status else None
            return any(c.type == "Established" and c.status == "True" for c in conditions or [])

        wait_for("the CRD to be established", established, timeout=30)
        # Served once discovery sees it: a list succeeds.
        wait_for("the CRD to be served", lambda: self._can_list(), timeout=30)

    def _can_list(self) -> bool:
        try:
            self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=1)
            return True
        except ApiException:
            return False

    def create_namespace(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        body = {"metadata": {"name": name, "labels": {"healthrisk.io/test": "operator"}}}
        self.core.create_namespace(k8s.V1Namespace.model_validate(body))
        return name

    def delete_namespace(self, name: str) -> None:
        with contextlib.suppress(ApiException):
            self.core.delete_namespace(name)

    # ---- FederatedTraining -------------------------------------------------------

    def create_training(
        self, namespace: str, name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None
    ) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": spec,
        }
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)  # type: ignore[return-value]

    def training(self, namespace: str, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)  # type: ignore[return-value]

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        return self.training(namespace, name).get("status") or {}

    def patch_training(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch)

    def delete_trainings(self, namespace: str, timeout: float = 30) -> None:
        """Delete every training and wait for them to go: nothing may hold one back (the
        operator puts no finalizer on them)."""
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]  # type: ignore[index]
        for item in items:
            with contextlib.suppress(ApiException):
                self.custom.delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, item["metadata"]["name"]
                )
        wait_for(
            f"the trainings of {namespace} to be deleted",
            lambda: not self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"],  # type: ignore[index]
            timeout=timeout,
            interval=0.5,
        )

    def condition(self, namespace: str, name: str, kind: str) -> dict[str, Any] | None:
        conditions = self.status(namespace, name).get("conditions") or []
        return next((c for c in conditions if c["type"] == kind), None)

    def event_reasons(self, namespace: str, name: str) -> list[str]:
        events = self.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name}"
        ).items
        events.sort(key=lambda e: e.metadata.creation_timestamp or dt.datetime.min.replace(tzinfo=dt.UTC))
        return [str(e.reason) for e in events]

    # ---- pods --------------------------------------------------------------------

    def pods(self, namespace: str, training: str) -> dict[str, k8s.V1Pod]:
        items = self.core.list_namespaced_pod(namespace, label_selector=f"{LABEL_TRAINING}={training}").items
        return {str(p.metadata.name): p for p in items if p.metadata.deletion_timestamp is None}

    def services(self, namespace: str, training: str) -> list[str]:
        items = self.core.list_namespaced_service(
            namespace, label_selector=f"{LABEL_TRAINING}={training}"
        ).items
        return sorted(str(s.metadata.name) for s in items if s.metadata.deletion_timestamp is None)

    def fake_pod(
        self,
        namespace: str,
        name: str,
        phase: str,
        *,
        ready: bool = False,
        exit_code: int | None = None,
        message: str | None = None,
    ) -> None:
        """Play the kubelet for an unscheduled pod: write the status it would report."""
        pod = self.core.read_namespaced_pod(name, namespace)
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if phase in ("Succeeded", "Failed"):
            code = exit_code if exit_code is not None else (0 if phase == "Succeeded" else 1)
            terminated: dict[str, Any] = {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": now,
                "finishedAt": now,
            }
            if message:
                terminated["message"] = message
            state: dict[str, Any] = {"terminated": terminated}
        else:
            state = {"running": {"startedAt": now}}
        container = pod.spec.containers[0]
        status = {
            "phase": phase,
            "startTime": now,
            "conditions": [
                {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": now},
                {
                    "type": "ContainersReady",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": now,
                },
            ],
            "containerStatuses": [
                {
                    "name": container.name,
                    "image": container.image,
                    "imageID": "",
                    "ready": ready,
                    "restartCount": 0,
                    "started": phase == "Running",
                    "state": state,
                }
            ],
        }
        self.core.patch_namespaced_pod_status(name, namespace, {"status": status}, _content_type=MERGE)

    # ---- kubectl -----------------------------------------------------------------

    def kubectl(self, *args: str) -> str:
        """stdout of a kubectl command against the same cluster (printer columns, tables)."""
        return self.cli.out(*args, timeout=60)


class OperatorProcess:
    """`healthrisk operator run` as a real subprocess watching one namespace."""

    def __init__(self, kube: KubeAPI, namespace: str, log_path: Path, env: dict[str, str]) -> None:
        self.kube = kube
        self.namespace = namespace
        self.log_path = log_path
        self.env = env
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def liveness_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/healthz"

    def start(self) -> None:
        command = [
            str(Path(sys.executable).with_name("healthrisk")),
            "operator",
            "run",
            "--namespace",
            self.namespace,
            "--liveness",
            self.liveness_url,
        ]
        env = {**os.environ, "KUBECONFIG": str(self.kube.kubeconfig), **self.env}
        with self.log_path.open("ab") as log:
            self.process = spawn(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_for("the operator's liveness endpoint", self.alive, timeout=60)

    def alive(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"the operator exited; log:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(self.liveness_url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: a crash, not a graceful stop."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def running_operator(
    kube: KubeAPI, namespace: str, log_path: Path, env: dict[str, str]
) -> Iterator[OperatorProcess]:
    operator = OperatorProcess(kube, namespace, log_path, env)
    operator.start()
    try:
        yield operator
    finally:
        kube.delete_trainings(namespace)
        operator.stop()


def run_config_of(pod: k8s.V1Pod) -> dict[str, Any]:
    args = list(pod.spec.containers[0].args or [])
    return dict(json.loads(args[args.index("--run-config-json") + 1]))
