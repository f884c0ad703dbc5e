"""`healthrisk` — the platform on one machine, from the same code the cluster runs."""

from __future__ import annotations

import json
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from healthrisk.contracts import (
    CHAMPION_ALIAS,
    ENV_SERVER_ADDRESS,
    ENV_TRACKING_URI,
    MLFLOW_PORT,
    REGISTERED_MODEL,
    SUPERLINK_PORT,
    SUPERNODE_FIRST_PORT,
    TRIGGER_MANUAL,
)
from healthrisk.data.window import DateWindow
from healthrisk.federated.run_config import RunConfig

CLI_ENTRY_POINTS = "healthrisk.cli"

console = Console(stderr=True)
app = typer.Typer(
    name="healthrisk",
    help="Federated health-risk models: data, Flower training, MLflow registry, drift, serving.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(help="Site data: generate synthetic sites, list a site's days.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _window(value: str) -> DateWindow:
    try:
        return DateWindow.parse(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _tracking_uri(value: str | None) -> str:
    uri = value or os.environ.get(ENV_TRACKING_URI)
    if not uri:
        raise typer.BadParameter(f"give --tracking-uri or set {ENV_TRACKING_URI}")
    return uri


TrackingUri = Annotated[
    str | None, typer.Option("--tracking-uri", help=f"MLflow tracking URI (default ${ENV_TRACKING_URI})")
]


@data_app.command("generate")
def data_generate(
    root: Annotated[
        Path, typer.Option("--root", help="data root: <root>/<site>/<YYYY-MM-DD>.parquet")
    ] = Path("data"),
    sites: Annotated[int, typer.Option(min=1, max=50, help="number of sites")] = 3,
    window: Annotated[str, typer.Option("--window", help="FROM..TO, inclusive")] = "2024-01-01..2024-01-14",
    seed: Annotated[int, typer.Option(help="random seed; same seed, same rows")] = 42,
    drift: Annotated[
        list[str] | None,
        typer.Option(
            help="KIND:SITE:FROM..TO with KIND in smoke, firmware, heatwave, label-noise, concept, sensor; "
            "repeatable"
        ),
    ] = None,
    file_format: Annotated[str, typer.Option("--format", help="parquet or csv")] = "parquet",
    rows_per_day: Annotated[
        int | None, typer.Option(min=1, help="rows per site per day (default: each site's own, 160-240)")
    ] = None,
) -> None:
    """Write synthetic non-IID site data, optionally with injected drift."""
    from healthrisk.data.generator import DriftSpec, generate

    if file_format not in ("parquet", "csv"):
        raise typer.BadParameter(f"--format must be parquet or csv, got {file_format!r}")
    try:
        drifts = [DriftSpec.parse(d) for d in drift or []]
        written = generate(
            root,
            n_sites=sites,
            window=_window(window),
            seed=seed,
            drifts=drifts,
            file_format=file_format,
            rows_per_day=rows_per_day,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    console.print(f"wrote {len(written)} files for {sites} sites under {root}")


@data_app.command("days")
def data_days(
    site: Annotated[str, typer.Option("--site", help="the site whose days to list")],
    root: Annotated[Path, typer.Option("--data-root", help="one folder per site")] = Path("data"),
) -> None:
    """Print one JSON line {"site", "days"}: the dates the site has a file for, as FROM..TO runs.

    File names only, nothing is read: what the operator resolves a rolling window from.
    """
    from healthrisk.data.loader import DataError, site_days
    from healthrisk.data.window import day_runs

    try:
        days = site_days(root, site)
    except DataError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps({"site": site, "days": [str(run) for run in day_runs(days)]}))


@app.command("mlflow")
def mlflow_server(
    state_dir: Annotated[Path, typer.Option(help="sqlite database and artifacts live here")] = Path(
        ".state/mlflow"
    ),
    host: Annotated[
        str, typer.Option(help="a loopback address: the server is unauthenticated")
    ] = "127.0.0.1",
    port: int = MLFLOW_PORT,
) -> None:
    """Run a local MLflow tracking server (sqlite + artifact dir, one worker, no job runner).

    It has no authentication, so it listens on loopback only: anyone who reaches it could
    register versions and move aliases. The Helm chart runs MLflow with authentication.
    """
    from healthrisk.processes import MLFLOW_SERVER_ENV, mlflow_server_argv

    try:
        argv = mlflow_server_argv(state_dir, host, port)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--host") from exc
    state_dir.mkdir(parents=True, exist_ok=True)
    console.print(
        f"[yellow]MLflow on http://{host}:{port} is UNAUTHENTICATED (loopback only): any local user can "
        "register models and move aliases; the Helm chart runs it with authentication.[/]"
    )
    os.execve(argv[0], argv, {**os.environ, **MLFLOW_SERVER_ENV})


train_app = typer.Typer(help="Federated training.")
app.add_typer(train_app, name="train")


@train_app.callback(invoke_without_command=True)
def train(
    ctx: typer.Context,
    data_root: Annotated[Path, typer.Option(help="data root with one folder per site")] = Path("data"),
    sites: Annotated[str, typer.Option(help="comma-separated site names, or 'all'")] = "all",
    window: Annotated[str, typer.Option(help="training window FROM..TO")] = "2024-01-01..2024-01-14",
    rounds: Annotated[int, typer.Option(min=1, max=1000)] = 5,
    strategy: Annotated[str, typer.Option(help="FedAvg or FedProx")] = "FedAvg",
    proximal_mu: Annotated[float, typer.Option(min=0.0)] = 0.0,
    local_epochs: Annotated[int, typer.Option(min=1, max=100)] = RunConfig.local_epochs,
    model_name: Annotated[str, typer.Option("--model-name")] = REGISTERED_MODEL,
    tracking_uri: TrackingUri = None,
    superlink_port: Annotated[int, typer.Option(help="0 picks a free port")] = SUPERLINK_PORT,
    promote_alias: Annotated[
        str | None, typer.Option("--promote", help="promote to this alias if good enough (e.g. champion)")
    ] = None,
    max_auc_drop: Annotated[float, typer.Option(min=0.0)] = 0.0,
    work_dir: Annotated[Path, typer.Option(help="logs and Flower state")] = Path(".state/flower"),
) -> None:
    """Train federatedly on this machine: a SuperLink and one SuperNode per site."""
    if ctx.invoked_subcommand is not None:
        return
    from healthrisk.data.loader import DataError, list_sites
    from healthrisk.workflows import run_training

    site_list = (
        list_sites(data_root) if sites == "all" else [s.strip() for s in sites.split(",") if s.strip()]
    )
    try:
        outcome = run_training(
            data_root=data_root,
            sites=site_list,
            window=_window(window),
            rounds=rounds,
            strategy=strategy,
            proximal_mu=proximal_mu,
            local_epochs=local_epochs,
            model_name=model_name,
            tracking_uri=_tracking_uri(tracking_uri),
            superlink_port=superlink_port,
            work_dir=work_dir,
            promote_alias=promote_alias,
            max_auc_drop=max_auc_drop,
            trigger=TRIGGER_MANUAL,
            console=console,
        )
    except DataError as exc:
        console.print(f"[red]data refused:[/red] {exc}")
        raise typer.Exit(2) from exc
    print(json.dumps(outcome.as_dict(), default=str))


@train_app.command("submit")
def train_submit(
    superlink: Annotated[
        str, typer.Option(help="SuperLink Control API host:port", envvar=ENV_SERVER_ADDRESS)
    ],
    run_config_json: Annotated[str, typer.Option(help="run config as JSON (keys as in the Flower App)")],
    insecure: Annotated[
        bool, typer.Option(help="no TLS: only for a FederatedTraining that opted out of it")
    ] = False,
    root_certificates: Annotated[
        Path | None, typer.Option(help="CA bundle that signed the SuperLink")
    ] = None,
    client_certificate: Annotated[
        Path | None, typer.Option(help="certificate for a Control API that asks for one (with --client-key)")
    ] = None,
    client_key: Annotated[Path | None, typer.Option(help="private key of --client-certificate")] = None,
    timeout: Annotated[float, typer.Option(help="give up after this many seconds")] = 3600.0,
) -> None:
    """Submit one run to a running SuperLink and wait for it (what the operator's submit pod runs)."""
    from healthrisk.federated.control import ControlError, SuperLinkAddress
    from healthrisk.workflows import submit_and_wait

    if insecure == (root_certificates is not None):
        raise typer.BadParameter("give --root-certificates, or --insecure for a run without TLS")
    if (client_certificate is None) != (client_key is None):
        raise typer.BadParameter("--client-certificate and --client-key go together")
    client = (client_certificate, client_key) if client_certificate and client_key else None
    try:
        status = submit_and_wait(
            SuperLinkAddress(superlink, root_certificates, client), run_config_json, timeout
        )
    except ControlError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    print(json.dumps({"status": str(status), "succeeded": status.succeeded}))
    if not status.succeeded:
        raise typer.Exit(1)


@app.command("supernode")
def supernode(
    site: Annotated[str, typer.Option(help="this site's name")],
    data_root: Annotated[Path, typer.Option(help="this site's data root")] = Path("/data"),
    superlink: Annotated[
        str, typer.Option(help="SuperLink host:port", envvar=ENV_SERVER_ADDRESS)
    ] = f"127.0.0.1:{SUPERLINK_PORT}",
    port: Annotated[int, typer.Option(help="local ClientAppIo port")] = SUPERNODE_FIRST_PORT,
    insecure: Annotated[bool, typer.Option(help="no TLS: only against a SuperLink without it")] = False,
    root_certificates: Annotated[
        Path | None, typer.Option(help="CA bundle that signed the SuperLink")
    ] = None,
    auth_private_key: Annotated[Path | None, typer.Option(help="SuperNode authentication key")] = None,
) -> None:
    """Run this site's SuperNode against a SuperLink (SERVER_ADDRESS)."""
    from healthrisk.federated.runner import FLOWER_ENV, supernode_argv

    if insecure == (root_certificates is not None):
        raise typer.BadParameter("give --root-certificates, or --insecure against a SuperLink without TLS")
    argv = supernode_argv(
        superlink, port, site, data_root, root_certificates=root_certificates, private_key=auth_private_key
    )
    os.execve(argv[0], argv, {**os.environ, **FLOWER_ENV})


@app.command("promote")
def promote(
    version: Annotated[str, typer.Option(help="model version to consider")],
    model_name: Annotated[str, typer.Option("--model-name")] = REGISTERED_MODEL,
    alias: str = CHAMPION_ALIAS,
    max_auc_drop: Annotated[float, typer.Option(min=0.0)] = 0.0,
    tracking_uri: TrackingUri = None,
) -> None:
    """Give VERSION the serving alias if its AUC ≥ the champion's − max-auc-drop."""
    import mlflow

    from healthrisk.provenance import ensure_signing_key, signing_key_file
    from healthrisk.registry import promote as decide

    client = mlflow.MlflowClient(_tracking_uri(tracking_uri))
    key = ensure_signing_key(signing_key_file())
    decision = decide(client, model_name, version, signing_key=key, alias=alias, max_auc_drop=max_auc_drop)
    colour = "green" if decision.promoted else "yellow"
    console.print(
        f"[{colour}]version {version}: {'promoted' if decision.promoted else 'not promoted'}[/]"
        f" — {decision.reason}"
    )
    print(json.dumps(decision.as_dict()))


@app.command("demo")
def demo(
    state_dir: Annotated[Path, typer.Option(help="everything the demo writes")] = Path(".state/demo"),
    rounds: Annotated[int, typer.Option(min=1)] = 5,
    wait: Annotated[
        bool | None, typer.Option(help="keep MLflow and the API up until Ctrl-C (default: if a terminal)")
    ] = None,
) -> None:
    """The main job end to end: data → Flower → MLflow → promotion → predictions."""
    from healthrisk.demo import run_demo

    run_demo(state_dir, rounds=rounds, wait=sys.stdin.isatty() if wait is None else wait, console=console)


def _register_subcommands() -> None:
    from healthrisk.drift.cli import app as drift_app
    from healthrisk.drift.cli import monitor_command, retrain_command
    from healthrisk.federated.cli import app as federation_app

    app.command("retrain")(retrain_command)
    app.command("monitor")(monitor_command)
    app.add_typer(drift_app, name="drift")
    app.add_typer(federation_app, name="federation")
    # `serve` and `operator` are registered by the packages that provide them (pyproject's
    # entry-point group CLI_ENTRY_POINTS). The inference and operator images start their own
    # entry points, so this umbrella CLI only runs where the whole package is installed.
    for entry in entry_points(group=CLI_ENTRY_POINTS):
        app.add_typer(entry.load(), name=entry.name)


_register_subcommands()


def main() -> None:
    app()
