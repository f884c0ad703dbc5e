"""Helpers for the chart tests: where helm/kubectl are, rendering, the value sets."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "health-risk"
HARNESS_KUBECONFIG = REPO / ".cluster" / "kubeconfig"
CACHE = Path(os.environ.get("HEALTHRISK_CACHE", "/var/cache/health-risk"))

# Value sets every check runs over: the defaults and the shapes a real install takes.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "production": {
        "operator": {"clusterWide": True, "runPods": {"nodeSelector": {"hospital-zone": "a"}}},
        "mlflow": {
            "backendStore": {"existingSecret": "mlflow-db"},
            "artifacts": {
                "destination": "s3://models/mlflow",
                "s3": {"endpointUrl": "https://minio.example.org", "existingSecret": "mlflow-s3"},
            },
            "extraAllowedHosts": ["mlflow.example.org"],
        },
        "inference": {
            "apiKey": {"enabled": True},
            "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6},
        },
        "metrics": {"prometheus": {"enabled": True}},
        "global": {"imageRegistry": "registry.hospital.example", "imagePullSecrets": [{"name": "regcred"}]},
        "modelSigning": {"existingSecret": "model-signing-key"},
    },
    "minimal": {
        "mlflow": {"enabled": False, "externalTrackingUri": "http://mlflow.shared.svc:5000"},
        "networkPolicy": {"enabled": False},
        "flower": {"tls": {"enabled": False}},
        "metrics": {"grafanaDashboard": {"enabled": False}},
        "operator": {"serviceAccount": {"create": False, "name": "default"}},
        "modelSigning": {"required": False},
    },
    "multi-namespace": {
        "operator": {"watchNamespaces": ["{ns}-site-a", "{ns}-site-b"]},
        "mlflow": {"persistence": {"keep": False, "size": "1Gi"}},
        "metrics": {"prometheus": {"enabled": True, "discovery": "dns"}},
    },
}


def find_tool(name: str) -> str:
    """The harness's pinned binary (fetched by cluster/fetch-tools.sh if missing), else PATH."""
    candidates = (REPO / ".cluster" / "bin" / name, CACHE / "tools" / "bin" / name)
    if not any(c.exists() for c in candidates) and not shutil.which(name):
        subprocess.run(["bash", str(REPO / "cluster" / "fetch-tools.sh")], capture_output=True, timeout=600)
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"`{name}` not found: `cluster/fetch-tools.sh` provides a pinned one, or put it on PATH")
    return found


def with_namespace(values: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """Value sets name extra namespaces relative to the test's own ({ns})."""
    return json.loads(json.dumps(values).replace("{ns}", namespace))


def run(
    cmd: list[str],
    *,
    input: str | None = None,
    timeout: float = 300,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        cmd, input=input, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    if check and proc.returncode != 0:
        command = " ".join(cmd[:6])
        raise AssertionError(
            f"{command} ... failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def render(
    helm: str,
    values: Mapping[str, Any],
    tmp_path: Path,
    *,
    namespace: str = "health-risk-mlops",
    release: str = "health-risk",
) -> list[dict[str, Any]]:
    """`helm template` with these values, parsed; the CRD from crds/ included."""
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(dict(values)))
    out = run(
        [helm, "template", release, str(CHART), "-n", namespace, "--include-crds", "-f", str(values_file)]
    )
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 300, interval: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except AssertionError as exc:  # a failing kubectl call is worth retrying
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every workload in a rendering."""
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "Pod":
            yield name, doc["spec"]
        elif doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield name, doc["spec"]["template"]["spec"]


@dataclass
class Cluster:
    kubeconfig: str
    kubectl: str
    helm: str

    def kubectl_run(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return run([self.kubectl, "--kubeconfig", self.kubeconfig, *args], **kw)

    def helm_run(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return run([self.helm, "--kubeconfig", self.kubeconfig, *args], **kw)

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl_run(*args, "-o", "json").stdout)

    def create_namespace(self, name: str) -> None:
        self.kubectl_run("create", "namespace", name)
        wait_for(
            f"default ServiceAccount in {name}",
            lambda: self.kubectl_run("-n", name, "get", "sa", "default", check=False).returncode == 0,
            timeout=60,
        )

    @contextlib.contextmanager
    def port_forward(self, namespace: str, target: str, port: int) -> Iterator[str]:
        """`kubectl port-forward` to a free loopback port; yields http://127.0.0.1:PORT."""
        proc = subprocess.Popen(
            [self.kubectl, "--kubeconfig", self.kubeconfig, "-n", namespace, "port-forward",
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
