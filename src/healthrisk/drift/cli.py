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
    METRIC_CHAMPION_VAL_AUC,
    REGISTERED_MODEL,
)
from healthrisk.data.loader import DataError, list_sites
from healthrisk.data.window import DateWindow, WindowRule
from healthrisk.drift import render
from healthrisk.drift.check import DriftOptions
from healthrisk.drift.monitor import DriftRound
from healthrisk.drift.policy import RetrainPolicy, parse_check_interval, resolve_threshold
from healthrisk.drift.reference import Champion, NoReferenceWindow, serving_champion
from healthrisk.drift.retrain import RetrainSkipped, Trigger
from healthrisk.drift.workflows import (
    DEFAULT_CURRENT_DAYS,
    build_monitor,
    check_round,
    new_days_of,
    retrain_all_sites,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

SCORE_HELP = (
    "A site drifts when its drift score is at least this (default 0.5: retraining is worth it). "
    "The score in [0, 1] is the larger of two, each 0.5 when its effect is material beyond "
    "chance (99 %): prediction — the serving champion's log-odds for the site's patients moved "
    "by at least 0.25 (odds ×1.28), in total or through one column (its shift times its weight "
    "in the champion), beyond the site's day-to-day spread and beyond every day the champion "
    "was trained on; refit — on new labelled days a refit would re-weight the features (re-rank "
    "patients), saving at least 0.0078 nats of log loss per row. A column the model barely uses "
    "scores low however far it moves; corrupted labels score low (retraining cannot fix them) "
    "and show as a collapsed calibration slope and a low champion AUC."
)

app = typer.Typer(
    help="Check each site's new days against the serving champion: a drift score per site "
    "(0.5 = retraining is worth it), the champion's AUC on new labelled days, and Evidently's "
    "per-column detail.",
    no_args_is_help=True,
)
console = Console(stderr=True)

# 1 is an error and 2 a usage error (typer); drift gets its own code for scripts and CI.
DRIFT_EXIT_CODE = 3
DEFAULT_REPORT_DIR = Path(".state/drift")
DEFAULT_WORK_DIR = Path(".state/retrain")
DEFAULT_WINDOW = "28d"

DataRoot = Annotated[Path, typer.Option("--data-root", envvar=ENV_DATA_ROOT, help="One folder per site.")]
TrackingUri = Annotated[
    str | None, typer.Option("--tracking-uri", envvar=ENV_TRACKING_URI, help="MLflow tracking server.")
]
ModelName = Annotated[
    str, typer.Option("--model-name", help="Registered model (its champion is the reference).")
]
Alias = Annotated[str, typer.Option("--alias", help="Serving alias of the registered model.")]
Threshold = Annotated[float | None, typer.Option("--threshold", envvar=ENV_DRIFT_THRESHOLD, help=SCORE_HELP)]
Policy = Annotated[
    RetrainPolicy, typer.Option("--policy", help="Retrain on `any` drifting site or a `majority`.")
]
Sites = Annotated[list[str] | None, typer.Option("--site", help="Site to check (repeatable).")]
CurrentDays = Annotated[
    int,
    typer.Option(
        "--current-days",
        min=1,
        help="A check looks at the site's days after the champion's training window, at most the newest N.",
    ),
]
Until = Annotated[
    str | None,
    typer.Option(
        "--until", help="Last day a check looks at (default: the newest day every checked site has)."
    ),
]
ReportDir = Annotated[
    Path, typer.Option("--report-dir", help="Where the Evidently HTML reports are kept (at the site).")
]
Rounds = Annotated[int, typer.Option("--rounds", min=1, help="Federated rounds.")]
MaxAucDrop = Annotated[
    float, typer.Option("--max-auc-drop", min=0.0, help="Promotion tolerance on the AUC (SPEC §4).")
]
PerformanceDrop = Annotated[
    float | None,
    typer.Option(
        "--performance-max-auc-drop",
        min=0.0,
        help="Also retrain when the champion's AUC on the sites' new labelled days (row-weighted) "
        "is below its validation AUC by more than this (off by default; e.g. 0.02).",
    ),
]
Window = Annotated[
    str,
    typer.Option(
        "--window",
        help="Training window: the last N days up to the newest day every site has (e.g. 28d), "
        "resolved at every retrain, or a fixed FROM..TO.",
    ),
]
WorkDir = Annotated[Path, typer.Option("--work-dir", help="Scratch space of federated runs.")]
EvidentlyDefaults = Annotated[
    bool,
    typer.Option(
        "--evidently-defaults",
        help="Evidently's per-column detail with its default tests instead of the calibrated per-column PSI.",
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


def _rule(text: str) -> WindowRule:
    try:
        return WindowRule.parse(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--window") from exc


def _day(text: str | None, what: str) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not a date (YYYY-MM-DD)", param_hint=what) from exc


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


def _check_round(
    data_root: Path,
    sites: Sequence[str],
    *,
    current: Callable[[str], DateWindow | None],
    champion: Champion,
    reference: DateWindow | None,
    threshold: float,
    policy: RetrainPolicy,
    evidently_defaults: bool,
    report_dir: Path,
    client: MlflowClient | None,
    max_auc_drop: float | None = None,
) -> DriftRound:
    options = DriftOptions.evidently_defaults() if evidently_defaults else DriftOptions.calibrated()
    with render.checking(console) as on_site:
        return check_round(
            data_root,
            sites,
            current=current,
            champion=champion,
            reference=reference,
            threshold=threshold,
            policy=policy,
            max_auc_drop=max_auc_drop,
            options=options,
            report_dir=report_dir,
            client=client,
            on_site=on_site,
        )


@app.command("check")
def check_command(
    current: Annotated[
        str | None,
        typer.Option(
            "--current",
            help="Window to check, FROM..TO (inclusive); default: each site's new days since the "
            "champion's training window there.",
        ),
    ] = None,
    site: Sites = None,
    all_sites: Annotated[bool, typer.Option("--all-sites", help="Every site under --data-root.")] = False,
    reference: Annotated[
        str | None,
        typer.Option("--reference", help="FROM..TO; default: the champion's training window per site."),
    ] = None,
    current_days: CurrentDays = DEFAULT_CURRENT_DAYS,
    until: Until = None,
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
    """Score each site's new days for the serving champion (drift score, champion AUC),
    with Evidently's per-column detail."""
    if tracking_uri is None:
        _fail(
            f"no MLflow tracking server (--tracking-uri or {ENV_TRACKING_URI}): the check scores the champion"
        )
    try:
        chosen = _choose_sites(data_root, site, all_sites)
        client = _client(tracking_uri)
        champion = serving_champion(client, model_name, alias)
        if current is not None:
            window = _window(current, "--current")
            current_of: Callable[[str], DateWindow | None] = lambda _site: window  # noqa: E731
        else:
            current_of = new_days_of(
                data_root, chosen, champion, until=_day(until, "--until"), most=current_days
            )
        drift = _check_round(
            data_root,
            chosen,
            current=current_of,
            champion=champion,
            reference=_window(reference, "--reference") if reference else None,
            threshold=resolve_threshold(threshold),
            policy=policy,
            evidently_defaults=evidently_defaults,
            report_dir=report_dir,
            client=client if publish else None,
        )
    except (DataError, NoReferenceWindow, ValueError) as exc:
        _fail(str(exc))
    for result in drift.results:
        render.print_summary(console, result)
    console.print(drift.reason, highlight=False, soft_wrap=True)
    if as_json:
        # One line: the operator reads a drift pod's verdict from the last line of its log,
        # with the champion's validation AUC that a fall in performance is measured from.
        champion_fields = {"champion_version": champion.version, METRIC_CHAMPION_VAL_AUC: champion.val_auc}
        typer.echo(
            json.dumps(
                [r.summary.as_dict() | {"mlflow_run_id": r.run_id} | champion_fields for r in drift.results]
            )
        )
    if fail_on_drift and drift.decision.drifted_sites:
        raise typer.Exit(DRIFT_EXIT_CODE)


def retrain_command(
    if_drift: Annotated[
        bool,
        typer.Option(
            "--if-drift", help="Retrain only if the sites' new days drift (or --from/--to, if given)."
        ),
    ] = False,
    scheduled: Annotated[
        bool, typer.Option("--scheduled", help="Scheduled retrain (no drift check).")
    ] = False,
    site: Sites = None,
    date_from: Annotated[str | None, typer.Option("--from", help="First day checked for drift.")] = None,
    date_to: Annotated[str | None, typer.Option("--to", help="Last day checked for drift.")] = None,
    window: Window = DEFAULT_WINDOW,
    current_days: CurrentDays = DEFAULT_CURRENT_DAYS,
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
    """Retrain federatedly now (manual), on a schedule, or only if the sites have drifted;
    data a version was already trained on is not trained again (RetrainSkipped)."""
    if if_drift and scheduled:
        raise typer.BadParameter("give --if-drift or --scheduled, not both", param_hint="--if-drift")
    if not if_drift and (date_from or date_to):
        raise typer.BadParameter("--from/--to only go with --if-drift", param_hint="--from")
    if bool(date_from) != bool(date_to):
        raise typer.BadParameter("give both --from and --to", param_hint="--from")
    if tracking_uri is None:
        _fail(f"no MLflow tracking server: pass --tracking-uri or set {ENV_TRACKING_URI}")
    rule = _rule(window)
    try:
        client = _client(tracking_uri)
        drift: DriftRound | None = None
        if if_drift:
            sites = list(site) if site else list_sites(data_root)
            champion = serving_champion(client, model_name, alias)
            if date_from and date_to:
                checked = _window(f"{date_from}..{date_to}", "--from/--to")
                current_of: Callable[[str], DateWindow | None] = lambda _site: checked  # noqa: E731
            else:
                current_of = new_days_of(data_root, sites, champion, until=None, most=current_days)
            drift = _check_round(
                data_root,
                sites,
                current=current_of,
                champion=champion,
                reference=None,
                threshold=resolve_threshold(threshold),
                policy=policy,
                evidently_defaults=False,
                report_dir=report_dir,
                client=client,
            )
            for result in drift.results:
                render.print_summary(console, result)
            console.print(drift.reason, highlight=False, soft_wrap=True)
            if drift.trigger is None:
                return
        outcome = retrain_all_sites(
            client,
            tracking_uri=tracking_uri,
            data_root=data_root,
            trigger=Trigger.DRIFT if if_drift else Trigger.SCHEDULE if scheduled else Trigger.MANUAL,
            rule=rule,
            work_dir=work_dir,
            drift_run_ids=drift.run_ids if drift else (),
            rounds=rounds,
            registered_name=model_name,
            alias=alias,
            max_auc_drop=max_auc_drop,
            console=console,
        )
    except (DataError, NoReferenceWindow, ValueError) as exc:
        _fail(str(exc))
    if isinstance(outcome, RetrainSkipped):
        console.print(f"[yellow]{outcome.reason}[/yellow]", highlight=False, soft_wrap=True)
        return
    render.print_outcome(console, outcome)


def monitor_command(
    interval: Annotated[
        str,
        typer.Option(
            "--interval",
            help="Check this often: whole numbers with a unit s, m, h or d, e.g. 30m, 6h, 1d, 1h30m "
            "(the FederatedTraining's retraining.drift.interval format; at least 1m; 90 or 1.5h are "
            "refused).",
        ),
    ] = "6h",
    schedule: Annotated[
        str | None, typer.Option("--schedule", help='Cron schedule of retrains, e.g. "0 3 * * 0".')
    ] = None,
    window: Window = DEFAULT_WINDOW,
    current_days: CurrentDays = DEFAULT_CURRENT_DAYS,
    max_iterations: Annotated[
        int | None, typer.Option("--max-iterations", min=1, help="Stop after N wake-ups (default: never).")
    ] = None,
    data_root: DataRoot = Path("data"),
    tracking_uri: TrackingUri = None,
    rounds: Rounds = 5,
    max_auc_drop: MaxAucDrop = 0.0,
    performance_max_auc_drop: PerformanceDrop = None,
    threshold: Threshold = None,
    policy: Policy = RetrainPolicy.ANY,
    model_name: ModelName = REGISTERED_MODEL,
    alias: Alias = CHAMPION_ALIAS,
    report_dir: ReportDir = DEFAULT_REPORT_DIR,
    work_dir: WorkDir = DEFAULT_WORK_DIR,
) -> None:
    """Check every site's new days on the interval; retrain on drift, on decay (if asked) or
    on the schedule, over the window resolved at each retrain."""
    if tracking_uri is None:
        _fail(f"no MLflow tracking server: pass --tracking-uri or set {ENV_TRACKING_URI}")
    rule = _rule(window)
    try:
        monitor = build_monitor(
            _client(tracking_uri),
            data_root=data_root,
            tracking_uri=tracking_uri,
            interval=parse_check_interval(interval),
            schedule=schedule,
            rule=rule,
            current_days=current_days,
            threshold=resolve_threshold(threshold),
            policy=policy,
            performance_max_auc_drop=performance_max_auc_drop,
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
        f"monitoring {data_root} every {interval}, training on {rule}"
        + (f", retraining on {schedule!r}" if schedule else "")
        + (f", {max_iterations} wake-ups" if max_iterations else ""),
        highlight=False,
    )
    monitor.run(max_iterations)
