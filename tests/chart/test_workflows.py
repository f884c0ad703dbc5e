"""The GitHub workflows are valid: actionlint (built from the Go module proxy, cached)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from chartkit import CACHE, REPO

ACTIONLINT_VERSION = "v1.7.12"  # the same pin as the lint job in .github/workflows/ci.yaml


def actionlint() -> str:
    gobin = CACHE / "tools" / f"actionlint-{ACTIONLINT_VERSION}"
    binary = gobin / "actionlint"
    if binary.exists():
        return str(binary)
    go = shutil.which("go")
    if not go:
        pytest.fail("actionlint is built with Go (`go install`), and no `go` is on PATH")
    gobin.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(gobin), "GOFLAGS": "-buildvcs=false"}
    build = subprocess.run(
        [go, "install", f"github.com/rhysd/actionlint/cmd/actionlint@{ACTIONLINT_VERSION}"],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert build.returncode == 0, f"building actionlint failed:\n{build.stderr}"
    return str(binary)


def test_workflows_pass_actionlint() -> None:
    workflows = sorted((REPO / ".github" / "workflows").glob("*.y*ml"))
    assert {w.stem for w in workflows} >= {"ci", "release", "drift-check"}
    # actionlint also runs shellcheck on every run: block when shellcheck is installed
    proc = subprocess.run(
        [actionlint(), "-no-color", *map(str, workflows)], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
