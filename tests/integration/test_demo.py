"""`healthrisk demo` end to end, as a newcomer runs it (real MLflow, Flower, uvicorn)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_trains_promotes_serves_and_hot_swaps_after_drift(tmp_path: Path) -> None:
    argv = ["demo", "--no-wait", "--rounds", "2", "--state-dir", str(tmp_path)]
    completed = subprocess.run(
        [sys.executable, "-m", "healthrisk", *argv],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    # act 1: a champion serves predictions that name their model version
    assert re.search(r"version 1 promoted to champion", output), output[-4000:]
    assert re.search(r"typical adult\s+│\s+0\.\d+\s+│\s+(low|moderate|high)\s+│\s+1", output), output[-4000:]
    # act 2, at the default threshold: drift at the smoke site only, a retrain, a decision,
    # and the API follows the champion
    assert "at the default threshold 0.5" in output
    assert re.search(r"hospital_01.*\n(.*\n)*?\s+DRIFT: drift score (0\.[5-9]\d|1\.00)", output)
    assert "drift at 1 of 3 sites (hospital_01)" in output
    # the retrain on the smoky days is promoted and the running API swaps to it
    assert re.search(r"version 2, AUC 0\.\d+ → promoted", output), output[-4000:]
    assert re.search(r"switched from v1 to v2 .* without a restart", output), output[-4000:]
    assert re.search(r"sedentary, heavy smoke → risk 0\.\d+ from v2", output), output[-4000:]
    assert "wall time by stage" in output
    assert list((tmp_path / "drift-reports" / "hospital_01").glob("*.html"))
