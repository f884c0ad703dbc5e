"""Embedded federated training: a SuperLink and one SuperNode per site as local processes.

`train_federated` starts them on 127.0.0.1 over TLS with SuperNode authentication (a CA
and site keys made for the run, under its work dir), submits the Flower App, follows the
run (status from the SuperLink, round progress from MLflow), and stops every process it
started whatever happens — success, failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from healthrisk import __version__
from healthrisk.contracts import (
    CHAMPION_ALIAS,
    METRIC_ROUND,
    METRIC_TRAIN_LOSS,
    REGISTERED_MODEL,
    SUPERLINK_PORT,
    TAG_LOCAL_RUN,
    TAG_MODEL_VERSION,
    TLS_CA_FILE,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    TRAINING_EXPERIMENT,
    TRIGGER_MANUAL,
    VAL_METRICS,
)
from healthrisk.data.loader import check_site
from healthrisk.data.window import DateWindow
from healthrisk.federated import capture
from healthrisk.federated.control import ControlClient, RunStatus, SuperLinkAddress, register_sites
from healthrisk.federated.pki import server_certificate, site_key_pair
from healthrisk.federated.run_config import RunConfig
from healthrisk.processes import (
    KILLED_EXIT_S,
    Child,
    ProcessError,
    ProcessGroup,
    free_port,
    venv_bin,
    wait_for_port,
)

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


# Between two starts of a restarted SuperNode (`LocalFederation.restart_site`).
SUPERNODE_RESTART_SECONDS = 2


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
    min_rows: int = RunConfig.min_rows
    per_site_metrics: bool = RunConfig.per_site_metrics
    dp_noise_multiplier: float = RunConfig.dp_noise_multiplier  # 0: no differential privacy
    dp_clipping_norm: float = RunConfig.dp_clipping_norm
    dp_delta: float = RunConfig.dp_delta
    dp_clipping: str = RunConfig.dp_clipping
    secure_aggregation: bool = RunConfig.secure_aggregation
    superlink_port: int = SUPERLINK_PORT  # 0 picks a free port
    timeout_seconds: float = 1800.0
    # Flower's own `flower-supernode` instead of `healthrisk-supernode` (benchmarks compare).
    stock_supernode: bool = False
    # Keep a copy of every message that passes the SuperLink (capture.py), for audits.
    capture_messages: bool = False
    # INSECURE: no TLS, no SuperNode authentication (benchmarks/privacy.py measures what
    # they cost); nothing in the CLI sets it.
    insecure: bool = False
    local_run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    champion_alias: str = CHAMPION_ALIAS
    data_fingerprint: str = ""

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
            min_rows=self.min_rows,
            per_site_metrics=self.per_site_metrics,
            dp_noise_multiplier=self.dp_noise_multiplier,
            dp_clipping_norm=self.dp_clipping_norm,
            dp_delta=self.dp_delta,
            dp_clipping=self.dp_clipping,
            secure_aggregation=self.secure_aggregation,
            champion_alias=self.champion_alias,
            data_fingerprint=self.data_fingerprint,
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


def superlink_argv(
    port: int, pki: Path | None, *, host: str = "127.0.0.1", database: Path | None = None
) -> list[str]:
    """A SuperLink over TLS that accepts only SuperNodes whose keys were registered;
    `pki=None` only for a request that says it is insecure."""
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
    if pki is None:
        argv.append("--insecure")
    else:
        argv += [
            # The CA goes to the SuperLink's own SuperExec, which dials this port on loopback.
            "--ssl-ca-certfile",
            str(pki / TLS_CA_FILE),
            "--ssl-certfile",
            str(pki / TLS_CERT_FILE),
            "--ssl-keyfile",
            str(pki / TLS_KEY_FILE),
            "--enable-supernode-auth",
        ]
    return [*argv, "--database", str(database)] if database is not None else argv


def supernode_argv(
    superlink: str,
    port: int,
    site: str,
    data_root: Path,
    *,
    root_certificates: Path | None,
    private_key: Path | None,
    stock: bool = False,
) -> list[str]:
    """A site's SuperNode: `healthrisk-supernode` (its ClientApp resident), or with `stock`
    Flower's own `flower-supernode` (a `flwr-clientapp` process per message), with the same
    arguments; `root_certificates=None` only for a SuperLink without TLS."""
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
    argv += ["--insecure"] if root_certificates is None else ["--root-certificates", str(root_certificates)]
    if private_key is not None:
        argv += ["--auth-supernode-private-key", str(private_key)]
    return argv


def next_run_number(tracking_uri: str, registered_name: str) -> int:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    return 1 + len(client.search_model_versions(f"name='{registered_name}'"))


def write_pki(pki: Path, sites: list[str]) -> None:
    """This run's CA and SuperLink certificate, and a key pair per site (private keys 0600)."""
    pki.mkdir(parents=True, exist_ok=True)
    tls = server_certificate([])
    (pki / TLS_CA_FILE).write_bytes(tls.ca_pem)
    (pki / TLS_CERT_FILE).write_bytes(tls.cert_pem)
    _write_private(pki / TLS_KEY_FILE, tls.key_pem)
    for site in sites:
        pair = site_key_pair()
        _write_private(pki / f"{site}.key", pair.private_openssh)
        (pki / f"{site}.key.pub").write_bytes(pair.public_openssh)


def _write_private(path: Path, content: bytes) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(content)


