"""Drift workflows the CLI, the demo and the monitor share: check every site and decide,
retrain on every site, and the monitor wired to the real check and retrain.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from healthrisk.data.loader import list_sites
from healthrisk.data.window import DateWindow
from healthrisk.drift.check import DriftOptions
from healthrisk.drift.monitor import DriftRound, Monitor, MonitorEvent
from healthrisk.drift.policy import RetrainPolicy
from healthrisk.drift.reference import ChampionWindows, champion_windows, optional_champion_windows
from healthrisk.drift.retrain import RetrainOutcome, Trigger, retrain, training_window
from healthrisk.drift.sites import check_sites, latest_window

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from rich.console import Console


def check_round(
    data_root: Path,
    sites: Sequence[str],
    *,
    current: Callable[[str], DateWindow],
    reference: DateWindow | ChampionWindows,
    threshold: float,
    policy: RetrainPolicy,
    options: DriftOptions | None = None,
    report_dir: Path | None = None,
    client: MlflowClient | None = None,
    on_site: Callable[[str], None] | None = None,
) -> DriftRound:
    """Check each site (publishing each summary when `client` is given) and apply the policy."""
    results = check_sites(
        data_root,
        sites,
        current=current,
        reference=reference,
        threshold=threshold,
        options=options,
        report_dir=report_dir,
        client=client,
        on_site=on_site,
    )
    return DriftRound.of(results, policy)


def retrain_all_sites(
    client: MlflowClient,
    *,
    tracking_uri: str,
    data_root: Path,
    trigger: Trigger,
    champion: ChampionWindows | None,
    work_dir: Path,
    until: dt.date | None = None,
    window: DateWindow | None = None,
    drift_run_ids: Sequence[str] = (),
    rounds: int,
    registered_name: str,
    alias: str,
    max_auc_drop: float,
    console: Console | None = None,
) -> RetrainOutcome:
    """Retrain on every site under `data_root`, not only the checked ones: the model serves
    them all. The window defaults to the champion's start through `until` (or the newest day)."""
    sites = list_sites(data_root)
    return retrain(
        client,
        tracking_uri=tracking_uri,
        data_root=data_root,
        sites=sites,
        window=window or training_window(data_root, sites, champion=champion, until=until),
        trigger=trigger,
        work_dir=work_dir,
        rounds=rounds,
        registered_name=registered_name,
        alias=alias,
        max_auc_drop=max_auc_drop,
        drift_run_ids=drift_run_ids,
        console=console,
    )


def build_monitor(
    client: MlflowClient,
    *,
    data_root: Path,
    tracking_uri: str,
    interval: dt.timedelta,
    schedule: str | None,
    current_days: int,
    threshold: float,
    policy: RetrainPolicy,
    model_name: str,
    alias: str,
    rounds: int,
    max_auc_drop: float,
    report_dir: Path,
    work_dir: Path,
    on_event: Callable[[MonitorEvent], None] | None = None,
    console: Console | None = None,
) -> Monitor:
    """A Monitor whose check and retrain are the real ones against `client`."""

    def check() -> DriftRound:
        # The champion is read on every check: after a promotion the reference moves.
        return check_round(
            data_root,
            list_sites(data_root),
            current=lambda site: latest_window(data_root, site, current_days),
            reference=champion_windows(client, model_name, alias),
            threshold=threshold,
            policy=policy,
            report_dir=report_dir,
            client=client,
        )

    def run_retrain(trigger: Trigger, drift: DriftRound | None) -> RetrainOutcome:
        return retrain_all_sites(
            client,
            tracking_uri=tracking_uri,
            data_root=data_root,
            trigger=trigger,
            champion=optional_champion_windows(client, model_name, alias),
            work_dir=work_dir,
            drift_run_ids=drift.run_ids if drift else (),
            rounds=rounds,
            registered_name=model_name,
            alias=alias,
            max_auc_drop=max_auc_drop,
            console=console,
        )

    return Monitor(interval=interval, check=check, retrain=run_retrain, schedule=schedule, on_event=on_event)
