"""kubectl and helm against one cluster, as a user would type them.

Everything goes through the pinned `kubectl`/`helm` (tools.find_tool) and the API server
the kubeconfig names; HTTP to in-cluster Services goes through `kubectl port-forward` on
loopback, so no test traffic leaves the machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tests.kit.commands import CommandFailed, run, spawn
from tests.kit.tools import find_tool, kubeconfig
from tests.kit.wait import wait_for

# What the restricted Pod Security Standard asks of a pod the tests create in a namespace
# the chart manages (it enforces it there by default: podSecurity.enforceRestricted).
RESTRICTED_POD: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER: dict[str, Any] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


@dataclass(frozen=True)
class Kube:
    """kubectl and helm against one cluster, scoped to `namespace` when one is set."""

    kubeconfig: str
    kubectl_bin: str
    helm_bin: str
    namespace: str | None = None

    @classmethod
    def from_environment(cls) -> Kube:
        """The cluster KUBECONFIG names (else the harness's), with the pinned tools."""
        return cls(str(kubeconfig()), find_tool("kubectl"), find_tool("helm"))

    def in_namespace(self, namespace: str) -> Kube:
        return dataclasses.replace(self, namespace=namespace)

    def _scope(self) -> list[str]:
        return ["-n", self.namespace] if self.namespace else []

    def kubectl(
        self, *args: str, input: str | None = None, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.kubectl_bin, "--kubeconfig", self.kubeconfig, *self._scope(), *args]
        return run(cmd, input=input, timeout=timeout, check=check)

    def out(self, *args: str, input: str | None = None, timeout: float = 120) -> str:
        """stdout of a kubectl command that must succeed."""
        return self.kubectl(*args, input=input, timeout=timeout).stdout

    def helm(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [self.helm_bin, "--kubeconfig", self.kubeconfig, *self._scope(), *args]
        return run(cmd, timeout=timeout, check=check)

    def get(self, *args: str) -> Any:
        """`kubectl get ARGS -o json`, parsed."""
        return json.loads(self.out("get", *args, "-o", "json"))

    def get_or_none(self, *args: str) -> Any:
        proc = self.kubectl("get", *args, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr:
                return None
            raise CommandFailed(proc.stderr)
        return json.loads(proc.stdout)

    def apply(self, manifest: str | Mapping[str, Any]) -> None:
        """`kubectl apply` of a YAML text or an object."""
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        self.kubectl("apply", "-f", "-", input=text)

    def patch(self, target: str, patch: Mapping[str, Any], patch_type: str = "merge") -> None:
        self.kubectl("patch", target, "--type", patch_type, "-p", json.dumps(patch))

    def events(self, **field_selector: str) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in field_selector.items())
        args = ["events"] + (["--field-selector", selector] if selector else [])
        return list(self.get(*args)["items"])

    def create_namespace(self, name: str) -> None:
        """Create `name` and wait for its default ServiceAccount (pods need it)."""
        self.kubectl("create", "namespace", name)
        wait_for(
            f"the default ServiceAccount in {name}",
            lambda: self.kubectl("-n", name, "get", "sa", "default", check=False).returncode == 0,
            timeout=60,
        )

    def delete_namespace(self, name: str) -> None:
        self.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)

    def wait_for_endpoints(self, service: str, timeout: float = 60) -> list[str]:
        """Addresses of the Service's ready endpoints (in this namespace), once it has one.

        `rollout status` returns when the pods are ready; the EndpointSlice controller
        publishes them a moment later, and kube-proxy programs its rules after that, so a
        client that connects right after a rollout can be refused. Wait for the first step
        here; a client in the cluster still retries a refused connection for a bounded time.
        """

        def ready() -> list[str]:
            slices = self.get("endpointslices", "-l", f"kubernetes.io/service-name={service}")["items"]
            return [
                address
                for eps in slices
                for endpoint in eps.get("endpoints") or []
                if endpoint.get("conditions", {}).get("ready")
                for address in endpoint["addresses"]
            ]

        return wait_for(f"a ready endpoint of service {self.namespace}/{service}", ready, timeout=timeout)

    @contextlib.contextmanager
    def port_forward(self, target: str, port: int) -> Iterator[str]:
        """`kubectl port-forward` to a free loopback port; yields http://127.0.0.1:PORT."""
        with self._on_loopback(
            f"port-forward to {target}", "port-forward", "--address", "127.0.0.1", target, f":{port}"
        ) as url:
            yield url

    @contextlib.contextmanager
    def proxy(self) -> Iterator[str]:
        """`kubectl proxy` on a free loopback port: the API server's proxy, e.g. to a Service
        (/api/v1/namespaces/NS/services/NAME:PORT/proxy/...); yields http://127.0.0.1:PORT."""
        with self._on_loopback("kubectl proxy", "proxy", "--address", "127.0.0.1", "--port", "0") as url:
            yield url

    @contextlib.contextmanager
    def _on_loopback(self, what: str, *args: str) -> Iterator[str]:
        """A kubectl command that serves on 127.0.0.1 and says its port on its first line."""
        proc = spawn(
            [self.kubectl_bin, "--kubeconfig", self.kubeconfig, *self._scope(), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            match = re.search(r"127\.0\.0\.1:(\d+)", line)
            assert match, f"{what} said: {line}"
            yield f"http://127.0.0.1:{match.group(1)}"
        finally:
            proc.terminate()
            proc.wait(timeout=10)
