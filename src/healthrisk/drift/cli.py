"""`healthrisk drift ...`, `healthrisk retrain`, `healthrisk monitor`: options, output, exit codes.

The work is done by healthrisk.drift.workflows. `retrain_command` and `monitor_command` are
plain functions with typer annotations; the root app registers them as top-level commands.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

from healthrisk.contracts import (
    CHAMPION_ALIAS,
    ENV_DATA_ROOT,
    ENV_DRIFT_THRESHOLD,
    ENV_TRACKING_URI,
    REGISTERED_MODEL,
)
from healthrisk.data.loader import DataError, list_sites
from healthrisk.data.window import DateWindow
from healthrisk.drift import render
from healthrisk.drift.check import DriftOptions
from healthrisk.drift.monitor import DriftRound
from healthrisk.drift.policy import RetrainPolicy, parse_duration, resolve_threshold
from healthrisk.drift.reference import (
    ChampionWindows,
    NoReferenceWindow,
    champion_windows,
    optional_champion_windows,
)
from healthrisk.drift.retrain import Trigger
from healthrisk.drift.workflows import build_monitor, check_round, retrain_all_sites

if TYPE_CHECKING:
    from mlflow import MlflowClient

app = typer.Typer(help="Check each site's data for drift against its reference window.", no_args_is_help=True)
console = Console(stderr=True)

# 1 is an error and 2 a usage error (typer); drift gets its own code for scripts and CI.
DRIFT_EXIT_CODE = 3
DEFAULT_REPORT_DIR = Path(".state/drift")
DEFAULT_WORK_DIR = Path(".state/retrain")

DataRoot = Annotated[Path, typer.Option("--data-root", envvar=ENV_DATA_ROOT, help="One folder per site.")]
TrackingUri = Annotated[
    str | None, typer.Option("--tracking-uri", envvar=ENV_TRACKING_URI, help="MLflow tracking server.")
]
ModelName = Annotated[
    str, typer.Option("--model-name", help="Registered model (its champion is the reference).")
]
Alias = Annotated[str, typer.Option("--alias", help="Serving alias of the registered model.")]
Threshold = Annotated[
    float | None,
    typer.Option(
        "--threshold",
        envvar=ENV_DRIFT_THRESHOLD,
        help="A site drifts when its share of drifted columns is at least this (default 0.5).",
    ),
]
Policy = Annotated[
    RetrainPolicy, typer.Option("--policy", help="Retrain on `any` drifting site or a `majority`.")
]
Sites = Annotated[list[str] | None, typer.Option("--site", help="Site to check (repeatable).")]
ReportDir = Annotated[
    Path, typer.Option("--report-dir", help="Where the Evidently HTML reports are kept (at the site).")
]
Rounds = Annotated[int, typer.Option("--rounds", min=1, help="Federated rounds.")]
MaxAucDrop = Annotated[
    float, typer.Option("--max-auc-drop", min=0.0, help="Promotion tolerance on the AUC (SPEC §4).")
]
WorkDir = Annotated[Path, typer.Option("--work-dir", help="Scratch space of federated runs.")]
EvidentlyDefaults = Annotated[
    bool,
    typer.Option(
        "--evidently-defaults",
        help="Use Evidently's default tests and thresholds instead of the calibrated per-column PSI.",
    ),
]


def _fail(message: str, code: int = 1) -> NoReturn:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _window(text: str, what: str) -> DateWindow:
    try:
        return DateWindow.parse(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=what) from exc


def _client(tracking_uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _choose_sites(data_root: Path, sites: Sequence[str] | None, all_sites: bool) -> list[str]:
    if all_sites and sites:
        raise typer.BadParameter("give --site or --all-sites, not both", param_hint="--site")
    if all_sites:
        found = list_sites(data_root)
        if not found:
            _fail(f"no site folders under {data_root}")
        return found
    if not sites:
        raise typer.BadParameter("give --site SITE (repeatable) or --all-sites", param_hint="--site")
    return list(sites)


def _reference(
    reference: str | None, tracking_uri: str | None, model_name: str, alias: str
) -> DateWindow | ChampionWindows:
    if reference is not None:
        return _window(reference, "--reference")
    if tracking_uri is None:
        _fail("no --reference given and no --tracking-uri to read the champion's training window from")
    return champion_windows(_client(tracking_uri), model_name, alias)


def _check_round(
    data_root: Path,
    sites: Sequence[str],
    *,
    current: Callable[[str], DateWindow],
    reference: DateWindow | ChampionWindows,
    threshold: float,
    policy: RetrainPolicy,
    evidently_defaults: bool,
    report_dir: Path,
    tracking_uri: str | None,
) -> DriftRound:
    options = DriftOptions.evidently_defaults() if evidently_defaults else DriftOptions.calibrated()
    with render.checking(console) as on_site:
        return check_round(
            data_root,
            sites,
            current=current,
            reference=reference,
            threshold=threshold,
            policy=policy,
            options=options,
            report_dir=report_dir,
            client=_client(tracking_uri) if tracking_uri else None,
            on_site=on_site,
        )


@app.command("check")
def check_command(
    current: Annotated[str, typer.Option("--current", help="Window to check, FROM..TO (inclusive).")],
    site: Sites = None,
    all_sites: Annotated[bool, typer.Option("--all-sites", help="Every site under --data-root.")] = False,
    reference: Annotated[
        str | None,
        typer.Option("--reference", help="FROM..TO; default: the champion's training window per site."),
    ] = None,
    data_root: DataRoot = Path("data"),
    tracking_uri: TrackingUri = None,
    publish: Annotated[
        bool, typer.Option("--publish/--no-publish", help="Publish each site's summary to MLflow.")
    ] = True,
    fail_on_drift: Annotated[
        bool, typer.Option("--fail-on-drift", help=f"Exit with code {DRIFT_EXIT_CODE} if any site drifts.")
    ] = False,
    threshold: Threshold = None,
    policy: Policy = RetrainPolicy.ANY,
    model_name: ModelName = REGISTERED_MODEL,
    alias: Alias = CHAMPION_ALIAS,
    report_dir: ReportDir = DEFAULT_REPORT_DIR,
    evidently_defaults: EvidentlyDefaults = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summaries as JSON on stdout.")] = False,
) -> None:
    """Compare a site's current window with its reference (Evidently DataDriftPreset)."""
    try:
        chosen = _choose_sites(data_root, site, all_sites)
        window = _window(current, "--current")
        drift = _check_round(
            data_root,
            chosen,
            current=lambda _site: window,
            reference=_reference(reference, tracking_uri, model_name, alias),
            threshold=resolve_threshold(threshold),
            policy=policy,
            evidently_defaults=evidently_defaults,
            report_dir=report_dir,
            tracking_uri=tracking_uri if publish else None,
        )
    except (DataError, NoReferenceWindow, ValueError) as exc:
        _fail(str(exc))
    for result in drift.results:
        render.print_summary(console, result)
    if publish and tracking_uri is None:
        console.print(f"summaries not published: no --tracking-uri or {ENV_TRACKING_URI}", highlight=False)
    console.print(drift.decision.reason, highlight=False, soft_wrap=True)
    if as_json:
        # One line: the operator reads a drift pod's verdict from the last line of its log.
        typer.echo(json.dumps([r.summary.as_dict() | {"mlflow_run_id": r.run_id} for r in drift.results]))
    if fail_on_drift and drift.decision.drifted_sites:
        raise typer.Exit(DRIFT_EXIT_CODE)


