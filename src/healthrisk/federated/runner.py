"""Embedded federated training: a SuperLink and one SuperNode per site as local processes.

`train_federated` starts them on 127.0.0.1, submits the Flower App, follows the run
(status from the SuperLink, round progress from MLflow), and stops every process it
started whatever happens — success, failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from healthrisk import __version__
from healthrisk.contracts import (
    METRIC_ROUND,
    METRIC_TRAIN_LOSS,
    REGISTERED_MODEL,
    SUPERLINK_PORT,
    TAG_LOCAL_RUN,
    TAG_MODEL_VERSION,
    TRAINING_EXPERIMENT,
    TRIGGER_MANUAL,
    VAL_METRICS,
)
from healthrisk.data.loader import check_site
from healthrisk.data.window import DateWindow
from healthrisk.federated.control import ControlClient, RunStatus, SuperLinkAddress, submit
from healthrisk.federated.run_config import RunConfig
from healthrisk.processes import ProcessError, ProcessGroup, free_port, venv_bin, wait_for_port

# Flower finds its helper executables (flower-superexec, flwr-serverapp, flwr-clientapp)
# on PATH: put the interpreter's own bin directory first.
# FLWR_SUPEREXEC_TASK_POLL_INTERVAL: the SuperExec otherwise waits up to 1 s before it
# starts the ServerApp/ClientApp process of a waiting task, every round. 0.2 s, not less:
# idle, the four SuperExecs of a 3-site run burn 0.09 CPU-s per second at 0.2 s, 0.24 at
# 0.05 s and 0.06 at 1 s (measured on 2 cores), and CPU is what a round is short of.
if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2",
    "PYTHONUNBUFFERED": "1",
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
}


class TrainingError(RuntimeError):
    pass


@dataclass(frozen=True)
class RoundProgress:
    round: int
    rounds: int
    metrics: dict[str, float]


@dataclass
class TrainingRequest:
    data_root: Path
    sites: list[str]
    window: DateWindow
    tracking_uri: str
    rounds: int = 5
    registered_name: str = REGISTERED_MODEL
    trigger: str = TRIGGER_MANUAL
    work_dir: Path = Path(".state/flower")
    local_epochs: int = RunConfig.local_epochs
    learning_rate: float = 0.1
    strategy: str = "FedAvg"
    proximal_mu: float = 0.0
    min_sites: int | None = None
    superlink_port: int = SUPERLINK_PORT  # 0 picks a free port
    timeout_seconds: float = 1800.0
    # Flower's own `flower-supernode` instead of `healthrisk-supernode` (benchmarks compare).
    stock_supernode: bool = False
    local_run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def run_config(self, run_number: int) -> RunConfig:
        return RunConfig(
            num_server_rounds=self.rounds,
            local_epochs=self.local_epochs,
            learning_rate=self.learning_rate,
            proximal_mu=self.proximal_mu,
            strategy=self.strategy,
            min_sites=self.min_sites or len(self.sites),
            data_from=self.window.start.isoformat(),
            data_to=self.window.end.isoformat(),
            tracking_uri=self.tracking_uri,
            registered_model=self.registered_name,
            local_run_id=self.local_run_id,
            run_number=run_number,
            trigger=self.trigger,
            code_version=__version__,
        )


@dataclass(frozen=True)
class TrainingResult:
    version: str
    metrics: dict[str, float]
    mlflow_run_id: str
    flower_run_id: int
    local_run_id: str
    seconds: float
    seconds_per_round: float


def superlink_argv(port: int, host: str = "127.0.0.1", *, insecure: bool = True) -> list[str]:
    argv = [
        venv_bin("flower-superlink"),
        "--host",
        host,
        "--port",
        str(port),
        "--isolation",
        "subprocess",
        "--disable-runtime-dependency-installation",
    ]
    return [*argv, "--insecure"] if insecure else argv


def supernode_argv(
    superlink: str, port: int, site: str, data_root: Path, *, insecure: bool = True, stock: bool = False
) -> list[str]:
    """`healthrisk-supernode` (its ClientApp resident), or with `stock` Flower's own
    `flower-supernode` (a `flwr-clientapp` process per message); the same arguments."""
    argv = [
        venv_bin("flower-supernode" if stock else "healthrisk-supernode"),
        "--superlink",
        superlink,
        "--port",
        str(port),
        "--node-config",
        f'site="{site}" data-root="{data_root.resolve()}"',
    ]
    if stock:
        argv += ["--isolation", "subprocess"]
    return [*argv, "--insecure"] if insecure else argv


def next_run_number(tracking_uri: str, registered_name: str) -> int:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    return 1 + len(client.search_model_versions(f"name='{registered_name}'"))


def train_federated(
    request: TrainingRequest, progress: Callable[[RoundProgress], None] | None = None
) -> TrainingResult:
    import mlflow

    # Embedded, every site's data is on this machine: refuse a bad file before any
    # process starts (a remote site reports the same error through its reply).
    for site in request.sites:
        check_site(request.data_root, site, request.window)
    config = request.run_config(next_run_number(request.tracking_uri, request.registered_name))
    work = request.work_dir.resolve() / request.local_run_id
    client = mlflow.MlflowClient(request.tracking_uri)
    started = time.monotonic()
    with ProcessGroup(work / "logs") as group:
        port = request.superlink_port or free_port()
        link = group.start(
            "superlink", superlink_argv(port), env=FLOWER_ENV | {"FLWR_HOME": str(work / "superlink")}
        )
        wait_for_port("127.0.0.1", port, timeout=60, child=link)
        for site in request.sites:
            group.start(
                f"supernode-{site}",
                supernode_argv(
                    f"127.0.0.1:{port}", free_port(), site, request.data_root, stock=request.stock_supernode
                ),
                env=FLOWER_ENV | {"FLWR_HOME": str(work / f"supernode-{site}")},
            )
        address = SuperLinkAddress(f"127.0.0.1:{port}")
        flower_run = submit(address, config, work / "cli")
        control = ControlClient(address, work / "cli")
        try:
            status = _follow(request, config, client, control, flower_run, group, progress, started)
        except BaseException:
            control.stop(flower_run)
            raise
        finally:
            control.close()
    if not status.succeeded:
        raise TrainingError(f"Flower run {flower_run} {status}; logs in {work / 'logs'}")
    run = _mlflow_run(client, request.local_run_id)
    if run is None or TAG_MODEL_VERSION not in run.data.tags:
        raise TrainingError(
            f"Flower run {flower_run} finished without registering a model; logs in {work / 'logs'}"
        )
    seconds = time.monotonic() - started
    return TrainingResult(
        version=run.data.tags[TAG_MODEL_VERSION],
        metrics={k.removeprefix("val_"): v for k, v in run.data.metrics.items() if k in VAL_METRICS},
        mlflow_run_id=run.info.run_id,
        flower_run_id=flower_run,
        local_run_id=request.local_run_id,
        seconds=seconds,
        seconds_per_round=_seconds_per_round(client, run.info.run_id),
    )


def _follow(
    request: TrainingRequest,
    config: RunConfig,
    client: MlflowClient,
    control: ControlClient,
    flower_run: int,
    group: ProcessGroup,
    progress: Callable[[RoundProgress], None] | None,
    started: float,
) -> RunStatus:
    reported = -1
    while True:
        group.check_alive()
        status = control.status(flower_run)
        run = _mlflow_run(client, request.local_run_id)
        if run is not None and progress is not None:
            current = int(run.data.metrics.get(METRIC_ROUND, 0))
            if current > reported:
                reported = current
                progress(RoundProgress(current, config.num_server_rounds, dict(run.data.metrics)))
        if status.finished:
            return status
        if time.monotonic() - started > request.timeout_seconds:
            raise TrainingError(
                f"Flower run {flower_run} did not finish within {request.timeout_seconds:.0f} s"
            )
        time.sleep(0.5)


def _mlflow_run(client: MlflowClient, local_run_id: str) -> Run | None:
    experiment = client.get_experiment_by_name(TRAINING_EXPERIMENT)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{TAG_LOCAL_RUN}` = '{local_run_id}'", max_results=1
    )
    return runs[0] if runs else None


def _seconds_per_round(client: MlflowClient, mlflow_run_id: str) -> float:
    """Wall time between the first and last round's metrics, per round."""
    history = sorted(client.get_metric_history(mlflow_run_id, METRIC_TRAIN_LOSS), key=lambda m: m.step)
    if len(history) < 2:
        return float("nan")
    return (history[-1].timestamp - history[0].timestamp) / 1000 / (len(history) - 1)


__all__ = [
    "ProcessError",
    "RoundProgress",
    "TrainingError",
    "TrainingRequest",
    "TrainingResult",
    "train_federated",
]
