"""Where things are: the repository, the cluster's kubeconfig, kubectl and helm."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from healthrisk.contracts import APP_NAME

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / APP_NAME
HARNESS_KUBECONFIG = REPO / ".cluster" / "kubeconfig"
CACHE = Path(os.environ.get("HEALTHRISK_CACHE", "/var/cache/health-risk"))


def kubeconfig() -> Path:
    """KUBECONFIG when set (any cluster), else the local harness's (`make cluster-up`)."""
    return Path(os.environ.get("KUBECONFIG") or HARNESS_KUBECONFIG)


def uses_harness() -> bool:
    """True when the tests talk to the local harness (no KUBECONFIG, or the harness's)."""
    return kubeconfig().resolve() == HARNESS_KUBECONFIG.resolve()


def find_tool(name: str) -> str:
    """kubectl or helm: the harness's pinned binary first, then PATH.

    Pinned first, so that every suite runs the version the harness was tested with
    whatever else is installed. With neither, `cluster/fetch-tools.sh` fetches the pinned
    ones (once, cached in /var/cache/health-risk).
    """
    for attempt in range(2):
        for candidate in (REPO / ".cluster" / "bin" / name, CACHE / "tools" / "bin" / name):
            if candidate.exists():
                return str(candidate)
        found = shutil.which(name)
        if found:
            return found
        if attempt == 0:
            subprocess.run(
                ["bash", str(REPO / "cluster" / "fetch-tools.sh")], capture_output=True, timeout=900
            )
    pytest.fail(
        f"`{name}` not found: `cluster/fetch-tools.sh` provides a pinned one, or put it on PATH",
        pytrace=False,
    )
