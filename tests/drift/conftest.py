"""Site data with a smoke episode, and the drift/retrain commands as a typer app."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import typer
from drift_cases import NEW_DAYS, SITES, SMOKE

from healthrisk.data.generator import generate


@pytest.fixture(scope="session")
def drift_root(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared training data plus six new days, smoke at hospital_01 on the last three."""
    root = tmp_path_factory.mktemp("drift-data") / "data"
    shutil.copytree(data_root, root)
    generate(root, n_sites=len(SITES), window=NEW_DAYS, seed=42, drifts=[SMOKE])
    return root


@pytest.fixture
def site_copy(drift_root: Path, tmp_path: Path) -> Path:
    """A private copy of `drift_root` that a test may add files to."""
    root = tmp_path / "data"
    shutil.copytree(drift_root, root)
    return root


@pytest.fixture(scope="session")
def commands() -> typer.Typer:
    """`drift`, `retrain` and `monitor` mounted as the root CLI mounts them."""
    from healthrisk.drift.cli import app, monitor_command, retrain_command

    root = typer.Typer()
    root.add_typer(app, name="drift")
    root.command("retrain")(retrain_command)
    root.command("monitor")(monitor_command)
    return root
