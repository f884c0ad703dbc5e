"""Drift workflows the CLI, the demo and the monitor share: check every site's new days
and decide, retrain on every site over the window the rule resolves, and the monitor wired
to the real check and retrain.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from healthrisk.data.loader import list_sites, site_days
from healthrisk.data.window import DateWindow, WindowRule, newest_common_day
from healthrisk.drift.check import DriftOptions
from healthrisk.drift.monitor import DriftRound, Monitor, MonitorEvent
from healthrisk.drift.policy import RetrainPolicy
from healthrisk.drift.reference import Champion, new_days, serving_champion
from healthrisk.drift.retrain import RetrainOutcome, RetrainSkipped, Training, Trigger, retrain
from healthrisk.drift.sites import check_sites

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from rich.console import Console

# A check looks at no more than this many of a site's newest days (the CRD's windowDays).
DEFAULT_CURRENT_DAYS = 7


def new_days_of(
    data_root: Path, sites: Sequence[str], champion: Champion, *, until: dt.date | None, most: int
) -> Callable[[str], DateWindow | None]:
    """Each site's current window: its days after the champion's window there, through
    `until` (default: the newest day every one of `sites` has), the newest `most` of them."""
    days = {site: site_days(data_root, site) for site in sites}
    end = until or newest_common_day(days)
    return lambda site: new_days(days[site], champion.for_site(site), until=end, most=most)


def check_round(
    data_root: Path,
    sites: Sequence[str],
    *,
    current: Callable[[str], DateWindow | None],
    champion: Champion,
    threshold: float,
    policy: RetrainPolicy,
    reference: DateWindow | None = None,
    max_auc_drop: float | None = None,
    options: DriftOptions | None = None,
    report_dir: Path | None = None,
    client: MlflowClient | None = None,
    on_site: Callable[[str], None] | None = None,
) -> DriftRound:
    """Check each site (publishing each summary when `client` is given) and apply the
    rulebook: drift by `policy`, and performance decay when `max_auc_drop` is given."""
    results = check_sites(
        data_root,
        sites,
        current=current,
        champion=champion,
        threshold=threshold,
        reference=reference,
        options=options,
        report_dir=report_dir,
        client=client,
        on_site=on_site,
    )
    return DriftRound.of(results, policy, champion_auc=champion.val_auc, max_auc_drop=max_auc_drop)


def retrain_all_sites(
    client: MlflowClient,
    *,
    tracking_uri: str,
    data_root: Path,
    trigger: Trigger,
    rule: WindowRule,
    work_dir: Path,
    drift_run_ids: Sequence[str] = (),
    rounds: int,
    registered_name: str,
    alias: str,
    max_auc_drop: float,
    console: Console | None = None,
) -> RetrainOutcome | RetrainSkipped:
    """Retrain on every site under `data_root`, not only the checked ones: the model serves
    them all, over the window `rule` resolves from the days they have now."""
    training = Training.resolve(
        data_root, list_sites(data_root), rule, rounds=rounds, registered_name=registered_name
    )
    return retrain(
        client,
        tracking_uri=tracking_uri,
        data_root=data_root,
        training=training,
        trigger=trigger,
        work_dir=work_dir,
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
    rule: WindowRule,
    current_days: int,
    threshold: float,
    policy: RetrainPolicy,
    performance_max_auc_drop: float | None,
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
        champion = serving_champion(client, model_name, alias)
        sites = list_sites(data_root)
        return check_round(
            data_root,
            sites,
            current=new_days_of(data_root, sites, champion, until=None, most=current_days),
            champion=champion,
            threshold=threshold,
            policy=policy,
            max_auc_drop=performance_max_auc_drop,
            report_dir=report_dir,
            client=client,
        )

    def run_retrain(trigger: Trigger, drift: DriftRound | None) -> RetrainOutcome | RetrainSkipped:
        return retrain_all_sites(
            client,
            tracking_uri=tracking_uri,
            data_root=data_root,
            trigger=trigger,
            rule=rule,
            work_dir=work_dir,
            drift_run_ids=drift.run_ids if drift else (),
            rounds=rounds,
            registered_name=model_name,
            alias=alias,
            max_auc_drop=max_auc_drop,
            console=console,
        )

    return Monitor(interval=interval, check=check, retrain=run_retrain, schedule=schedule, on_event=on_event)