class LocalFederation:
    """A SuperLink and one SuperNode per site as local processes on 127.0.0.1.

    TLS with a CA made for this run, and SuperNode authentication: each site's public key
    is registered with the SuperLink before its SuperNode starts, and the SuperLink
    refuses any other. Everything lives under `work` (keys, logs, Flower homes).
    """

    def __init__(self, request: TrainingRequest, work: Path, group: ProcessGroup) -> None:
        self.request = request
        self.work = work
        self.group = group
        self.pki = None if request.insecure else work / "pki"
        self.port = request.superlink_port or free_port()
        self.database = work / "superlink.db" if request.capture_messages else None
        ca = None if self.pki is None else self.pki / TLS_CA_FILE
        self.address = SuperLinkAddress(f"127.0.0.1:{self.port}", ca)
        self.started = time.monotonic()

    def start(self) -> None:
        if self.pki is not None:
            write_pki(self.pki, self.request.sites)
        if self.database is not None:
            capture.install(self.database)
        link = self.group.start(
            "superlink",
            superlink_argv(self.port, self.pki, database=self.database),
            env=FLOWER_ENV | {"FLWR_HOME": str(self.work / "superlink")},
        )
        wait_for_port("127.0.0.1", self.port, timeout=60, child=link)
        if self.pki is None:
            for site in self.request.sites:
                self.start_supernode(f"supernode-{site}", site, None)
            return
        keys = {site: (self.pki / f"{site}.key.pub").read_bytes() for site in self.request.sites}
        with ControlClient(self.address) as control:
            register_sites(control, keys)
        for site in self.request.sites:
            self.start_supernode(f"supernode-{site}", site, self.pki / f"{site}.key")

    def start_supernode(self, name: str, site: str, private_key: Path | None) -> Child:
        return self.group.start(
            name,
            supernode_argv(
                self.address.address,
                free_port(),
                site,
                self.request.data_root,
                root_certificates=self.address.root_certificates,
                private_key=private_key,
                stock=self.request.stock_supernode,
            ),
            env=FLOWER_ENV | {"FLWR_HOME": str(self.work / name)},
        )

    def kill_site(self, site: str, sig: signal.Signals) -> None:
        """Kill the site's SuperNode and all it started, and stop watching it (a run
        fails when one of its processes dies): the fault of SPEC §10 that a run survives
        with `min-sites` left (tests/integration/test_site_loss.py, benchmarks/site_loss.py)."""
        child = next(c for c in self.group.children if c.name == f"supernode-{site}")
        self.group.children.remove(child)
        child.finish(child.signal(sig), time.monotonic() + KILLED_EXIT_S)

    def restart_site(self, site: str) -> None:
        """Start the site's SuperNode again with its key, and again each time it exits, as
        Kubernetes restarts the operator's recreated pod: the SuperLink refuses the key
        while it still counts the killed SuperNode connected (two heartbeats, 60 s)."""
        argv = supernode_argv(
            self.address.address,
            free_port(),
            site,
            self.request.data_root,
            root_certificates=self.address.root_certificates,
            private_key=None if self.pki is None else self.pki / f"{site}.key",
            stock=self.request.stock_supernode,
        )
        self.group.start(
            f"supernode-{site}",
            ["bash", "-c", f"until {shlex.join(argv)}; do sleep {SUPERNODE_RESTART_SECONDS}; done"],
            env=FLOWER_ENV | {"FLWR_HOME": str(self.work / f"supernode-{site}-restarted")},
        )

    def train(
        self, config: RunConfig, progress: Callable[[RoundProgress], None] | None = None
    ) -> TrainingResult:
        """Submit one run, follow it to its end and return what it registered."""
        import mlflow

        client = mlflow.MlflowClient(self.request.tracking_uri)
        with ControlClient(self.address) as control:
            flower_run = control.submit(config)
            try:
                status = _follow(
                    self.request, config, client, control, flower_run, self.group, progress, self.started
                )
            except BaseException:
                control.stop(flower_run)
                raise
        logs = self.work / "logs"
        if not status.succeeded:
            raise TrainingError(f"Flower run {flower_run} {status}; logs in {logs}")
        run = _mlflow_run(client, self.request.local_run_id)
        if run is None or TAG_MODEL_VERSION not in run.data.tags:
            raise TrainingError(
                f"Flower run {flower_run} finished without registering a model; logs in {logs}"
            )
        return TrainingResult(
            version=run.data.tags[TAG_MODEL_VERSION],
            metrics={k.removeprefix("val_"): v for k, v in run.data.metrics.items() if k in VAL_METRICS},
            mlflow_run_id=run.info.run_id,
            flower_run_id=flower_run,
            local_run_id=self.request.local_run_id,
            seconds=time.monotonic() - self.started,
            seconds_per_round=_seconds_per_round(client, run.info.run_id),
        )


@contextlib.contextmanager
def local_federation(request: TrainingRequest) -> Iterator[LocalFederation]:
    """The federation of `request`, up for the block; every process stopped after it."""
    # Embedded, every site's data is on this machine: refuse a bad file before any
    # process starts (a remote site reports the same error through its reply).
    for site in request.sites:
        check_site(request.data_root, site, request.window)
    work = request.work_dir.resolve() / request.local_run_id
    with ProcessGroup(work / "logs") as group:
        federation = LocalFederation(request, work, group)
        federation.start()
        yield federation


def train_federated(
    request: TrainingRequest, progress: Callable[[RoundProgress], None] | None = None
) -> TrainingResult:
    config = request.run_config(next_run_number(request.tracking_uri, request.registered_name))
    with local_federation(request) as federation:
        return federation.train(config, progress)


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