def retrain_command(
    if_drift: Annotated[
        bool, typer.Option("--if-drift", help="Retrain only if the policy finds drift in --from..--to.")
    ] = False,
    scheduled: Annotated[
        bool, typer.Option("--scheduled", help="Scheduled retrain (no drift check).")
    ] = False,
    site: Sites = None,
    date_from: Annotated[str | None, typer.Option("--from", help="First day checked for drift.")] = None,
    date_to: Annotated[str | None, typer.Option("--to", help="Last day checked for drift.")] = None,
    train_window: Annotated[
        str | None,
        typer.Option(
            "--train-window", help="Training window FROM..TO; default: champion's start to the newest data."
        ),
    ] = None,
    data_root: DataRoot = Path("data"),
    tracking_uri: TrackingUri = None,
    rounds: Rounds = 5,
    max_auc_drop: MaxAucDrop = 0.0,
    threshold: Threshold = None,
    policy: Policy = RetrainPolicy.ANY,
    model_name: ModelName = REGISTERED_MODEL,
    alias: Alias = CHAMPION_ALIAS,
    report_dir: ReportDir = DEFAULT_REPORT_DIR,
    work_dir: WorkDir = DEFAULT_WORK_DIR,
) -> None:
    """Retrain federatedly now (manual), on a schedule, or only if the sites have drifted."""
    if if_drift and scheduled:
        raise typer.BadParameter("give --if-drift or --scheduled, not both", param_hint="--if-drift")
    if not if_drift and (date_from or date_to):
        raise typer.BadParameter("--from/--to only go with --if-drift", param_hint="--from")
    if tracking_uri is None:
        _fail(f"no MLflow tracking server: pass --tracking-uri or set {ENV_TRACKING_URI}")
    try:
        sites = list(site) if site else list_sites(data_root)
        client = _client(tracking_uri)
        champion = optional_champion_windows(client, model_name, alias)
        drift: DriftRound | None = None
        until: dt.date | None = None
        if if_drift:
            if not (date_from and date_to):
                raise typer.BadParameter("--if-drift needs --from and --to", param_hint="--from")
            if champion is None:
                _fail(f"--if-drift needs a {alias!r} version of {model_name!r} to take the reference from")
            window = _window(f"{date_from}..{date_to}", "--from/--to")
            drift = _check_round(
                data_root,
                sites,
                current=lambda _site: window,
                reference=champion,
                threshold=resolve_threshold(threshold),
                policy=policy,
                evidently_defaults=False,
                report_dir=report_dir,
                tracking_uri=tracking_uri,
            )
            for result in drift.results:
                render.print_summary(console, result)
            console.print(drift.decision.reason, highlight=False, soft_wrap=True)
            if not drift.decision.retrain:
                return
            until = window.end
        outcome = retrain_all_sites(
            client,
            tracking_uri=tracking_uri,
            data_root=data_root,
            trigger=Trigger.DRIFT if if_drift else Trigger.SCHEDULE if scheduled else Trigger.MANUAL,
            champion=champion,
            work_dir=work_dir,
            until=until,
            window=_window(train_window, "--train-window") if train_window else None,
            drift_run_ids=drift.run_ids if drift else (),
            rounds=rounds,
            registered_name=model_name,
            alias=alias,
            max_auc_drop=max_auc_drop,
            console=console,
        )
    except (DataError, NoReferenceWindow, ValueError) as exc:
        _fail(str(exc))
    render.print_outcome(console, outcome)


