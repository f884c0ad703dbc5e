"""Site data with a smoke episode, and the drift/retrain commands as a typer app."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import typer
from drift_cases import NEW_DAYS, REFERENCE, SITES, SMOKE

from healthrisk.data.generator import generate
from healthrisk.data.loader import load_site
from healthrisk.federated.inprocess import train_in_process
from healthrisk.federated.model import ServedModel


@pytest.fixture(scope="session")
def drift_root(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared training data plus six new days, smoke at hospital_01 on the last three."""
    root = tmp_path_factory.mktemp("drift-data") / "data"
    shutil.copytree(data_root, root)
    generate(root, n_sites=len(SITES), window=NEW_DAYS, seed=42, drifts=[SMOKE])
    return root


@pytest.fixture(scope="session")
def champion_model(data_root: Path) -> ServedModel:
    """The model `healthrisk train` would register for the shared training data."""
    return train_in_process({site: load_site(data_root, site, REFERENCE) for site in SITES})


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
