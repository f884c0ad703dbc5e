"""The manifests README tells users to apply are accepted by a real API server."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "charts/health-risk/files/federatedtrainings.healthrisk.io.yaml"


def _kubectl(*args: str) -> subprocess.CompletedProcess[str]:
    kubectl = shutil.which("kubectl", path=f"{REPO / '.cluster/bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    assert kubectl, "kubectl not found: run `make cluster-up` (pinned kubectl in .cluster/bin)"
    env = {**os.environ, "KUBECONFIG": os.environ.get("KUBECONFIG", str(REPO / ".cluster/kubeconfig"))}
    return subprocess.run([kubectl, *args], capture_output=True, text=True, env=env, timeout=60, check=False)


@pytest.mark.parametrize("example", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_is_accepted_by_the_api_server(example: Path) -> None:
    reachable = _kubectl("get", "--raw", "/readyz")
    assert reachable.returncode == 0, f"no reachable cluster: {reachable.stderr}; run `make cluster-up`"
    assert _kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD)).returncode == 0
    applied = _kubectl("apply", "--dry-run=server", "-n", "default", "-f", str(example))
    assert applied.returncode == 0, applied.stderr
    assert "(server dry run)" in applied.stdout
