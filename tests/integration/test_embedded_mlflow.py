"""`healthrisk mlflow`: the embedded registry has no authentication, so it stays on loopback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from healthrisk.processes import ProcessGroup, free_port, require_loopback, venv_bin, wait_for_http

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_are_accepted(host: str) -> None:
    require_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "mlflow.example.org"])
def test_any_other_host_is_refused_before_anything_starts(host: str, tmp_path: Path) -> None:
    state = tmp_path / "mlflow"
    refused = subprocess.run(
        [venv_bin("healthrisk"), "mlflow", "--host", host, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "unauthenticated" in refused.stderr and "loopback only" in refused.stderr
    assert not state.exists()


def test_the_embedded_server_says_it_is_unauthenticated(tmp_path: Path) -> None:
    port = free_port()
    with ProcessGroup(tmp_path / "logs") as group:
        child = group.start(
            "mlflow",
            [venv_bin("healthrisk"), "mlflow", "--port", str(port), "--state-dir", str(tmp_path / "m")],
        )
        wait_for_http(f"http://127.0.0.1:{port}/health", timeout=120, child=child)
        assert "UNAUTHENTICATED" in child.log_path.read_text()
