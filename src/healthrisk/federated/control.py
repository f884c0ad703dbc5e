"""Submit a run of the Flower App to a SuperLink and watch its status.

Submission goes through `flwr run` (the supported way to build and send a FAB);
status is read in-process through Flower's Control API client, so following a run
costs no process start per poll.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from healthrisk.federated.run_config import RunConfig
from healthrisk.processes import venv_bin

CONNECTION_NAME = "healthrisk"


class SubmitError(RuntimeError):
    pass


@dataclass(frozen=True)
class SuperLinkAddress:
    address: str  # host:port of the SuperLink (Fleet, Control and runtime on one port)
    root_certificates: Path | None = None  # None → insecure (loopback only)

    def config_toml(self) -> str:
        lines = [
            "[superlink]",
            f'default = "{CONNECTION_NAME}"',
            "",
            f"[superlink.{CONNECTION_NAME}]",
            f'address = "{self.address}"',
        ]
        if self.root_certificates is None:
            lines.append("insecure = true")
        else:
            lines.append(f'root-certificates = "{self.root_certificates.resolve()}"')
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RunStatus:
    status: str  # pending | starting | running | finished
    sub_status: str  # completed | failed | stopped | ""
    details: str

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def succeeded(self) -> bool:
        return self.finished and self.sub_status == "completed"

    def __str__(self) -> str:
        text = f"{self.status}:{self.sub_status}" if self.sub_status else self.status
        return f"{text} ({self.details})" if self.details else text


def app_dir() -> Path:
    return Path(str(files("healthrisk.federated") / "app"))


def flwr_home(superlink: SuperLinkAddress, home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(superlink.config_toml())
    return home


def submit(superlink: SuperLinkAddress, config: RunConfig, home: Path) -> int:
    """Send the Flower App with `config` to the SuperLink; return the Flower run id."""
    home = flwr_home(superlink, home)
    with tempfile.NamedTemporaryFile("w", suffix=".toml", dir=home, delete=False) as overrides:
        for key, value in config.to_flower().items():
            overrides.write(f"{key} = {json.dumps(value)}\n")
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0"}
    try:
        completed = subprocess.run(
            [
                venv_bin("flwr"),
                "run",
                str(app_dir()),
                CONNECTION_NAME,
                "--format",
                "json",
                "--run-config",
                overrides.name,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
    finally:
        os.unlink(overrides.name)
    reply = _last_json(completed.stdout)
    if completed.returncode != 0 or not reply.get("success"):
        raise SubmitError(
            f"flwr run failed (exit {completed.returncode}): "
            f"{reply.get('error-message') or completed.stderr.strip()[-2000:] or completed.stdout[-2000:]}"
        )
    return int(reply["run-id"])


def _last_json(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict):
                return parsed
    try:
        parsed = json.loads(stdout)
        return parsed if isinstance(parsed, dict) else {}
    except json.JSONDecodeError:
        return {}


class ControlClient:
    """Flower's Control API client for one SuperLink, kept open while following a run."""

    def __init__(self, superlink: SuperLinkAddress, home: Path) -> None:
        from flwr.cli.typing import SuperLinkConnection
        from flwr.cli.utils import init_http_client_from_connection

        os.environ["FLWR_HOME"] = str(flwr_home(superlink, home))
        connection = SuperLinkConnection(
            name=CONNECTION_NAME,
            address=superlink.address,
            root_certificates=str(superlink.root_certificates) if superlink.root_certificates else None,
            insecure=superlink.root_certificates is None,
        )
        # Flower announces the connection on stdout, which belongs to our JSON output.
        with contextlib.redirect_stdout(sys.stderr):
            self._client = init_http_client_from_connection(connection)

    def status(self, run_id: int) -> RunStatus:
        from flwr.common.serde import run_from_proto
        from flwr.proto.control_pb2 import ListRunsRequest

        response = self._client.ListRuns(ListRunsRequest(run_id=run_id))
        if run_id not in response.run_dict:
            raise SubmitError(f"the SuperLink does not know run {run_id}")
        run = run_from_proto(response.run_dict[run_id])
        return RunStatus(run.status.status, run.status.sub_status, run.status.details)

    def stop(self, run_id: int) -> None:
        from flwr.proto.control_pb2 import StopRunRequest

        self._client.StopRun(StopRunRequest(run_id=run_id))

    def close(self) -> None:
        self._client.close()
