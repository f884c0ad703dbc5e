"""`make` checks the machine first: scripts/prereqs.sh names each missing prerequisite and
how to get it (README, Prerequisites)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "prereqs.sh"


def prereqs(what: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), what], capture_output=True, text=True, env={**os.environ, **env}, timeout=60
    )


def test_this_machine_has_what_the_local_suite_needs() -> None:
    proc = prereqs("local", PYTHON=sys.executable)
    assert proc.returncode == 0, proc.stderr


def test_a_python_outside_3_11_to_3_13_is_named_with_the_fix(tmp_path: Path) -> None:
    old = tmp_path / "python3"
    old.write_text('#!/bin/sh\necho "3.10"\n')
    old.chmod(0o755)
    proc = prereqs("local", PYTHON=str(old))
    assert proc.returncode == 1
    assert "Python 3.11-3.13" in proc.stderr and "is 3.10" in proc.stderr and "PYTHON=" in proc.stderr


def test_missing_go_is_named_with_the_version_needed(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sort", "head", "printf"):
        found = shutil.which(tool)
        assert found
        (bin_dir / tool).symlink_to(found)
    proc = prereqs("local", PYTHON=sys.executable, PATH=str(bin_dir))
    assert proc.returncode == 1
    assert "Go >= 1.24" in proc.stderr, proc.stderr


def test_too_little_disk_for_the_cluster_is_named_with_the_space_found() -> None:
    proc = prereqs("cluster", PYTHON=sys.executable, DISK_MIN_GB="100000000")
    assert proc.returncode == 1
    assert "100000000 GB free disk on /" in proc.stderr and "docker image prune" in proc.stderr, proc.stderr