def monitor_command(
    interval: Annotated[
        str,
        typer.Option(
            "--interval",
            help="Check this often: whole numbers with a unit s, m, h or d, e.g. 30m, 6h, 1d, 1h30m "
            "(the FederatedTraining's retraining.drift.interval format; 90 or 1.5h are refused).",
        ),
    ] = "6h",
    schedule: Annotated[
        str | None, typer.Option("--schedule", help='Cron schedule of retrains, e.g. "0 3 * * 0".')
    ] = None,
    current_days: Annotated[
        int, typer.Option("--current-days", min=1, help="Each check looks at the newest N days of each site.")
    ] = 1,
    max_iterations: Annotated[
        int | None, typer.Option("--max-iterations", min=1, help="Stop after N wake-ups (default: never).")
    ] = None,
    data_root: DataRoot = Path("data"),
    tracking_uri: TrackingUri = None,
    rounds: Rounds = 5,
    max_auc_drop: MaxAucDrop = 0.0,
    threshold: Threshold = None,
    policy: Policy = RetrainPolicy.ANY,
    model_name: ModelName = REGISTERED_MODEL,
    alias: Alias = CHAMPION_ALIAS,
    report_dir: ReportDir = DEFAULT_REPORT_DIR,
    work_dir: WorkDir = DEFAULT_WORK_DIR,
) -> None:
    """Check every site's newest data on the interval; retrain on drift or on the schedule."""
    if tracking_uri is None:
        _fail(f"no MLflow tracking server: pass --tracking-uri or set {ENV_TRACKING_URI}")
    try:
        monitor = build_monitor(
            _client(tracking_uri),
            data_root=data_root,
            tracking_uri=tracking_uri,
            interval=parse_duration(interval),
            schedule=schedule,
            current_days=current_days,
            threshold=resolve_threshold(threshold),
            policy=policy,
            model_name=model_name,
            alias=alias,
            rounds=rounds,
            max_auc_drop=max_auc_drop,
            report_dir=report_dir,
            work_dir=work_dir,
            on_event=partial(render.print_event, console),
            console=console,
        )
    except ValueError as exc:
        _fail(str(exc))
    console.print(
        f"monitoring {data_root} every {interval}"
        + (f", retraining on {schedule!r}" if schedule else "")
        + (f", {max_iterations} wake-ups" if max_iterations else ""),
        highlight=False,
    )
    monitor.run(max_iterations)
