"""Helpers shared by the cluster tests (kubectl wrapper, tool lookup)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HARNESS_KUBECONFIG = REPO / ".cluster" / "kubeconfig"
CACHE = Path(os.environ.get("HEALTHRISK_CACHE", "/var/cache/health-risk"))


def uses_harness() -> bool:
    """True when the tests talk to the local harness (no KUBECONFIG, or the harness's)."""
    env = os.environ.get("KUBECONFIG")
    return not env or Path(env).resolve() == HARNESS_KUBECONFIG.resolve()


def find_tool(name: str) -> str:
    """The pinned binary from the harness if there, else one on PATH."""
    for cand in (REPO / ".cluster" / "bin" / name, CACHE / "tools" / "bin" / name):
        if cand.exists():
            return str(cand)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"`{name}` not found: run `make cluster-up` (it provides a pinned one) or put it on PATH")
    return found


@dataclass
class Kube:
    kubeconfig: str
    kubectl: str

    def run(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.kubectl, "--kubeconfig", self.kubeconfig, *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def out(self, *args: str, **kw: object) -> str:
        return self.run(*args, **kw).stdout  # type: ignore[arg-type]

    def apply(self, manifest: str, namespace: str | None = None) -> None:
        ns = ["-n", namespace] if namespace else []
        self.run(*ns, "apply", "-f", "-", input=manifest)

    def json(self, *args: str) -> dict:
        return json.loads(self.out(*args, "-o", "json"))

    def wait_for(self, what: str, predicate, timeout: float = 180, interval: float = 1.0):
        """Poll `predicate()` until truthy; fail with `what` and the last value otherwise."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
            except AssertionError as exc:  # kubectl failing is worth retrying
                last = exc
            else:
                if last:
                    return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")

    def wait_for_endpoints(self, namespace: str, service: str, timeout: float = 60) -> list[str]:
        """Addresses of the Service's ready endpoints, once it has one.

        `rollout status` returns when the pods are ready; the EndpointSlice controller
        publishes them a moment later, and kube-proxy programs its rules after that, so a
        client that connects right after a rollout can be refused. Wait for the first step
        here; a client in the cluster still retries a refused connection for a bounded time.
        """

        def ready() -> list[str]:
            slices = self.json(
                "-n", namespace, "get", "endpointslices", "-l", f"kubernetes.io/service-name={service}"
            )["items"]
            return [
                address
                for eps in slices
                for endpoint in eps.get("endpoints") or []
                if endpoint.get("conditions", {}).get("ready")
                for address in endpoint["addresses"]
            ]

        return self.wait_for(f"a ready endpoint of service {namespace}/{service}", ready, timeout=timeout)


@dataclass
class SmokeImage:
    ref: str
    marker: str
