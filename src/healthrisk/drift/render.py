"""How drift checks, retrains and monitor events look on a terminal (the CLI and the demo)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.table import Table

from healthrisk.drift.check import NothingNew
from healthrisk.drift.monitor import MonitorEvent
from healthrisk.drift.retrain import RetrainOutcome
from healthrisk.drift.sites import PublishedDrift


@contextlib.contextmanager
def checking(console: Console) -> Iterator[Callable[[str], None]]:
    """A spinner naming the site being checked; yields the `on_site` callback for it."""
    # MLflow announces every finished run on stdout; stdout is for --json.
    with console.status("checking drift") as status, contextlib.redirect_stdout(sys.stderr):
        yield lambda site: status.update(f"checking drift at {site} (drift score, Evidently report)")


def print_summary(console: Console, result: PublishedDrift) -> None:
    summary = result.summary
    if isinstance(summary, NothingNew):
        console.print(
            f"{summary.site}: no new days since the champion's training window ({summary.reference}): "
            "nothing to check",
            highlight=False,
        )
        return
    table = Table(
        title=f"{summary.site}: current {summary.current} vs reference {summary.reference} "
        f"({summary.reference_source}) — Evidently per-column detail",
        title_justify="left",
    )
    for header in ("column", "method", "score", "threshold", "verdict", "champion log-odds moved"):
        table.add_column(header, justify="left" if header in ("column", "method", "verdict") else "right")
    shifts = summary.drift.feature_shift
    for column in summary.columns:
        verdict = "[red]drift[/red]" if column.drifted else "[green]ok[/green]"
        table.add_row(
            column.column,
            column.method,
            f"{column.score:.3f}",
            f"{column.threshold:g}",
            verdict,
            f"{shifts[column.column]:+.3f}",
        )
    console.print(table)
    prediction, refit = summary.drift.prediction, summary.drift.refit
    components = f"prediction {prediction.score:.2f}" + (f", refit {refit.score:.2f}" if refit else "")
    state = "[red]DRIFT[/red]" if summary.detected else "[green]no drift[/green]"
    driver = f", driven by {summary.driver}" if summary.driver else ""
    console.print(
        f"  {state}: drift score {summary.score:.2f} ({components}{driver})"
        f" vs threshold {summary.threshold:g}; Evidently: {summary.n_drifted}/{len(summary.columns)}"
        " columns drifted",
        highlight=False,
    )
    performance = summary.performance
    if performance is not None:
        auc = f"{performance.auc:.4f}" if performance.auc is not None else "n/a (one class)"
        slope = summary.drift.current_calibration.slope if summary.drift.current_calibration else None
        calibration = f", calibration slope {slope:.2f}" if slope is not None else ""
        console.print(
            f"  champion on the new labelled days: AUC {auc}, log loss {performance.loss:.4f} "
            f"({performance.rows} rows{calibration})",
            highlight=False,
        )
    if summary.html_report:
        console.print(
            f"  HTML report (kept at the site): {summary.html_report}", highlight=False, soft_wrap=True
        )
    if result.run_id:
        console.print(f"  summary published: MLflow run {result.run_id}", highlight=False, soft_wrap=True)


def print_outcome(console: Console, outcome: RetrainOutcome) -> None:
    decision = outcome.decision
    verdict = "[green]promoted[/green]" if decision.promoted else "[yellow]not promoted[/yellow]"
    console.print(
        f"retrain ({outcome.trigger.value}) on {', '.join(outcome.sites)} {outcome.window}: "
        f"version {outcome.version}, AUC {outcome.metrics.get('auc', float('nan')):.4f} → {verdict}: "
        f"{decision.reason}",
        highlight=False,
        soft_wrap=True,
    )


def print_event(console: Console, event: MonitorEvent) -> None:
    colour = {"error": "red", "retrain": "cyan", "skip": "yellow"}.get(event.kind, "white")
    stamp = f"{event.at:%Y-%m-%d %H:%M:%S}"
    console.print(
        f"{stamp} [{colour}]{event.kind}[/{colour}] {event.detail}", highlight=False, soft_wrap=True
    )
    if event.outcome is not None:
        print_outcome(console, event.outcome)
